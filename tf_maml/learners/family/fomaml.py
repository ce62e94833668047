"""First-order MAML (Finn et al., 2017): the inner gradients taken as constants."""

import keras

from tf_maml.learners import hyperparameter
from tf_maml.learners.maml import MAML


def _first_order_only(meta, value):
    if value is not True:
        raise ValueError(
            f"FOMAML is first-order; received first_order={value!r}. For second-order "
            "meta-gradients use MAML."
        )
    return True


@keras.saving.register_keras_serializable(package="tf_maml")
class FOMAML(MAML):
    """First-order MAML: `MAML(..., first_order=True)`.

    The inner gradients are treated as constants, so the meta-gradient is the
    query-loss gradient at the adapted weights: no second derivatives, less
    memory and time, close to MAML's accuracy in the papers. Any inner rule
    (`inner_optimizer`) applies.
    """

    first_order = hyperparameter("first_order", _first_order_only, "Always True.")

    def __init__(self, model, inner_lr=None, inner_steps=1, first_order=True, **kwargs):
        _first_order_only(None, first_order)
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         **kwargs)
