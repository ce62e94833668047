"""Advantages of sampled steps: discounted returns, a per-task linear baseline, GAE.

All functions take trajectories `[..., trajectories, horizon]` of one task
or of a batch of tasks (leading axes), and treat the steps where `mask` is
0 (after an episode ended) as absent.
"""

import tensorflow as tf


def discount_matrix(horizon, factor):
    """`M[t, s] = factor ** (s - t)` for `s >= t`, else 0: `x @ M^T` sums discounted futures."""
    steps = tf.range(horizon, dtype=tf.float64)
    power = steps[None, :] - steps[:, None]
    matrix = tf.where(power >= 0, tf.pow(tf.constant(factor, tf.float64), tf.maximum(power, 0)),
                      tf.zeros_like(power))
    return matrix


def discounted_returns(rewards, discount):
    """Returns-to-go `R_t = sum_s>=t discount^(s-t) r_s`, `[..., horizon]`."""
    matrix = discount_matrix(tf.shape(rewards)[-1], discount)
    return tf.cast(tf.linalg.matvec(matrix, tf.cast(rewards, tf.float64)), rewards.dtype)


def linear_features(observations, mask):
    """The MAML paper's baseline features (from rllab): observations, their squares,
    time, time^2, time^3 (time = step / 100) and a constant; zero where masked."""
    horizon = tf.shape(observations)[-2]
    time = tf.range(horizon, dtype=observations.dtype) / 100.0
    time = tf.broadcast_to(time[:, None], tf.concat([tf.shape(observations)[:-1], [1]], 0))
    features = tf.concat([observations, tf.square(observations), time, time ** 2, time ** 3,
                          tf.ones_like(time)], -1)
    return features * mask[..., None]


def linear_baseline(observations, returns, mask, l2=1e-5):
    """Values `[..., trajectories, horizon]` of the linear feature baseline fitted to each
    task's returns by regularized least squares (in float64)."""
    features = tf.cast(linear_features(observations, mask), tf.float64)
    shape = tf.shape(features)
    leading = shape[:-3]
    rows = shape[-3] * shape[-2]
    flat = tf.reshape(features, tf.concat([leading, [rows, shape[-1]]], 0))
    targets = tf.reshape(tf.cast(returns * mask, tf.float64), tf.concat([leading, [rows, 1]], 0))
    # A NaN would make the solve raise; it reaches the advantages through the returns
    # instead, where the meta-learner's guard reports it.
    flat, targets = _finite_or_zero(flat), _finite_or_zero(targets)
    gram = tf.matmul(flat, flat, transpose_a=True)
    size = tf.shape(gram)[-1]
    # Regularized by l2 times the Gram matrix's scale, so that steps of no data stay solvable.
    scale = tf.reduce_mean(tf.linalg.diag_part(gram), -1)[..., None, None] + 1.0
    coefficients = tf.linalg.solve(gram + l2 * scale * tf.eye(size, dtype=tf.float64),
                                   tf.matmul(flat, targets, transpose_a=True))
    values = tf.reshape(tf.matmul(flat, coefficients), tf.shape(returns))
    return tf.cast(values, returns.dtype) * mask


def _finite_or_zero(values):
    return tf.where(tf.math.is_finite(values), values, tf.zeros_like(values))


def advantages(trajectories, discount=0.99, gae_lambda=1.0, baseline="linear"):
    """Advantages of every step, `[..., trajectories, horizon]` (0 where masked).

    Args:
        trajectories: a dict from `tf_maml.rl.rollouts.sample` (per task or a batch of tasks).
        discount: the discount factor of the returns.
        gae_lambda: generalized advantage estimation's lambda; 1.0 gives
            returns minus the baseline.
        baseline: "linear" (fitted per task) or None (advantages are the returns).
    """
    rewards, mask = trajectories["rewards"], trajectories["mask"]
    returns = discounted_returns(rewards, discount)
    if baseline is None:
        result = returns
    elif baseline == "linear":
        values = linear_baseline(trajectories["observations"], returns, mask)
        next_values = tf.concat([values[..., 1:], tf.zeros_like(values[..., :1])], -1)
        deltas = rewards + discount * next_values - values
        matrix = discount_matrix(tf.shape(rewards)[-1], discount * gae_lambda)
        result = tf.cast(tf.linalg.matvec(matrix, tf.cast(deltas, tf.float64)), rewards.dtype)
    else:
        raise ValueError(f"`baseline` must be 'linear' or None; received {baseline!r}.")
    return result * mask


def standardized(values, mask, epsilon=1e-8):
    """`(standardized, scale)`: `values` standardized over each task's unmasked steps
    (the last two axes), and the standard deviation each was divided by (`[..., 1, 1]`)."""
    count = tf.maximum(tf.reduce_sum(mask, [-2, -1], keepdims=True), 1.0)
    mean = tf.reduce_sum(values * mask, [-2, -1], keepdims=True) / count
    variance = tf.reduce_sum(tf.square(values - mean) * mask, [-2, -1], keepdims=True) / count
    scale = tf.sqrt(variance + epsilon)
    return (values - mean) / scale * mask, scale
