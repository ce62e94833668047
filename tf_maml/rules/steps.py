"""Fixed-step rules: SGD, momentum and Adam, with step sizes per layer if wished."""

import keras
import tensorflow as tf

from tf_maml.rules.base import Rule


def _check_rate(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{argument}` must be a positive number; received {value!r}.")
    return float(value)


def _check_fraction(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{argument}` must be a number in [0, 1); received {value!r}.")
    return float(value)


def _checked_learning_rate(learning_rate):
    """A float, a dict from layer name to float, or a predicate-like callable `layer -> float`."""
    if isinstance(learning_rate, dict):
        return {str(k): _check_rate(v, f"learning_rate[{k!r}]") for k, v in learning_rate.items()}
    if callable(learning_rate):
        return learning_rate
    return _check_rate(learning_rate, "learning_rate")


def _per_weight(learning_rate, weights):
    """The step size of each `ModelWeight`, from a float, a dict by layer name, or a callable."""
    if isinstance(learning_rate, float):
        return [learning_rate] * len(weights)
    if callable(learning_rate):
        return [_check_rate(learning_rate(w.layer), f"learning_rate({w.layer.name})")
                for w in weights]
    layers = {w.layer.name for w in weights}
    unknown = sorted(set(learning_rate) - layers)
    missing = sorted(layers - set(learning_rate))
    if unknown or missing:
        raise ValueError(
            f"`learning_rate` by layer name must name each adapted layer once: unknown "
            f"{unknown}, missing {missing}. To keep layers fixed in the inner loop, use "
            "masked(rule, adapted=[...])."
        )
    return [learning_rate[w.layer.name] for w in weights]


class _FixedStepRule(Rule):
    """A rule with a step size per adapted weight, fixed when the rule is built."""

    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = _checked_learning_rate(learning_rate)
        self.rates = None

    def build(self, weights):
        self.rates = _per_weight(self.learning_rate, weights)
        self.built = True

    def _rates(self, params):
        if self.rates is None:  # unbuilt: one float for every weight
            if not isinstance(self.learning_rate, float):
                raise ValueError(f"{self!r} must be built with the model's weights first.")
            return [self.learning_rate] * len(params)
        return self.rates

    def get_config(self):
        if callable(self.learning_rate):
            raise ValueError(
                f"{type(self).__name__} with a callable learning rate cannot be saved; pass a "
                "float or a dict from layer name to float."
            )
        return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class SGD(_FixedStepRule):
    """`p - learning_rate * g`: MAML's inner step."""

    def update(self, grads, state, params, step):
        del step
        rates = self._rates(params)
        return [p - lr * g for p, lr, g in zip(params, rates, grads)], state


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class Momentum(_FixedStepRule):
    """Heavy-ball momentum as `keras.optimizers.SGD(momentum=beta)`: v = beta v - lr g; p + v."""

    def __init__(self, learning_rate, beta=0.9):
        super().__init__(learning_rate)
        self.beta = _check_fraction(beta, "beta")

    def init(self, params):
        return [tf.zeros_like(p) for p in params]

    def update(self, grads, state, params, step):
        del step
        rates = self._rates(params)
        velocity = [self.beta * v - lr * g
                    for v, lr, g in zip(state, rates, grads)]
        return [p + v for p, v in zip(params, velocity)], velocity

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class Adam(_FixedStepRule):
    """Adam as `keras.optimizers.Adam` (moments zero at the start of each task)."""

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _check_fraction(beta_1, "beta_1")
        self.beta_2 = _check_fraction(beta_2, "beta_2")
        self.epsilon = _check_rate(epsilon, "epsilon")

    def init(self, params):
        return ([tf.zeros_like(p) for p in params], [tf.zeros_like(p) for p in params])

    def update(self, grads, state, params, step):
        first, second = state
        first = [m + (g - m) * (1 - self.beta_1) for m, g in zip(first, grads)]
        second = [v + (tf.square(g) - v) * (1 - self.beta_2) for v, g in zip(second, grads)]
        # Keras' Adam: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
        dtype = params[0].dtype
        t = tf.cast(step + 1, dtype)
        correction = tf.sqrt(1 - tf.pow(tf.constant(self.beta_2, dtype), t)) / (
            1 - tf.pow(tf.constant(self.beta_1, dtype), t)
        )
        # sqrt(v) has no finite derivative at v = 0 (a weight whose gradient
        # is zero): its derivative is taken as 0 there.
        new_params = [
            p - lr * tf.cast(correction, p.dtype) * m / (_safe_sqrt(v) + self.epsilon)
            for p, m, v, lr in zip(params, first, second, self._rates(params))
        ]
        return new_params, (first, second)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


@tf.custom_gradient
def _safe_sqrt(v):
    root = tf.sqrt(v)

    def grad(upstream):
        safe = tf.where(root > 0, root, tf.ones_like(root))
        return tf.where(root > 0, upstream / (2 * safe), tf.zeros_like(upstream))

    return root, grad


def sgd(learning_rate):
    """Plain SGD steps: a float, or a dict from layer name to float (step sizes per layer)."""
    return SGD(learning_rate)


def momentum(learning_rate, beta=0.9):
    """SGD with momentum `beta`, as `keras.optimizers.SGD(learning_rate, momentum=beta)`."""
    return Momentum(learning_rate, beta)


def adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam, one step equal to `keras.optimizers.Adam`'s; moments reset for each task."""
    return Adam(learning_rate, beta_1, beta_2, epsilon)
