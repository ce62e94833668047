"""Action distributions read from a policy network's outputs.

A policy is any Keras model from observations to the parameters of its
action distribution: for continuous actions (`envs.Box`) the mean and the
log standard deviation of a diagonal Gaussian, concatenated (`2 * size`
outputs; `tf_maml.rl.policies.GaussianHead` makes them); for discrete
actions (`envs.Discrete`) one logit per action. Sampling takes its noise
as an argument (standard normal or Gumbel), drawn ahead from stateless
seeds, so a rollout is a function of its seeds.
"""

import math

import tensorflow as tf


class Gaussian:
    """A diagonal Gaussian over `size`-vectors; parameters `[..., 2 * size]` = (mean, log_std)."""

    def __init__(self, size):
        self.size = size
        self.num_params = 2 * size
        self.action_shape = (size,)
        self.action_dtype = tf.float32

    def split(self, params):
        return params[..., : self.size], params[..., self.size:]

    def noise(self, seed, shape):
        """Standard normal noise for `shape` samples."""
        return tf.random.stateless_normal(list(shape) + [self.size], seed)

    def sample(self, params, noise):
        mean, log_std = self.split(params)
        return mean + tf.exp(log_std) * tf.cast(noise, mean.dtype)

    def log_prob(self, params, actions):
        mean, log_std = self.split(params)
        z = (tf.cast(actions, mean.dtype) - mean) * tf.exp(-log_std)
        return -tf.reduce_sum(0.5 * tf.square(z) + log_std + 0.5 * math.log(2 * math.pi), -1)

    def kl(self, params_p, params_q):
        """KL(p || q) per example."""
        mean_p, log_std_p = self.split(params_p)
        mean_q, log_std_q = self.split(params_q)
        variance_ratio = tf.exp(2 * (log_std_p - log_std_q))
        gap = tf.square((mean_p - mean_q) * tf.exp(-log_std_q))
        return tf.reduce_sum(0.5 * (variance_ratio + gap - 1) - (log_std_p - log_std_q), -1)


class Categorical:
    """A categorical over `n` actions; parameters `[..., n]` logits."""

    def __init__(self, n):
        self.n = n
        self.num_params = n
        self.action_shape = ()
        self.action_dtype = tf.int32

    def noise(self, seed, shape):
        """Gumbel noise: argmax(logits + noise) samples the categorical."""
        uniform = tf.random.stateless_uniform(list(shape) + [self.n], seed,
                                              minval=1e-7, maxval=1.0)
        return -tf.math.log(-tf.math.log(uniform))

    def sample(self, params, noise):
        return tf.argmax(params + tf.cast(noise, params.dtype), -1, output_type=tf.int32)

    def log_prob(self, params, actions):
        log_p = tf.nn.log_softmax(params)
        return tf.gather(log_p, tf.cast(actions, tf.int32), axis=-1, batch_dims=actions.shape.rank)

    def kl(self, params_p, params_q):
        log_p, log_q = tf.nn.log_softmax(params_p), tf.nn.log_softmax(params_q)
        return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)


def for_action_space(action_space):
    """The distribution of a policy acting in `action_space` (`envs.Box` or `envs.Discrete`)."""
    if action_space.discrete:
        return Categorical(action_space.n)
    return Gaussian(action_space.size)
