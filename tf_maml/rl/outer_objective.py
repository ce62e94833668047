"""The outer objective of a meta-iteration and its meta-gradient, through a fresh adaptation.

For every task, the policy is adapted again from the current weights on the
task's pre-update trajectories (the same samples as in the sampling pass,
so the adapted weights are the sampling ones, now differentiable), and the
objective of its post-update trajectories is differentiated with respect to
the pre-update weights: PPO's clipped objective, plus, with the "unbiased"
estimator, the pre-update trajectories' score times the post-update return
(`tf_maml.rl.objectives`). PPO's steps and TRPO's gradient both start here.
"""

import tensorflow as tf

from tf_maml.engine import task_loop as task_loop_lib
from tf_maml.rl import objectives


def over_tasks(meta, task_fn, parts, grads, sums, stacks=None):
    """`run_tasks` over a meta-batch from the current non-trainable state; the sums and
    grads divided by the number of tasks (means)."""
    state = meta.inner_loop.current_values()[1]
    result = task_loop_lib.run_tasks(task_fn, parts, state, grads, sums, stacks or {},
                                     tf.float32, "while", meta.parallel_tasks)
    count = tf.cast(result["num_tasks"], tf.float32)
    return {**result, "grads": [g / count for g in result["grads"]],
            **{name: result[name] / count for name in sums}}


def _score_coefficients(meta, post):
    """Per task, the post-update return less the other tasks' mean, in the units of the
    outer objective (estimator "unbiased"; zeros otherwise)."""
    returns = post["return"]
    if meta.estimator != "unbiased" or meta.first_order or meta.inner_steps == 0:
        return tf.zeros_like(returns)
    count = tf.cast(tf.shape(returns)[0], returns.dtype)
    others = (tf.reduce_sum(returns) - returns) / tf.maximum(count - 1.0, 1.0)
    baseline = tf.where(count > 1.0, others, tf.zeros_like(others))
    # The outer objective is a mean over steps of advantages divided by `scale`.
    steps_per_trajectory = tf.reduce_sum(post["mask"], [-2, -1]) / meta.trajectories
    return (returns - baseline) / (steps_per_trajectory * post["scale"])


def _task_meta_gradient(meta, task, params, state):
    """One task's outer loss and its gradient with respect to `params`."""
    post, coefficient, before = task  # trajectories after all inner steps, before each
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        y_pred, y, state = meta.post_update_prediction(params, state, before, post)
        log_probs = meta.distribution.log_prob(y_pred, y["actions"])
        objective = objectives.clipped_objective(log_probs, y["log_probs"], y["advantages"],
                                                 y["mask"], meta.clip_ratio)
        if meta.estimator == "unbiased" and meta.inner_steps and not meta.first_order:
            pre_observations, pre_y = meta._flat(before[0])
            pre_pred = meta.inner_loop.forward(params, state, pre_observations,
                                               training=False)[0]
            objective += objectives.score_term(
                meta.distribution.log_prob(pre_pred, pre_y["actions"]), pre_y["log_probs"],
                pre_y["mask"], coefficient)
        loss = -objective
    grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return state, grads, {"loss": loss}, {}


def meta_gradient(meta, sampled):
    """`(grads, loss)`: the meta-gradient of the outer loss (the negated objective) at the
    current weights, mean over the tasks of `sampled` (with trajectories)."""
    params = meta.inner_loop.current_values()[0]
    trajectories = sampled["trajectories"]
    parts = (trajectories[-1], _score_coefficients(meta, trajectories[-1]), trajectories[:-1])
    result = over_tasks(meta, lambda task, state: _task_meta_gradient(meta, task, params, state),
                        parts, [tf.zeros_like(p) for p in params], ["loss"])
    return result["grads"], result["loss"]
