"""Faults of a meta-step: detected in the graph, the step skipped, raised after it.

A meta-step whose meta-loss or meta-gradient is not finite, whose labels lie
outside the model's classes, or whose meta-batch has an empty task, support
or query set must not update the weights and must not pass as success. The
check runs inside the compiled step (graph or XLA alike, where
`tf.debugging` assertions would be dropped): the step's update is skipped,
the fault is recorded in a few variables that are never saved with the model,
and a callback raises a clear error after the step. Once a fault is
recorded, every later step of the same call is skipped too, so the weights
stay those of the last good step.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_maml import episodes

# Fault codes. Steps pass them to `StepGuard.record` by priority: a NaN or a
# negative weight in the input (negative weights make a set look empty), an
# empty set (it explains bad labels or a NaN), bad labels, a non-finite loss.
OK, EMPTY, LABELS, INPUT, NONFINITE = 0, 1, 2, 3, 4


class TrainingDivergedError(FloatingPointError):
    """The meta-loss or meta-gradient of a step, or a validation loss, is not finite."""


class EpisodeError(ValueError):
    """An episode batch met during training or evaluation is malformed."""


def label_range_fault(labels, num_classes):
    """`(bad, low, high)`: whether any integer label lies outside `[0, num_classes)`."""
    flat = tf.concat([tf.reshape(tf.cast(y, tf.int32), [-1]) for y in labels], axis=0)
    low = tf.reduce_min(tf.concat([flat, [0]], 0))
    high = tf.reduce_max(tf.concat([flat, [0]], 0))
    return (low < 0) | (high >= num_classes), low, high


def all_finite(tensors):
    """A scalar bool: every value of every tensor is finite, and so is its square.

    One sum of squares per tensor: a NaN or infinity anywhere makes the total
    non-finite, and so does a value whose square overflows float32 (|x| above
    about 1.8e19), which only diverging gradients reach: such a gradient makes
    Adam's second moment infinite, and its next update NaN (`v += (g*g - v) *
    (1 - beta_2)` with v infinite), though the gradient itself is finite.
    Fewer ops than a test per value: the check runs every step.
    """
    total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors])
    return tf.math.is_finite(total)


def nonfinite_fault(finite):
    """A `StepGuard.record` fault: the step's result is not `finite` (a scalar bool)."""
    return NONFINITE, ~finite, tf.zeros([3], tf.int32)


def input_fault(named):
    """`(bad, detail)`: whether an input holds a NaN or infinity, or a weight a negative value.

    `named`: `(name, tensor, is_weight)` triples (None tensors and integer
    ones are skipped). `detail`: `[index in named, 1 if negative else 0, 0]`
    of the first bad one. An exact test per value (an input's sum may
    overflow where no value does); inputs are small beside a step's work.
    """
    bad, detail = tf.constant(False), tf.zeros([3], tf.int32)
    for i, (_, value, is_weight) in reversed(list(enumerate(named))):
        if value is None or not value.dtype.is_floating:
            continue
        nonfinite = ~tf.reduce_all(tf.math.is_finite(value))
        negative = tf.reduce_any(value < 0) if is_weight else tf.constant(False)
        bad_i = nonfinite | negative
        detail = tf.where(bad_i, tf.stack([i, tf.cast(negative & ~nonfinite, tf.int32), 0]),
                          detail)
        bad = bad | bad_i
    return bad, detail


def checked_episode(support, query, classes, weights=None):
    """`(support, query, weights, empty, bad_labels, detail)`: a step's episodes and faults.

    Checked on every batch inside the step: an empty task, support or query
    set (for padded episodes, a task whose weights in a set are all 0), and
    integer class labels outside `[0, classes)` (padding's labels are not
    read). `classes` holds, for each label tensor (in `keras.tree.flatten`
    order), its number of classes or None. Bad labels are replaced by zeros
    so that no loss op fails before the guard reports them.
    """
    (support_x, support_y), (query_x, query_y) = support, query
    support_first, query_first = tf.nest.flatten(support_x)[0], tf.nest.flatten(query_x)[0]
    if weights is None:
        support_sizes, query_sizes = tf.shape(support_first)[1], tf.shape(query_first)[1]
    else:  # the smallest real set of any task
        support_sizes, query_sizes = (
            tf.cast(tf.reduce_min(tf.concat([tf.math.count_nonzero(w > 0, axis=1), [2**30]],
                                            0)), tf.int32)
            for w in weights)
    sizes = tf.stack([tf.shape(support_first)[0], support_sizes, query_sizes])
    empty = tf.reduce_any(tf.equal(sizes, 0))
    checked = [i for i, count in enumerate(classes) if count]
    if not checked:
        return support, query, weights, empty, tf.constant(False), sizes
    if weights is not None:  # padding's labels are never used: any value passes
        support_y = episodes.valid_examples(support_y, weights[0])
        query_y = episodes.valid_examples(query_y, weights[1])
    flat_support, flat_query = keras.tree.flatten(support_y), keras.tree.flatten(query_y)
    bad, detail = tf.constant(False), sizes
    for i in reversed(checked):  # the first label tensor out of range is the one reported
        bad_i, low, high = label_range_fault([flat_support[i], flat_query[i]], classes[i])
        bad = bad | bad_i
        detail = tf.where(bad_i, tf.stack([low, high, classes[i]]), detail)
    for flat in (flat_support, flat_query):
        for i in checked:
            flat[i] = tf.where(bad, tf.zeros_like(flat[i]), flat[i])
    support_y = keras.tree.pack_sequence_as(support_y, flat_support)
    query_y = keras.tree.pack_sequence_as(query_y, flat_query)
    detail = tf.where(empty, sizes, detail)
    return (support_x, support_y), (query_x, query_y), weights, empty, bad, detail


def run_if(ok, update, *args):
    """`update(*args)` only if `ok` (a scalar bool equal on every replica)."""
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(ok, lambda: update(*args), lambda: None)
        return

    # As keras' LossScaleOptimizer: a cond whose branch all-reduces (the
    # optimizer's apply) must run in the cross-replica context.
    def cross_replica(distribution, ok, *args):
        ok = distribution.experimental_local_results(ok)[0]
        tf.cond(
            ok,
            lambda: distribution.extended.call_for_each_replica(update, args=args),
            lambda: None,
        )

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok,) + args)


class StepGuard:
    """The first fault of a `fit`, `evaluate` or `*_on_batch` call, and where it arose.

    Held by the meta-learner outside Keras' tracking: its variables are not
    weights and are never saved.
    """

    def __init__(self):
        # One variable, read and written once a step: [code, step, *detail],
        # detail being (tasks, support, query examples) for EMPTY and (lowest,
        # highest label, classes) for LABELS.
        self.record_variable = keras.Variable(
            np.zeros(5, np.int64), name="fault_record", trainable=False,
            aggregation="only_first_replica",
        )
        self.input_names = []

    def reset(self):
        self.record_variable.assign(np.zeros(5, np.int64))

    def record(self, step, *faults):
        """Records this step's first fault (if the call had none); returns whether the step
        may update.

        `faults`: `(code, flag, detail)` in priority order, `flag` a scalar bool
        (any replica's counts), `detail` 3 integers for the message.
        """
        flags = tf.cast(tf.stack([flag for _, flag, _ in faults]), tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            flags = context.all_reduce(tf.distribute.ReduceOp.SUM, flags)  # any replica
        code, detail = tf.constant(OK, tf.int64), tf.zeros([3], tf.int64)
        for i, (fault_code, _, fault_detail) in reversed(list(enumerate(faults))):
            code = tf.where(flags[i] > 0, tf.constant(fault_code, tf.int64), code)
            detail = tf.where(flags[i] > 0, tf.cast(fault_detail, tf.int64), detail)
        earlier = self.record_variable.value
        clean_so_far = tf.equal(earlier[0], OK)
        new = tf.concat([tf.stack([code, tf.cast(step, tf.int64)]), detail], 0)
        self.record_variable.assign(tf.where(clean_so_far & tf.not_equal(code, OK), new, earlier))
        return clean_so_far & tf.equal(code, OK)

    def name_inputs(self, names):
        """The names of the inputs an INPUT fault's detail indexes, set while tracing."""
        self.input_names = list(names)

    def input_fault(self, named):
        """`input_fault(named)` of this step's inputs, whose names the error will give."""
        self.name_inputs(name for name, _, _ in named)
        return input_fault(named)

    def raise_if_fault(self, phase, hint, backup=False):
        """Raises the recorded fault, if any; `phase` ("train", "evaluation" or "prediction")
        names the step or batch; `hint()` gives the likely cause of a non-finite loss
        (called only then: it may read every weight); `backup`: whether the call keeps
        a `BackupAndRestore` backup (the message says so)."""
        code, step, *detail = self.record_variable.numpy().tolist()
        if code == OK:
            return
        train = phase == "train"
        batch = (f"The episode batch of meta-step {step}" if train
                 else "An evaluation (or validation) episode batch" if phase == "evaluation"
                 else "A prediction episode batch")
        skipped = (f" The update of that step was skipped: the model holds the weights of "
                   f"meta-step {step - 1}." if train else " No weight was changed.")
        if code == EMPTY:
            raise EpisodeError(
                f"{batch} is empty: {detail[0]} tasks, {detail[1]} support and {detail[2]} "
                "query examples per task; every one must be at least 1. Check the episode "
                "pipeline (shots, queries, meta_batch_size, and the last partial batch: "
                "batch with drop_remainder=True)."
            )
        if code == LABELS:
            raise EpisodeError(
                f"{batch} holds class labels from {detail[0]} to {detail[1]}, outside "
                f"[0, {detail[2]}) for a model with {detail[2]} outputs. Labels are indices "
                "within each task (0 .. ways - 1): remap them per task."
            )
        if code == INPUT:
            name = self.input_names[detail[0]]
            what = "a negative value" if detail[1] else "a NaN or infinite value"
            raise EpisodeError(
                f"{batch} holds {what} in {name}.{skipped} The data is at fault, not the "
                "step sizes: examples, labels, observations and rewards must be finite "
                "(padded examples too), and example weights finite and >= 0 (0 marks padding)."
            )
        if train:
            raise TrainingDivergedError(
                f"The meta-loss or meta-gradient of meta-step {step} is not finite (NaN, "
                f"infinite, or too large to square in float32).{skipped}"
                + (" A backup (BackupAndRestore) holds those of the last epoch." if backup else "")
                + f" {hint()}"
            )
        if phase == "prediction":
            raise TrainingDivergedError(
                "The predictions after adaptation of a prediction batch are not finite (NaN "
                f"or infinite), from finite episodes: the adaptation diverged. {hint()}"
            )
        raise TrainingDivergedError(
            "The query loss after adaptation of an evaluation (or validation) batch is not "
            f"finite (NaN or infinite). No weight was changed. {hint()}"
        )


def with_fault_callback(kwargs, guard, hint):
    """`fit`/`evaluate` keyword arguments with a `RaiseOnFault` callback first."""
    callbacks = list(kwargs.get("callbacks") or [])
    backup = any(isinstance(c, keras.callbacks.BackupAndRestore) for c in callbacks)
    return {**kwargs, "callbacks": [RaiseOnFault(guard, hint, backup)] + callbacks}


class RaiseOnFault(keras.callbacks.Callback):
    """Raises the fault a meta-learner's step recorded, right after that step.

    `fit` and `evaluate` of the meta-learner add it themselves.
    """

    def __init__(self, guard, hint, backup=False):
        super().__init__()
        self.guard, self.hint, self.backup = guard, hint, backup

    def on_train_begin(self, logs=None):
        self.guard.reset()

    def on_test_begin(self, logs=None):
        # Validation inside fit runs after train batches that had no fault.
        self.guard.reset()

    def on_train_batch_end(self, batch, logs=None):
        self.guard.raise_if_fault("train", self.hint, self.backup)

    def on_test_batch_end(self, batch, logs=None):
        self.guard.raise_if_fault("evaluation", self.hint)

    def on_predict_begin(self, logs=None):
        self.guard.reset()

    def on_predict_batch_end(self, batch, logs=None):
        self.guard.raise_if_fault("prediction", self.hint)
