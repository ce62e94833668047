"""Rules whose step sizes are meta-learned: Meta-SGD and MAML++'s LSLR."""

import keras
import tensorflow as tf

from tf_maml.rules.base import Rule, step_index
from tf_maml.rules.steps import _check_rate


class _LearnedStepSizes(Rule):
    """Step sizes held in variables, one per adapted weight, initialized to a float."""

    def __init__(self, initial_learning_rate, trainable=True):
        super().__init__()
        self.initial_learning_rate = _check_rate(initial_learning_rate, "initial_learning_rate")
        self.trainable = bool(trainable)
        self.learning_rates = None

    def _rate_shape(self, weight):
        raise NotImplementedError

    def build(self, weights):
        if self.learning_rates is None:
            self.learning_rates = [
                self.add_variable(self._rate_shape(w), self.initial_learning_rate,
                                  f"learning_rate_{i}", w.variable.dtype, self.trainable)
                for i, w in enumerate(weights)
            ]
        self.built = True

    def init(self, params):
        if self.learning_rates is None or len(self.learning_rates) != len(params):
            raise ValueError(f"{self!r} must be built with the adapted weights first.")
        # Read once per task: the meta-gradient reaches the variables from here.
        return [tf.convert_to_tensor(lr) for lr in self.learning_rates]

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "trainable": self.trainable}


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class MetaSGDStepSizes(_LearnedStepSizes):
    """Meta-SGD (Li et al., 2017): `p - alpha * g`, `alpha` meta-learned, one per weight entry."""

    def _rate_shape(self, weight):
        return tuple(weight.variable.shape)

    def update(self, grads, state, params, step):
        del step
        return [p - lr * g for p, lr, g in zip(params, state, grads)], state


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class LayerStepSizes(_LearnedStepSizes):
    """MAML++'s LSLR: one meta-learned step size per variable and inner step.

    Steps beyond `steps` (longer adaptation at evaluation) reuse the last.
    """

    def __init__(self, initial_learning_rate, steps, trainable=True):
        super().__init__(initial_learning_rate, trainable)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1; received {steps!r}.")
        self.steps = steps

    def _rate_shape(self, weight):
        return (self.steps,)

    def update(self, grads, state, params, step):
        index = step_index(step, self.steps)
        return [p - tf.gather(lr, index) * g for p, lr, g in zip(params, state, grads)], state

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def meta_sgd(initial_learning_rate):
    """Meta-SGD's rule: a meta-learned step size for every weight entry."""
    return MetaSGDStepSizes(initial_learning_rate)


def lslr(initial_learning_rate, steps):
    """MAML++'s LSLR: a meta-learned step size per variable and per inner step."""
    return LayerStepSizes(initial_learning_rate, steps)
