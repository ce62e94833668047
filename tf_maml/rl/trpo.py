"""TRPO as the outer update of meta-reinforcement learning (the MAML paper's, section 5.3).

With `MetaPolicyGradient(..., outer_update="trpo", max_kl=0.01)`, a
meta-iteration takes one trust-region step (Schulman et al. 2015) on the
surrogate objective of the post-update trajectories as a function of the
pre-update weights `theta`, the adaptation in between:

- `g`: the meta-gradient of the surrogate, through the inner step(s)
  (second order unless `first_order`), as PPO's first step has it;
- `F`: the Hessian at `theta` of the mean KL divergence between the
  adapted policy of the sampling weights and the adapted policy of
  `theta`, on the post-update observations (the adapted policy's Fisher
  information). Its products with a vector differentiate the KL's gradient
  once more (through the inner step: third derivatives of the policy);
  `F` itself is never formed;
- `x`, about `F^-1 g`: `cg_steps` of conjugate gradient on `F + cg_damping I`;
- the step `sqrt(2 max_kl / x'Fx) x`, where the quadratic model of the KL
  reaches `max_kl`, shrunk by `BACKTRACK_RATIO` up to `MAX_BACKTRACKS`
  times until the surrogate improves and the KL, measured, is within
  `max_kl` (rllab's line search, which the paper's code used); if no
  fraction passes, the weights stay.
"""

import tensorflow as tf

from tf_maml.engine.conjugate_gradient import conjugate_gradient, dot
from tf_maml.rl import objectives
from tf_maml.rl.outer_objective import over_tasks

BACKTRACK_RATIO = 0.8
MAX_BACKTRACKS = 15
_ZERO = tf.UnconnectedGradients.ZERO


def _mean_kl(meta, old_prediction, prediction, mask):
    return objectives.masked_mean(meta.distribution.kl(old_prediction, prediction), mask)


def fisher_vector_product(meta, sampled, vector):
    """`(F + cg_damping I) vector`, `F` the adapted policy's Fisher information at the
    current weights (mean over the tasks of `sampled`, `sampling.sample_adapting`'s)."""
    params = meta.inner_loop.current_values()[0]
    trajectories = sampled["trajectories"]

    def task_fn(task, state):
        post, before = task
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(params)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(params)
                prediction, y, state = meta.post_update_prediction(params, state, before, post)
                # KL(stop(p) || p): 0 with gradient 0 here; its Hessian is the Fisher's.
                kl = _mean_kl(meta, tf.stop_gradient(prediction), prediction, y["mask"])
            grads = inner.gradient(kl, params, unconnected_gradients=_ZERO)
            projection = dot(grads, vector)
        return state, outer.gradient(projection, params, unconnected_gradients=_ZERO), {}, {}

    result = over_tasks(meta, task_fn, (trajectories[-1], trajectories[:-1]),
                         [tf.zeros_like(p) for p in params], [])
    return [p + meta.cg_damping * v for p, v in zip(result["grads"], vector)]


def _adapted_predictions(meta, sampled, params):
    """Each task's adapted policy's outputs on its post-update observations: `[T, K * H, P]`."""
    trajectories = sampled["trajectories"]

    def task_fn(task, state):
        post, before = task
        prediction, _, state = meta.post_update_prediction(params, state, before, post)
        return state, [], {}, {"prediction": tf.cast(prediction, tf.float32)}

    return over_tasks(meta, task_fn, (trajectories[-1], trajectories[:-1]), [], [],
                       {"prediction": tf.float32})["prediction"]


def _loss_and_kl(meta, sampled, old_predictions, candidate):
    """The negated surrogate and the mean KL from the sampling policies, at weights `candidate`."""
    trajectories = sampled["trajectories"]

    def task_fn(task, state):
        post, before, old_prediction = task
        prediction, y, state = meta.post_update_prediction(candidate, state, before, post)
        log_probs = meta.distribution.log_prob(prediction, y["actions"])
        surrogate = objectives.surrogate_objective(log_probs, y["log_probs"], y["advantages"],
                                                   y["mask"])
        kl = _mean_kl(meta, old_prediction, prediction, y["mask"])
        return state, [], {"loss": -surrogate, "kl": kl}, {}

    result = over_tasks(meta, task_fn, (trajectories[-1], trajectories[:-1], old_predictions),
                         [], ["loss", "kl"])
    return result["loss"], result["kl"]


def _line_search(meta, sampled, params, step, loss_before):
    """`(fraction, kl)`: the largest `BACKTRACK_RATIO ** k` of `step` that lowers the loss
    within `max_kl`, and its KL; `(0, 0)` if none does."""
    old_predictions = _adapted_predictions(meta, sampled, params)

    def body(k, fraction, accepted, kl):
        fraction = BACKTRACK_RATIO ** tf.cast(k, tf.float32)
        candidate = [p + fraction * s for p, s in zip(params, step)]
        loss, kl = _loss_and_kl(meta, sampled, old_predictions, candidate)
        accepted = (loss < loss_before) & (kl <= meta.max_kl)  # False for NaN
        return k + 1, fraction, accepted, kl

    _, fraction, accepted, kl = tf.while_loop(
        lambda k, fraction, accepted, kl: (k < MAX_BACKTRACKS) & ~accepted, body,
        (tf.constant(0), tf.constant(1.0), tf.constant(False), tf.constant(0.0)))
    return tf.where(accepted, fraction, 0.0), tf.where(accepted, kl, 0.0)


def natural_gradient_step(meta, sampled, grads):
    """The full trust-region step (before the line search) from the meta-gradient `grads` of
    the loss: `sqrt(2 max_kl / x'Fx) x`, `x` the conjugate gradient solution of `F x = -grads`."""
    def fisher(vector):
        return fisher_vector_product(meta, sampled, vector)

    direction = conjugate_gradient(fisher, [-g for g in grads], meta.cg_steps)
    scale = tf.sqrt(tf.math.divide_no_nan(2.0 * meta.max_kl, dot(direction, fisher(direction))))
    return [scale * d for d in direction]


def trust_region_step(meta, sampled):
    """One TRPO step's parts: `(step, loss, kl, grads)`, the step to add to the policy's
    trainable weights (the accepted fraction of the full step; zeros if none passed),
    the loss before it, the measured KL after it, and the meta-gradient."""
    params = meta.inner_loop.current_values()[0]
    grads, loss = meta.outer_gradients(sampled)
    full_step = natural_gradient_step(meta, sampled, grads)
    fraction, kl = _line_search(meta, sampled, params, full_step, loss)
    return [fraction * s for s in full_step], loss, kl, grads


def apply_step(meta, step):
    """Adds `step` to the policy's trainable weights and counts the meta-iteration in the
    compiled optimizer's `iterations` (which TRPO does not otherwise use), as PPO's applied
    steps count there."""
    for variable, value in zip(meta.policy.trainable_variables, step):
        variable.assign_add(tf.cast(value, variable.dtype))
    meta.optimizer.iterations.assign_add(1)
