"""The standalone model `adapt()` returns: a copy of the wrapped model with adapted weights.

`keras.models.clone_model` makes the copy wherever it can (Sequential and functional
models, subclassed models whose `get_config` rebuilds them): the copy is the same kind
of model, with its layers, and saves and loads as the original does. A subclassed model
that `get_config` cannot rebuild (an `__init__` that takes no keyword arguments, say)
gets an `AdaptedModel`: a `keras.Model` of its own weights that runs the original's
computation through `stateless_call`, so it predicts, fits and exports like any Keras
model, without a `get_config` round trip.
"""

import keras

from tf_maml import episodes
from tf_maml.keras_patches import call_has_training_arg, compute_output_spec


class AdaptedModel(keras.Model):
    """`model`'s computation on weights of its own (`trainable` and `state` values, in the
    order of `model.trainable_variables` and `model.non_trainable_variables`).

    `model` is held outside Keras' and TensorFlow's tracking: its variables are not
    this model's weights, and an export holds only the adapted ones.
    """

    def __init__(self, model, trainable, state, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_adapted"), **kwargs)
        object.__setattr__(self, "_source", model)  # untracked: see the class docstring
        self.adapted_weights = [
            keras.Variable(value, name=variable.name, trainable=True)
            for variable, value in zip(model.trainable_variables, trainable)]
        self.adapted_state = [
            keras.Variable(value, name=variable.name, trainable=False)
            for variable, value in zip(model.non_trainable_variables, state)]

    def call(self, inputs, training=False):
        kwargs = {"training": training} if call_has_training_arg(self._source) else {}
        outputs, state = self._source.stateless_call(
            [v.value for v in self.adapted_weights], [v.value for v in self.adapted_state],
            inputs, **kwargs)
        for variable, value in zip(self.adapted_state, state):  # moving statistics, RNG
            variable.assign(value)
        return outputs


def adapted_copy(model, params, state, example_spec=None):
    """A new `keras.Model` computing as `model`, holding `params` and `state` as its weights.

    `example_spec`: the per-example spec to build a clone for, if cloning leaves
    it unbuilt (a subclassed model).
    """
    try:
        adapted = keras.models.clone_model(model)
    except (TypeError, ValueError):  # get_config cannot rebuild it
        adapted = AdaptedModel(model, params, state)
        if example_spec is not None:
            compute_output_spec(adapted, episodes.batched(example_spec), training=False)
        return adapted
    adapted.name = f"{model.name}_adapted"
    if not adapted.built and example_spec is not None:
        compute_output_spec(adapted, episodes.batched(example_spec), training=False)
    for variable, value in zip(adapted.trainable_variables, params):
        variable.assign(value)
    for variable, value in zip(adapted.non_trainable_variables, state):
        variable.assign(value)
    return adapted
