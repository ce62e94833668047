"""Meta-SGD (Li et al., 2017): a learned inner step size for every weight."""

import keras

from tf_maml import rules
from tf_maml.learners.arguments import refuse
from tf_maml.learners.arguments import checked_inner_lr
from tf_maml.learners.maml import MAML


@keras.saving.register_keras_serializable(package="tf_maml")
class MetaSGD(MAML):
    """MAML whose inner rule is `rules.meta_sgd(inner_lr)`.

    The inner update is `theta' = theta - alpha * grad`, with `alpha` a
    variable of the same shape as `theta` for every trainable variable of the
    wrapped model, initialized to `inner_lr` and meta-trained with the
    weights by the compiled optimizer. The step sizes are weights of the
    meta-learner (`inner_lrs`), saved and loaded with it. Learned step sizes
    on some layers only: `MAML(inner_optimizer=rules.masked(rules.meta_sgd(0.4),
    adapted=[...]))`.

    Args: as `MAML`, without `inner_optimizer`.

    Example:

    ```python
    meta_sgd = tf_maml.MetaSGD(tf_maml.nets.conv4(5), inner_lr=0.4)
    meta_sgd.compile(optimizer="adam", loss=..., metrics=["accuracy"])
    ```
    """

    def __init__(self, model, inner_lr=0.4, inner_steps=1, **kwargs):
        refuse(kwargs, "MetaSGD", inner_optimizer="its rule is rules.meta_sgd(inner_lr)")
        inner_lr = checked_inner_lr(inner_lr)
        super().__init__(model, inner_steps=inner_steps, inner_optimizer=rules.meta_sgd(inner_lr),
                         **kwargs)
        self._inner_lr = inner_lr

    def inner_rule(self, rule):
        raise AttributeError(
            f"`inner_optimizer` of MetaSGD is fixed: its rule is rules.meta_sgd(inner_lr) "
            f"(received {rule!r}). For another rule with learned step sizes use "
            "MAML(inner_optimizer=...).")

    @property
    def inner_lrs(self):
        """The learned step sizes, one variable per trainable variable of the model."""
        return self.inner_optimizer.learning_rates

    def get_config(self):
        config = super().get_config()
        config.pop("inner_optimizer")
        return {**config, "inner_lr": self.inner_lr}
