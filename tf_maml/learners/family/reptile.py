"""Reptile (Nichol et al., 2018): move the initialization toward adapted weights."""

import keras
import tensorflow as tf

from tf_maml import rules
from tf_maml.learners.arguments import refuse
from tf_maml.learners.arguments import NAMED_RULES, checked_inner_lr, named_rule
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.maml import MAML

INNER_OPTIMIZERS = tuple(NAMED_RULES)


@keras.saving.register_keras_serializable(package="tf_maml")
class Reptile(MAML):
    """Reptile: first-order meta-learning without second derivatives.

    For each task, `inner_steps` steps of the inner rule on the support set
    give adapted weights `theta'`. The compiled optimizer then receives the
    pseudo-gradient `theta - mean(theta')`: with
    `keras.optimizers.SGD(learning_rate=epsilon)` this is exactly Reptile's
    `theta <- theta + epsilon (mean(theta') - theta)`, and a Keras
    learning-rate schedule anneals `epsilon` (the paper anneals it linearly
    to 0). Metrics are the query results after adaptation, as for MAML; no
    gradient flows through the inner loop, so there is no `first_order`
    argument.

    Args:
        model: the `keras.Model` to meta-train.
        inner_lr: step size of the inner rule, if named by a string.
        inner_steps: inner steps per task (k).
        inner_optimizer: `"sgd"`, `"adam"` (`rules.adam(inner_lr)`: the moments
            start at zero for each task), or any `tf_maml.rules` rule.
        **kwargs: as `MAML` (`eval_inner_steps`, `transductive`, `name`).

    Example:

    ```python
    reptile = tf_maml.Reptile(net, inner_lr=1e-3, inner_steps=5, inner_optimizer="adam")
    epsilon = keras.optimizers.schedules.PolynomialDecay(1.0, 100_000, end_learning_rate=0.0)
    reptile.compile(optimizer=keras.optimizers.SGD(epsilon), loss=..., metrics=[...])
    ```
    """

    differentiates_adaptation = False
    first_order = hyperparameter(
        "first_order", fixed("first_order", "Reptile never differentiates through the inner loop"),
        "True: Reptile's meta-gradient takes no derivative of the inner loop.")

    def __init__(self, model, inner_lr=0.001, inner_steps=5, inner_optimizer="sgd", **kwargs):
        refuse(kwargs, "Reptile", first_order="it never differentiates through the inner loop")
        if isinstance(inner_optimizer, dict):
            inner_optimizer = rules.deserialize(inner_optimizer)
        if isinstance(inner_optimizer, rules.Rule):
            rule = inner_optimizer
        elif inner_optimizer in INNER_OPTIMIZERS:
            inner_lr = checked_inner_lr(inner_lr)
            rule = named_rule(inner_optimizer, inner_lr)
        else:
            raise ValueError(
                f"`inner_optimizer` must be one of {INNER_OPTIMIZERS} or a tf_maml.rules rule; "
                f"received {inner_optimizer!r}."
            )
        super().__init__(model, inner_steps=inner_steps, first_order=True, inner_optimizer=rule,
                         **kwargs)
        self._inner_lr = inner_lr
        self._inner_optimizer_name = inner_optimizer if isinstance(inner_optimizer, str) else None

    def task_meta_gradients(self, tape, objective, params, meta_values, fast):
        del tape, objective
        return [p - f for p, f in zip(params, fast)] + [tf.zeros_like(v) for v in meta_values]

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        name = self._inner_optimizer_name
        return {
            **config,
            "inner_lr": self.inner_lr,
            "inner_optimizer": name or rules.serialize(self.inner_optimizer),
        }
