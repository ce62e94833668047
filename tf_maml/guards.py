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

# Fault codes, by priority: an empty set explains bad labels or a NaN, and
# bad labels explain a NaN.
OK, EMPTY, LABELS, NONFINITE = 0, 1, 2, 3


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
    """A scalar bool: every value of every tensor is finite."""
    return tf.reduce_all(
        tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])
    )


class StepGuard:
    """The first fault of a `fit`, `evaluate` or `*_on_batch` call, and where it arose.

    Held by the meta-learner outside Keras' tracking: its variables are not
    weights and are never saved.
    """

    def __init__(self):
        options = dict(trainable=False, aggregation="only_first_replica")
        self.code = keras.Variable(0, dtype="int32", name="fault_code", **options)
        self.step = keras.Variable(0, dtype="int64", name="fault_step", **options)
        # EMPTY: tasks, support and query examples; LABELS: lowest, highest label.
        self.detail = keras.Variable(np.zeros(3, np.int32), name="fault_detail", **options)

    def reset(self):
        self.code.assign(0)

    def record(self, empty, bad_labels, nonfinite, step, detail):
        """Records this step's fault (if it is the first); returns whether the step may update."""
        flags = tf.cast(tf.stack([empty, bad_labels, nonfinite]), tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            flags = context.all_reduce(tf.distribute.ReduceOp.SUM, flags)  # any replica
        fault = flags > 0
        code = tf.where(
            fault[0], EMPTY, tf.where(fault[1], LABELS, tf.where(fault[2], NONFINITE, OK))
        )
        earlier = self.code.value
        first = tf.equal(earlier, OK) & tf.not_equal(code, OK)
        self.code.assign(tf.where(first, code, earlier))
        self.step.assign(tf.where(first, tf.cast(step, tf.int64), self.step.value))
        self.detail.assign(tf.where(first, tf.cast(detail, tf.int32), self.detail.value))
        return tf.equal(earlier, OK) & tf.equal(code, OK)

    def raise_if_fault(self, phase, hint):
        """Raises the recorded fault, if any; `phase` names the step or batch."""
        code = int(self.code.numpy())
        if code == OK:
            return
        step = int(self.step.numpy())
        detail = self.detail.numpy().tolist()
        where = f"meta-step {step}" if phase == "train" else f"{phase} batch {step}"
        if code == EMPTY:
            raise EpisodeError(
                f"The episode batch of {where} is empty: {detail[0]} tasks, {detail[1]} "
                f"support and {detail[2]} query examples per task; every one must be at least 1. "
                "Check the episode pipeline (shots, queries, meta_batch_size, and the last "
                "partial batch: batch with drop_remainder=True)."
            )
        if code == LABELS:
            raise EpisodeError(
                f"The episode batch of {where} holds class labels from {detail[0]} to "
                f"{detail[1]}, outside [0, {detail[2]}) for a model with {detail[2]} outputs. "
                "Labels are indices within each task (0 .. ways - 1): remap them per task."
            )
        skipped = (
            f"The update of that step was skipped: the model holds the weights of meta-step "
            f"{step - 1}, and a backup (BackupAndRestore) those of the last epoch."
            if phase == "train" else "No weight was changed."
        )
        raise TrainingDivergedError(
            f"The {'meta-loss or meta-gradient' if phase == 'train' else 'query loss'} of "
            f"{where} is not finite (NaN or infinite). {skipped} {hint}"
        )


class RaiseOnFault(keras.callbacks.Callback):
    """Raises the fault a meta-learner's step recorded, right after that step.

    `fit` and `evaluate` of the meta-learner add it themselves.
    """

    def __init__(self, guard, hint):
        super().__init__()
        self.guard, self.hint = guard, hint

    def on_train_begin(self, logs=None):
        self.guard.reset()

    def on_test_begin(self, logs=None):
        # Validation inside fit runs after train batches that had no fault.
        self.guard.reset()

    def on_train_batch_end(self, batch, logs=None):
        self.guard.raise_if_fault("train", self.hint())

    def on_test_batch_end(self, batch, logs=None):
        self.guard.raise_if_fault("evaluation", self.hint())
