"""Few-shot evaluation: query loss against the number of adaptation steps."""

import math

import numpy as np
import tensorflow as tf

from tf_maml import episodes as episodes_lib


def query_losses_by_step(meta_learner, episodes, num_tasks, max_steps=10):
    """Query loss of each task after 0, 1, ..., `max_steps` inner steps.

    Adapts the meta-learned initialization to each task's support set with
    the meta-learner's inner SGD (step size `inner_lr`) and records the
    compiled loss on the query set before the first step and after each.

    Args:
        meta_learner: a compiled `tf_maml.MAML`.
        episodes: a `tf.data.Dataset` of episode batches.
        num_tasks: tasks to evaluate; batches are read until there are enough.
        max_steps: the largest number of inner steps.

    Returns:
        A float64 array of shape `[num_tasks, max_steps + 1]`.
    """
    episodes_lib.check_spec(episodes.element_spec)

    @tf.function
    def batch_losses(support, query):
        (support_x, support_y), (query_x, query_y) = support, query
        params = [tf.convert_to_tensor(v) for v in meta_learner.model.trainable_variables]
        state = [tf.convert_to_tensor(v) for v in meta_learner.model.non_trainable_variables]

        def one_task(task):
            sx, sy, qx, qy = task
            fast, task_state, losses = params, state, []
            for step in range(max_steps + 1):
                if step:
                    fast, task_state = meta_learner._adapt_task(fast, task_state, sx, sy, 1, True)
                y_pred, extra = meta_learner._predict_query(
                    fast, task_state, sx, qx, meta_learner.transductive
                )
                losses.append(tf.cast(meta_learner._loss(qy, y_pred, extra), tf.float64))
            return tf.stack(losses)

        return tf.map_fn(
            one_task, (support_x, support_y, query_x, query_y), fn_output_signature=tf.float64
        )

    losses, count = [], 0
    for support, query in episodes:
        losses.append(batch_losses(support, query).numpy())
        count += len(losses[-1])
        if count >= num_tasks:
            break
    if count < num_tasks:
        raise ValueError(f"`episodes` ran out after {count} tasks; {num_tasks} were asked for.")
    return np.concatenate(losses)[:num_tasks]


def mean_and_confidence(values, axis=0):
    """Mean and half-width of its 95% confidence interval (1.96 std / sqrt(n))."""
    values = np.asarray(values, np.float64)
    n = values.shape[axis]
    return values.mean(axis=axis), 1.96 * values.std(axis=axis) / math.sqrt(n)
