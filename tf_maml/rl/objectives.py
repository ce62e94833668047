"""Surrogate objectives of policy gradients: the inner step's and the outer update's.

Each is a mean over a task's unmasked steps, to be maximized; its gradient
at the sampling policy is the policy gradient. They differ in their second
derivatives, which the meta-gradient differentiates through the inner step:

- "lvc" (ProMP's low-variance curvature objective, Rothfuss et al. 2019):
  `pi / stop(pi_old) * A`. Its Hessian holds the outer product of the
  scores, the pre-update sampling distribution's share of the curvature
  (ProMP's formulation I): low variance, biased.
- "unbiased": the policy-gradient surrogate `stop(pi / pi_old) * log pi * A`
  in the inner step, plus, in the outer objective, the pre-update
  trajectories' scores times the post-update return (`score_term`,
  formulation II, as E-MAML writes it). An unbiased estimate of the
  gradient of the expected return after adapting from sampled
  trajectories (tested against a closed form, tests/test_rl_estimators.py),
  for undiscounted returns without per-task standardization of the
  advantages; with `discount < 1` or standardization, as usual for policy
  gradients, no longer exactly.
"""

import tensorflow as tf

ESTIMATORS = ("lvc", "unbiased")


def masked_mean(values, mask):
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def surrogate_objective(log_probs, old_log_probs, advantages, mask):
    """The importance-sampled surrogate `pi / pi_old * A` (TRPO's, and "lvc"'s inner one)."""
    return masked_mean(tf.exp(log_probs - old_log_probs) * advantages, mask)


def inner_objective(log_probs, old_log_probs, advantages, mask, estimator):
    """The inner step's surrogate for trajectories sampled with log-probabilities `old_log_probs`."""
    if estimator == "lvc":
        return surrogate_objective(log_probs, old_log_probs, advantages, mask)
    ratio = tf.exp(log_probs - old_log_probs)
    return masked_mean(tf.stop_gradient(ratio) * log_probs * advantages, mask)


def clipped_objective(log_probs, old_log_probs, advantages, mask, clip_ratio):
    """PPO's clipped surrogate (Schulman et al. 2017) of the post-update trajectories."""
    ratio = tf.exp(log_probs - old_log_probs)
    clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return masked_mean(tf.minimum(ratio * advantages, clipped * advantages), mask)


def score_term(log_probs, old_log_probs, mask, coefficient):
    """`coefficient` times the score of all of a task's pre-update trajectories:
    the derivative of the pre-update sampling distribution (estimator "unbiased").

    `coefficient`: the post-update return (less a baseline) in the units of
    the outer objective; a constant.
    """
    ratio = tf.stop_gradient(tf.exp(log_probs - old_log_probs))
    # Of value 0 (only its gradient counts), so that the logged loss means the outer objective.
    score = log_probs - tf.stop_gradient(log_probs)
    return tf.stop_gradient(coefficient) * tf.reduce_sum(ratio * score * mask)
