"""Few-shot evaluation: query loss and accuracy against the number of adaptation steps."""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_maml import episodes as episodes_lib
from tf_maml.learners import labels
from tf_maml.engine.inner_loop import last_step


def query_results_by_step(meta_learner, episodes, num_tasks, max_steps=10, verbose=0):
    """Query loss (and accuracy) of each task after 0, 1, ..., `max_steps` steps.

    Adapts the meta-learned initialization to each task's support set with
    the meta-learner's inner loop, one step at a time with the rule's state
    kept from step to step (so step k gives what `evaluate` gives with
    `eval_inner_steps=k`), and records, on the query set, the compiled loss
    and, for integer class labels of a single output, the accuracy, before
    the first step and after each.

    Args:
        meta_learner: a compiled `tf_maml.MAML`.
        episodes: a `tf.data.Dataset` of episode batches.
        num_tasks: tasks to evaluate; batches are read until there are enough.
        max_steps: the largest number of inner steps.
        verbose: 1 to show a Keras progress bar of the tasks done.

    The results come twice: as the meta-learner computes them (with
    `transductive=True`, BatchNorm normalizes the queries with the query
    batch's statistics, as the MAML papers report), and as served
    (`"served_*"`): what `adapt()` and `export_adaptive()` give, each query
    predicted on its own with the support set's statistics. Without
    transduction the two are the same.

    Returns:
        A dict of float64 arrays of shape `[num_tasks, max_steps + 1]`:
        `"loss"` and `"served_loss"`, and `"accuracy"` and
        `"served_accuracy"` for classification episodes.
    """
    spec = episodes_lib.check_spec(episodes.element_spec)
    all_classes = labels.classes(meta_learner._labelled_outputs(spec.x, spec.y))
    # Accuracy for one output of class labels; with several outputs, the loss.
    classes = all_classes[0] if len(all_classes) == 1 else None
    classification = bool(classes)
    # (prefix, transductive) of each figure computed; the served one is the
    # meta-learner's own when it does not transduce.
    figures = [("", True), ("served_", False)] if meta_learner.transductive else [("", False)]
    names = [prefix + name for prefix, _ in figures
             for name in ("loss", "accuracy")[:2 if classification else 1]]

    @tf.function
    def batch_results(tasks):
        params, state = meta_learner.inner_loop.current_values()

        def one_task(task):
            return _task_curves(meta_learner, task, params, state, max_steps, figures,
                                classification)

        signature = {name: tf.TensorSpec([max_steps + 1], tf.float64) for name in names}
        return tf.map_fn(one_task, tasks, fn_output_signature=signature)

    results, count = [], 0
    progress = keras.utils.Progbar(num_tasks, unit_name="task", verbose=verbose)
    progress.update(0)  # shown while the first batch is read and the evaluation traced
    for index, (support, query) in enumerate(episodes):
        support, query, weights = episodes_lib.unpack((support, query))
        if classes:  # a TensorFlow op error otherwise, naming no batch
            _check_labels(support, query, weights, classes, index)
        tasks = episodes_lib.task_tuple(support, query, weights)
        results.append({k: v.numpy() for k, v in batch_results(tasks).items()})
        count += len(results[-1]["loss"])
        progress.update(min(count, num_tasks))
        if count >= num_tasks:
            break
    if count < num_tasks:
        raise ValueError(f"`episodes` ran out after {count} tasks; {num_tasks} were asked for.")
    results = {key: np.concatenate([r[key] for r in results])[:num_tasks] for key in results[0]}
    if not meta_learner.transductive:
        results.update({"served_" + key: values for key, values in list(results.items())})
    return results


def _task_curves(meta_learner, task, params, state, max_steps, figures, classification):
    """One task's figures after 0..`max_steps` steps: `{name: [max_steps + 1]}` float64.

    `figures`: `(prefix, transductive)` of each set of figures (the served
    one predicts each query with the support set's statistics).
    """
    loop = meta_learner.inner_loop
    sx, sy, qx, qy, sw, qw = episodes_lib.task_parts(task)
    fast = meta_learner.starting_weights(params, state, sx, sy, sw)
    task_state, rule_state = state, None
    by_step = {}
    for step in range(max_steps + 1):
        if step:  # one more step, the rule's state kept
            fast, task_state, rule_state = loop.adapt(
                fast, task_state, sx, sy, 1, True, rule_state, first_step=step - 1, weights=sw)
        for prefix, transductive in figures:
            y_pred, extra = loop.predict(
                fast, task_state, sx, qx, transductive, last_step(step), sw, qw)
            loss = meta_learner.task_loss(qx, qy, y_pred, extra, qw, False)
            by_step.setdefault(prefix + "loss", []).append(tf.cast(loss, tf.float64))
            if classification:
                by_step.setdefault(prefix + "accuracy", []).append(_accuracy(y_pred, qy, qw))
    return {name: tf.stack(values) for name, values in by_step.items()}


def _accuracy(y_pred, y, weights):
    """Accuracy over the real queries (weight > 0), as compiled `metrics` count them."""
    hits = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=y.dtype), y), tf.float64)
    if weights is None:
        return tf.reduce_mean(hits)
    real = tf.cast(weights > 0, tf.float64)
    return tf.reduce_sum(hits * real) / tf.reduce_sum(real)


def _check_labels(support, query, weights, classes, index):
    """Refuses an evaluation batch with real labels outside [0, classes), naming it."""
    support_weight, query_weight = weights if weights is not None else (None, None)
    values = np.concatenate([
        np.ravel(episodes_lib.valid_examples(support[1], support_weight)),
        np.ravel(episodes_lib.valid_examples(query[1], query_weight)),
    ])
    labels.check_label_range(values, classes, name=f"evaluation batch {index + 1}")


def mean_and_confidence(values, axis=0):
    """Mean and half-width of its 95% confidence interval (1.96 std / sqrt(n))."""
    values = np.asarray(values, np.float64)
    n = values.shape[axis]
    return values.mean(axis=axis), 1.96 * values.std(axis=axis) / math.sqrt(n)
