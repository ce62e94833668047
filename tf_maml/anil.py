"""ANIL (Raghu et al., 2020): only the head adapts in the inner loop."""

import keras

from tf_maml.meta_learner import MAML


@keras.saving.register_keras_serializable(package="tf_maml")
class ANIL(MAML):
    """Almost No Inner Loop: MAML in which only chosen layers adapt per task.

    The other layers (the body) are meta-trained by the outer update but stay
    fixed within a task, which makes the inner loop cheap and, per the paper,
    loses little accuracy.

    Args:
        model: as `MAML`.
        adapted_layers: names of the layers whose variables adapt, or a
            predicate `layer -> bool`; default: the last layer with trainable
            weights (the head). Only names can be saved with the meta-learner.
        **kwargs: as `MAML`.

    Example:

    ```python
    anil = tf_maml.ANIL(tf_maml.nets.conv4(5), inner_lr=0.4)   # adapts the Dense head
    ```
    """

    def __init__(self, model, adapted_layers=None, **kwargs):
        super().__init__(model, **kwargs)
        if adapted_layers is not None and not callable(adapted_layers):
            adapted_layers = list(adapted_layers)
            names = {layer.name for layer in model._flatten_layers(include_self=False)}
            unknown = sorted(set(adapted_layers) - names)
            if unknown:
                raise ValueError(
                    f"`adapted_layers` names layers not in {model.name!r}: {unknown}; its "
                    f"layers are {sorted(names)}."
                )
        self.adapted_layers = adapted_layers

    def _adapted_layer_objects(self):
        layers = [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if layer.trainable_variables and not layer._flatten_layers(include_self=False)
        ]
        if self.adapted_layers is None:
            return layers[-1:]
        if callable(self.adapted_layers):
            return [layer for layer in layers if self.adapted_layers(layer)]
        return [layer for layer in layers if layer.name in self.adapted_layers]

    @property
    def _adapted_indices(self):
        position = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        indices = sorted(
            position[id(v)]
            for layer in self._adapted_layer_objects()
            for v in layer.trainable_variables
        )
        if not indices:
            raise ValueError(f"`adapted_layers` selects no trainable variable of {self.model.name!r}.")
        return indices

    def get_config(self):
        if callable(self.adapted_layers):
            raise ValueError(
                "An ANIL with a predicate for `adapted_layers` cannot be saved; pass layer names."
            )
        return {**super().get_config(), "adapted_layers": self.adapted_layers}
