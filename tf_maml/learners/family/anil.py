"""ANIL (Raghu et al., 2020): only the head adapts in the inner loop."""

import keras

from tf_maml.keras_patches import leaf_layers
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.family.masked import MaskedMember


class _Head:
    """The default `adapted` predicate: the last layer with trainable weights."""

    def __init__(self, model):
        self.model = model

    def __call__(self, layer):
        layers = leaf_layers(self.model)
        return bool(layers) and layer is layers[-1]

    def __repr__(self):
        return "the head"


@keras.saving.register_keras_serializable(package="tf_maml")
class ANIL(MaskedMember):
    """Almost No Inner Loop: MAML whose rule is `rules.masked(rule, adapted_layers)`.

    The other layers (the body) are meta-trained by the outer update but stay
    fixed within a task; their inner gradients are never computed, which
    makes the inner loop cheap and, per the paper, loses little accuracy.

    Args:
        model: as `MAML`.
        adapted_layers: names of the layers whose variables adapt, or a
            predicate `layer -> bool`; default: the last layer with trainable
            weights (the head). Only names can be saved with the meta-learner.
        inner_lr, inner_optimizer: the rule the adapted layers follow (default
            `sgd(inner_lr)`; e.g. `rules.meta_sgd(0.4)` for learned step sizes).
        **kwargs: as `MAML`.

    Example:

    ```python
    anil = tf_maml.ANIL(tf_maml.nets.conv4(5), inner_lr=0.4)   # adapts the Dense head
    ```
    """

    adapted_layers = hyperparameter(
        "adapted_layers", fixed("adapted_layers", "it makes the inner rule's mask"),
        "The layers the member's mask is made from (see the class).")

    def __init__(self, model, adapted_layers=None, inner_lr=None, inner_optimizer=None, **kwargs):
        if adapted_layers is not None and not callable(adapted_layers):
            adapted_layers = list(adapted_layers)
        adapted = _Head(model) if adapted_layers is None else adapted_layers
        super().__init__(model, adapted, inner_lr, inner_optimizer, **kwargs)
        self.adapted_layers = adapted_layers

    def get_config(self):
        if callable(self.adapted_layers):
            raise ValueError(
                "An ANIL with a predicate for `adapted_layers` cannot be saved; pass layer names."
            )
        return {**super().get_config(), "adapted_layers": self.adapted_layers}
