"""BOIL (Oh et al., 2021): the body adapts in the inner loop, the head does not."""

import keras

from tf_maml import rules
from tf_maml.learners.family.anil import _Head
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.family.masked import MaskedMember


class _Body:
    """BOIL's `adapted` predicate: every layer but the frozen ones (default: the head)."""

    def __init__(self, model, frozen_layers):
        self.head, self.frozen_layers = _Head(model), frozen_layers

    def __call__(self, layer):
        if self.frozen_layers is None:
            return not self.head(layer)
        return layer.name not in self.frozen_layers

    def __repr__(self):
        frozen = "the head" if self.frozen_layers is None else self.frozen_layers
        return f"all layers but {frozen}"


@keras.saving.register_keras_serializable(package="tf_maml")
class BOIL(MaskedMember):
    """Body Only update in Inner Loop: MAML whose rule is `rules.masked(rule, body)`.

    The head (the last layer with trainable weights, or `frozen_layers`) keeps
    its meta-learned weights within a task and is meta-trained by the outer
    update only; every other layer adapts. The paper argues the body's
    features must change per task, the head's decision boundaries need not
    (ANIL is the opposite choice).

    Args:
        model: as `MAML`.
        frozen_layers: names of the layers that do not adapt; default: the last
            layer with trainable weights (the head).
        inner_lr, inner_optimizer: the rule the other layers follow (default
            `sgd(inner_lr)`).
        **kwargs: as `MAML`.

    Example:

    ```python
    boil = tf_maml.BOIL(tf_maml.nets.conv4(5), inner_lr=0.4)   # the Dense head stays put
    ```
    """

    frozen_layers = hyperparameter(
        "frozen_layers", fixed("frozen_layers", "it makes the inner rule's mask"),
        "The layers the member's mask is made from (see the class).")

    def __init__(self, model, frozen_layers=None, inner_lr=None, inner_optimizer=None,
                 **kwargs):
        if frozen_layers is not None:
            if isinstance(frozen_layers, str) or not hasattr(frozen_layers, "__iter__"):
                raise TypeError(f"`frozen_layers` must be layer names; received "
                                f"{frozen_layers!r}.")
            frozen_layers = list(frozen_layers)
        super().__init__(model, _Body(model, frozen_layers), inner_lr, inner_optimizer,
                         **kwargs)
        self.frozen_layers = frozen_layers

    def build_member(self):
        known = {weight.layer.name for weight in rules.model_weights(self.model)}
        unknown = sorted(set(self.frozen_layers or ()) - known)
        if unknown:
            raise ValueError(f"`frozen_layers` names layers without trainable weights in the "
                             f"model: {unknown}; those with weights are {sorted(known)}.")

    def get_config(self):
        return {**super().get_config(), "frozen_layers": self.frozen_layers}
