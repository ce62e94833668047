"""Reptile (Nichol et al., 2018): move the initialization toward adapted weights."""

import keras
import tensorflow as tf

from tf_maml.meta_learner import MAML

INNER_OPTIMIZERS = ("sgd", "adam")


@keras.saving.register_keras_serializable(package="tf_maml")
class Reptile(MAML):
    """Reptile: first-order meta-learning without second derivatives.

    For each task, `inner_steps` steps of the inner optimizer (SGD, or Adam
    with its moments reset per task) on the support set give adapted weights
    `theta'`. The compiled optimizer then receives the pseudo-gradient
    `theta - mean(theta')`: with `keras.optimizers.SGD(learning_rate=epsilon)`
    this is exactly Reptile's `theta <- theta + epsilon (mean(theta') - theta)`,
    and a Keras learning-rate schedule anneals `epsilon` (the paper anneals it
    linearly to 0). Metrics are the query results after adaptation, as for
    MAML; no gradient flows through the inner loop.

    Args:
        model: the `keras.Model` to meta-train.
        inner_lr: step size of the inner optimizer.
        inner_steps: inner steps per task (k).
        inner_optimizer: `"sgd"` or `"adam"` (beta_1 0.9, beta_2 0.999,
            epsilon 1e-7, as `keras.optimizers.Adam`).
        **kwargs: as `MAML` (`eval_inner_steps`, `transductive`, `name`).

    Example:

    ```python
    reptile = tf_maml.Reptile(net, inner_lr=1e-3, inner_steps=5, inner_optimizer="adam")
    epsilon = keras.optimizers.schedules.PolynomialDecay(1.0, 100_000, end_learning_rate=0.0)
    reptile.compile(optimizer=keras.optimizers.SGD(epsilon), loss=..., metrics=[...])
    ```
    """

    _meta_gradient_from_tape = False

    def __init__(self, model, inner_lr=0.001, inner_steps=5, inner_optimizer="sgd", **kwargs):
        kwargs.pop("first_order", None)
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"`inner_optimizer` must be one of {INNER_OPTIMIZERS}; received {inner_optimizer!r}."
            )
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         **kwargs)
        self.inner_optimizer = inner_optimizer

    @property
    def _inner_steps_differ(self):
        return self.inner_optimizer != "sgd"  # Adam's bias correction counts steps

    def _inner_slots(self, params):
        if self.inner_optimizer == "sgd":
            return []
        return [tf.zeros_like(p) for p in params] + [tf.zeros_like(p) for p in params]

    def _inner_update(self, params, grads, inner, step, slots):
        if self.inner_optimizer == "sgd":
            return super()._inner_update(params, grads, inner, step, slots)
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
        half = len(params)
        first, second = slots[:half], slots[half:]
        first = [beta_1 * m + (1 - beta_1) * g for m, g in zip(first, grads)]
        second = [beta_2 * v + (1 - beta_2) * tf.square(g) for v, g in zip(second, grads)]
        t = float(step + 1)
        # Keras' Adam: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
        rate = self.inner_lr * (1 - beta_2**t) ** 0.5 / (1 - beta_1**t)
        params = [p - rate * m / (tf.sqrt(v) + epsilon) for p, m, v in zip(params, first, second)]
        return params, first + second

    def _task_meta_gradients(self, tape, loss, params, inner, fast):
        del tape, loss
        return [p - f for p, f in zip(params, fast)] + [tf.zeros_like(v) for v in inner]

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        return {**config, "inner_optimizer": self.inner_optimizer}
