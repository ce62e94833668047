"""The shape of an inner-loop update rule, and the rules that combine others.

A rule turns a task's inner gradients into adapted weights, as a Keras
optimizer does for training, but as pure tensor functions that second-order
differentiation goes through (the shape of optax's transformations):

- `select(weights)`: which of the wrapped model's weights adapt (default all);
- `build(weights)`: creates the rule's meta-learned variables, if any, for
  the weights it adapts (tracked and saved by the meta-learner);
- `init(params)`: the rule's state for one task (e.g. Adam's moments);
- `update(grads, state, params, step)`: `(new_params, new_state)`.

`params` and `grads` are lists aligned with the selected weights; `step`
is the index of the inner step (a scalar int32 tensor, 0 first). A rule
reads its own variables as usual: while the meta-learner differentiates,
it maps them to tensors it watches (`keras.StatelessScope`).

Gradient transforms (clipping) change the gradients only: they implement
`transform` instead of `update` and go before a stepping rule in `chain`.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_maml.configurable import Configurable
from tf_maml.keras_patches import leaf_layers


class ModelWeight:
    """A trainable variable of the wrapped model and the layer that owns it."""

    def __init__(self, variable, layer):
        self.variable, self.layer = variable, layer

    def __repr__(self):
        return f"ModelWeight({self.variable.path!r})"


def model_weights(model):
    """The `ModelWeight`s of `model.trainable_variables`, in that order."""
    owner = {}
    for layer in leaf_layers(model):
        for variable in layer.trainable_variables:
            owner.setdefault(id(variable), layer)
    return [ModelWeight(v, owner.get(id(v), model)) for v in model.trainable_variables]


class Rule(Configurable):
    """Base class of inner-loop update rules (see the module docstring).

    Example, a rule written by a user (sign SGD):

    ```python
    @keras.saving.register_keras_serializable()
    class SignSGD(tf_maml.rules.Rule):
        def __init__(self, learning_rate):
            super().__init__()
            self.learning_rate = learning_rate

        def update(self, grads, state, params, step):
            return [p - self.learning_rate * tf.sign(g) for p, g in zip(params, grads)], state

        def get_config(self):
            return {"learning_rate": self.learning_rate}
    ```
    """

    # False for gradient transforms (they implement `transform`).
    steps_params = True

    def __init__(self):
        self._rule_variables = []
        self.built = False

    @property
    def variables(self):
        """The rule's meta-learned variables (`keras.Variable`s), once built."""
        return list(self._rule_variables)

    def select(self, weights):
        """The `ModelWeight`s this rule adapts, from those offered; all by default."""
        return list(weights)

    def build(self, weights):
        """Creates the rule's variables for the `ModelWeight`s it adapts."""
        del weights
        self.built = True

    def init(self, params):
        """The rule's state at the start of a task's adaptation."""
        del params
        return ()

    def update(self, grads, state, params, step):
        """One inner step: returns `(new_params, new_state)`."""
        raise NotImplementedError(f"{type(self).__name__} must implement update().")

    def transform(self, grads, state, params, step):
        """Gradient transforms only: returns `(new_grads, new_state)`."""
        raise NotImplementedError(f"{type(self).__name__} does not transform gradients.")

    def add_variable(self, shape, value, name, dtype, trainable=True):
        """A meta-learned variable of `shape` holding `value` (broadcast) exactly.

        Assigned, not a Constant initializer: Keras casts that through float32.
        """
        with keras.name_scope(type(self).__name__.lower(), caller=self):
            variable = keras.Variable(
                np.full(shape, value, keras.backend.standardize_dtype(dtype)),
                trainable=trainable, name=name, dtype=dtype,
            )
        self._rule_variables.append(variable)
        return variable



class GradientTransform(Rule):
    """A rule that changes the gradients and leaves the stepping to the next rule."""

    steps_params = False

    def update(self, grads, state, params, step):
        raise TypeError(
            f"{self!r} only transforms gradients: chain it before a rule that steps, e.g. "
            f"chain({self!r}, sgd(0.4))."
        )


def serialize(rule):
    return keras.saving.serialize_keras_object(rule)


