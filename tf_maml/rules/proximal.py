"""A proximal term on the inner loss: the pull back toward where the task started."""

import keras
import tensorflow as tf

from tf_maml.rules.base import GradientTransform
from tf_maml.rules.steps import _check_rate


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class Proximal(GradientTransform):
    """Adds `weight * (phi - theta)` to the inner gradients: the gradient of
    `weight / 2 * ||phi - theta||^2`, `theta` the weights the task started from.

    Chained before a rule that steps, the inner loop descends the support loss
    plus that proximal term (iMAML's inner problem, Rajeswaran et al. 2019):
    `chain(proximal(2.0), sgd(0.1))`. The starting weights are the rule's state,
    set at the start of each task.
    """

    def __init__(self, weight):
        super().__init__()
        self.weight = _check_rate(weight, "weight")

    def init(self, params):
        return tuple(params)  # theta: where this task's adaptation started

    def transform(self, grads, state, params, step):
        del step
        return [g + tf.cast(self.weight, g.dtype) * (p - start)
                for g, p, start in zip(grads, params, state)], state

    def get_config(self):
        return {"weight": self.weight}


def proximal(weight):
    """The gradient of `weight / 2 * ||phi - theta||^2` added to the inner gradients."""
    return Proximal(weight)
