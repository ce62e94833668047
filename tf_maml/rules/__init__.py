"""Inner-loop update rules: how a task's inner gradients become adapted weights.

`MAML(model, inner_optimizer=rule)` takes any of them; see `tf_maml.rules.base`
for the shape of a rule and docs/api.md for a rule written by a user.
"""

from tf_maml.rules.base import (
    Chain, GradientTransform, Masked, ModelWeight, Rule, chain, deserialize, masked,
    model_weights, serialize,
)
from tf_maml.rules.clipping import ClipByGlobalNorm, ClipByValue, clip_by_global_norm, clip_by_value
from tf_maml.rules.learned import LayerStepSizes, MetaSGDStepSizes, lslr, meta_sgd
from tf_maml.rules.proximal import Proximal, proximal
from tf_maml.rules.steps import SGD, Adam, Momentum, adam, momentum, sgd

__all__ = [
    "SGD", "Adam", "Chain", "ClipByGlobalNorm", "ClipByValue", "GradientTransform",
    "LayerStepSizes", "Masked", "MetaSGDStepSizes", "ModelWeight", "Momentum", "Proximal",
    "Rule", "adam", "chain", "clip_by_global_norm", "clip_by_value", "deserialize", "lslr",
    "masked", "meta_sgd", "model_weights", "momentum", "proximal", "serialize", "sgd",
]