def deserialize(config):
    return keras.saving.deserialize_keras_object(config)


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class Chain(Rule):
    """Rules applied in order: gradient transforms, then one rule that steps."""

    def __init__(self, rules):
        super().__init__()
        rules = [deserialize(r) if isinstance(r, dict) else r for r in rules]
        if not rules:
            raise ValueError("chain() needs at least one rule.")
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"chain() takes rules; received {rule!r}.")
        stepping = [r for r in rules if r.steps_params]
        if len(stepping) != 1 or not rules[-1].steps_params:
            raise ValueError(
                "chain() takes gradient transforms (clip_by_value, clip_by_global_norm) "
                f"followed by exactly one rule that steps (sgd, adam, ...); received {rules!r}."
            )
        self.rules = rules

    @property
    def variables(self):
        return [v for rule in self.rules for v in rule.variables]

    def select(self, weights):
        for rule in self.rules:
            weights = rule.select(weights)
        return weights

    def build(self, weights):
        for rule in self.rules:
            rule.build(weights)
        self.built = True

    def init(self, params):
        return tuple(rule.init(params) for rule in self.rules)

    def update(self, grads, state, params, step):
        new_state = []
        for rule, rule_state in zip(self.rules[:-1], state):
            grads, rule_state = rule.transform(grads, rule_state, params, step)
            new_state.append(rule_state)
        params, last_state = self.rules[-1].update(grads, state[-1], params, step)
        return params, tuple(new_state) + (last_state,)

    def get_config(self):
        return {"rules": [serialize(rule) for rule in self.rules]}

    def __repr__(self):
        return f"chain({', '.join(map(repr, self.rules))})"


def chain(*rules):
    """Rules in order, as optax: `chain(clip_by_global_norm(1.0), sgd(0.4))` clips, then steps."""
    return Chain(list(rules))


def layer_matcher(layers, argument, model_layers=None):
    """A predicate on layers from layer names or a predicate; names are checked if possible."""
    if callable(layers):
        return layers
    if isinstance(layers, str) or not hasattr(layers, "__iter__"):
        raise TypeError(
            f"`{argument}` must be layer names or a predicate on layers; received {layers!r}."
        )
    names = set(layers)
    if model_layers is not None:
        known = {layer.name for layer in model_layers}
        unknown = sorted(names - known)
        if unknown:
            raise ValueError(
                f"`{argument}` names layers not in the model: {unknown}; its layers with "
                f"weights are {sorted(known)}."
            )
    return lambda layer: layer.name in names


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class Masked(Rule):
    """`rule` applied to the weights of chosen layers; the others stay fixed per task."""

    def __init__(self, rule, adapted):
        super().__init__()
        self.rule = deserialize(rule) if isinstance(rule, dict) else rule
        if not isinstance(self.rule, Rule):
            raise TypeError(f"masked() takes a rule; received {rule!r}.")
        if not callable(adapted):
            adapted = list(adapted) if not isinstance(adapted, str) else adapted
        layer_matcher(adapted, "adapted")  # a clear error for anything else
        self.adapted = adapted
        self.steps_params = self.rule.steps_params

    @property
    def variables(self):
        return self.rule.variables

    def select(self, weights):
        weights = list(weights)
        matches = layer_matcher(self.adapted, "adapted", {w.layer for w in weights})
        chosen = [w for w in weights if matches(w.layer)]
        if not chosen:
            raise ValueError(
                f"masked(adapted={self.adapted!r}) selects no trainable weight; the weights are "
                f"{[w.variable.path for w in weights]}."
            )
        return self.rule.select(chosen)

    def build(self, weights):
        self.rule.build(weights)
        self.built = True

    def init(self, params):
        return self.rule.init(params)

    def update(self, grads, state, params, step):
        return self.rule.update(grads, state, params, step)

    def transform(self, grads, state, params, step):
        return self.rule.transform(grads, state, params, step)

    def get_config(self):
        if callable(self.adapted):
            raise ValueError(
                "A masked() rule whose `adapted` is a predicate cannot be saved; pass layer names."
            )
        return {"rule": serialize(self.rule), "adapted": list(self.adapted)}

    def __repr__(self):
        return f"masked({self.rule!r}, adapted={self.adapted!r})"


def masked(rule, adapted):
    """`rule` restricted to the weights of `adapted` layers (names, or a predicate on layers).

    The other weights are meta-trained by the outer update but fixed within a
    task; their inner gradients are never computed (ANIL: `masked(sgd(0.4),
    adapted=["head"])`).
    """
    return Masked(rule, adapted)


def step_index(step, count):
    """`step` as an index into per-step values of length `count` (later steps reuse the last)."""
    return tf.minimum(tf.cast(step, tf.int32), count - 1)
