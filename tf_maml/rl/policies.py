"""Policy networks: Keras models from observations to action-distribution parameters."""

import keras
from keras import ops

from tf_maml.rl.distributions import for_action_space


@keras.saving.register_keras_serializable(package="tf_maml.rl")
class GaussianHead(keras.layers.Layer):
    """A Gaussian policy's head: a dense mean and a learned log standard deviation.

    Outputs `[..., 2 * size]`: the mean (a `Dense(size)` of the input) and
    the log standard deviation (one weight per action dimension, the same
    for every observation, as the MAML paper's policies have), concatenated.
    Both adapt in the inner loop like any other weight.
    """

    def __init__(self, size, init_log_std=0.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.init_log_std = int(size), float(init_log_std)
        self.mean = keras.layers.Dense(self.size, name="mean")

    def build(self, input_shape):
        self.mean.build(input_shape)
        self.log_std = self.add_weight(
            shape=(self.size,), name="log_std",
            initializer=keras.initializers.Constant(self.init_log_std))

    def call(self, inputs):
        mean = self.mean(inputs)
        log_std = ops.broadcast_to(ops.cast(self.log_std, mean.dtype), ops.shape(mean))
        return ops.concatenate([mean, log_std], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.size,)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "init_log_std": self.init_log_std}


def mlp(env, hidden=(100, 100), activation="relu", init_log_std=0.0, name="policy"):
    """A multilayer perceptron policy for `env`, as the MAML paper's (two layers of 100, ReLU).

    Continuous actions: a `GaussianHead`; discrete: one logit per action.
    """
    layers = [keras.Input((env.observation_size,), name="observation")]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden]
    if env.action_space.discrete:
        layers.append(keras.layers.Dense(env.action_space.n, name="logits"))
    else:
        layers.append(GaussianHead(env.action_space.size, init_log_std, name="gaussian"))
    return keras.Sequential(layers, name=name)


def check_policy(policy, env):
    """Refuses a policy whose outputs do not parameterize `env`'s actions, before any compute."""
    distribution = for_action_space(env.action_space)
    if not policy.built:
        policy.build((None, env.observation_size))
    spec = policy.compute_output_spec(keras.KerasTensor((None, env.observation_size)))
    if len(spec.shape) != 2 or spec.shape[-1] != distribution.num_params:
        what = ("one logit per action" if env.action_space.discrete
                else "the mean and log standard deviation of each action dimension, "
                     "concatenated (tf_maml.rl.policies.GaussianHead)")
        raise ValueError(
            f"The policy {policy.name!r} maps observations [batch, {env.observation_size}] to "
            f"shape {tuple(spec.shape)}; {type(env).__name__}'s {env.action_space!r} needs "
            f"[batch, {distribution.num_params}]: {what}. tf_maml.rl.policies.mlp(env) "
            "builds one."
        )
    return distribution
