"""How a run builds each member of the family from its config, and how a search tunes it.

The one place that reads a member's settings from a config or a keras-tuner
search space (the meta-learners themselves never read configs): a `Recipe`
per name of `tf_maml.family.ALGORITHMS`. A member of your own joins runs and
searches with `RECIPES[name] = Recipe(...)`, with no change to the runners.
"""

import keras

from tf_maml import nets
from tf_maml.learners import family


class Recipe:
    """A member from a config (`build`, `optimizer`) or from keras-tuner's `hp` (`tuned`).

    The default is MAML's: `inner_lr`, `inner_steps` and `first_order` from
    the config, Adam of `outer_lr`; in a search, `inner_lr` (1e-3..1, log),
    `inner_steps` (1..5), `first_order` (where `tunes_first_order`) and Adam's
    `outer_lr` (1e-4..1e-2, log).
    """

    def __init__(self, member, tunes_first_order=False, searched=True):
        self.member, self.tunes_first_order = member, tunes_first_order
        # False where another recipe's search covers the member (FOMAML: MAML's first_order).
        self.searched = searched

    def build(self, backbone, config, **common):
        # A member that cannot honour first_order=True (MAML++) says so.
        return self.member(backbone, inner_lr=config.inner_lr, inner_steps=config.inner_steps,
                           first_order=config.first_order, **common)

    def optimizer(self, config):
        return keras.optimizers.Adam(config.outer_lr)

    def tuned_names(self):
        """The names this recipe declares in a search, beside `inner_lr` and `inner_steps`."""
        return ("first_order", "outer_lr") if self.tunes_first_order else ("outer_lr",)

    def tuned(self, hp, backbone, **common):
        """`(meta_learner, optimizer)` with hyper-parameters declared in `hp` where used
        (within the search's conditional scopes: see `MetaLearnerHyperModel.build`)."""
        if self.tunes_first_order:
            common["first_order"] = hp.Boolean("first_order")
        meta_learner = self.member(backbone, **common)  # MAML++: its schedules' defaults
        return meta_learner, keras.optimizers.Adam(
            hp.Float("outer_lr", 1e-4, 1e-2, sampling="log"))


class ReptileRecipe(Recipe):
    """Reptile: its own inner loop (`config.reptile`), and SGD of epsilon annealed
    linearly to 0 over the run (Nichol et al.); in a search, epsilon (0.05..1, log)."""

    def build(self, backbone, config, **common):
        settings = config.reptile
        return self.member(backbone, inner_lr=settings.inner_lr,
                           inner_steps=settings.inner_steps,
                           inner_optimizer=settings.inner_optimizer, **common)

    def optimizer(self, config):
        return keras.optimizers.SGD(keras.optimizers.schedules.PolynomialDecay(
            config.reptile.epsilon, config.meta_steps, end_learning_rate=0.0))

    def tuned_names(self):
        return ("epsilon",)

    def tuned(self, hp, backbone, **common):
        return self.member(backbone, **common), keras.optimizers.SGD(
            hp.Float("epsilon", 0.05, 1.0, sampling="log"))


class IMAMLRecipe(Recipe):
    """iMAML: its proximal term and conjugate gradient from `config.imaml`
    (`proximal_weight`, `cg_steps`); in a search, `proximal_weight` (0.1..10, log)."""

    def build(self, backbone, config, **common):
        return self.member(backbone, inner_lr=config.inner_lr, inner_steps=config.inner_steps,
                           proximal_weight=config.imaml.proximal_weight,
                           cg_steps=config.imaml.cg_steps, **common)

    def tuned_names(self):
        return ("proximal_weight", "outer_lr")

    def tuned(self, hp, backbone, **common):
        common["proximal_weight"] = hp.Float("proximal_weight", 0.1, 10.0, sampling="log")
        return super().tuned(hp, backbone, **common)


class ProtoMAMLRecipe(Recipe):
    """ProtoMAML: the task's backbone without its last layer as the embedding, as many
    classes as the backbone's logits; `config.proto_maml.head_only`."""

    def build(self, backbone, config, **common):
        return self.member(nets.without_head(backbone), _logits(backbone),
                           head_only=config.proto_maml.head_only, inner_lr=config.inner_lr,
                           inner_steps=config.inner_steps, first_order=config.first_order,
                           **common)

    def tuned(self, hp, backbone, **common):
        return super().tuned(hp, nets.without_head(backbone), num_classes=_logits(backbone),
                             **common)


def _logits(backbone):
    return backbone.outputs[0].shape[-1]


RECIPES = {
    "maml": Recipe(family.MAML, tunes_first_order=True),
    "fomaml": Recipe(family.FOMAML, searched=False),
    "meta_sgd": Recipe(family.MetaSGD),
    "anil": Recipe(family.ANIL, tunes_first_order=True),
    "boil": Recipe(family.BOIL, tunes_first_order=True),
    # Not in the default search: its model needs a TaskContext layer.
    "cavia": Recipe(family.CAVIA, tunes_first_order=True, searched=False),
    # Not in the default search: its gradient is exact at the inner minimum, which the
    # search's 1..5 inner steps rarely reach (name it, with inner_steps fixed higher).
    "imaml": IMAMLRecipe(family.IMAML, searched=False),
    # Not in the default search: it classifies (its backbone's last layer is replaced).
    "proto_maml": ProtoMAMLRecipe(family.ProtoMAML, tunes_first_order=True, searched=False),
    "maml_plus_plus": Recipe(family.MAMLPlusPlus),
    "reptile": ReptileRecipe(family.Reptile),
}


def recipe(algorithm):
    """The recipe of `algorithm`, or an error listing the known names."""
    if algorithm not in RECIPES:
        raise ValueError(f"Unknown algorithm {algorithm!r}; known: {', '.join(RECIPES)}.")
    return RECIPES[algorithm]
