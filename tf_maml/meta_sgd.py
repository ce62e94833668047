"""Meta-SGD (Li et al., 2017): a learned inner step size for every weight."""

import keras

from tf_maml.meta_learner import MAML


@keras.saving.register_keras_serializable(package="tf_maml")
class MetaSGD(MAML):
    """MAML whose inner step sizes are meta-learned, one per weight entry.

    The inner update is `theta' = theta - alpha * grad`, with `alpha` a
    variable of the same shape as `theta` for every trainable variable of the
    wrapped model, initialized to `inner_lr` and meta-trained with the
    weights by the compiled optimizer. The step sizes are weights of the
    meta-learner (`inner_lrs`), saved and loaded with it.

    Args: as `MAML`.

    Example:

    ```python
    meta_sgd = tf_maml.MetaSGD(tf_maml.nets.conv4(5), inner_lr=0.4)
    meta_sgd.compile(optimizer="adam", loss=..., metrics=["accuracy"])
    ```
    """

    def __init__(self, model, inner_lr=0.4, inner_steps=1, **kwargs):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)
        self.inner_lrs = None
        if model.built:
            self._create_inner_lrs()

    def build(self, input_shape):
        super().build(input_shape)
        self._create_inner_lrs()

    def _create_inner_lrs(self):
        if self.inner_lrs is not None:
            return
        self.inner_lrs = [
            self._add_filled_weight(variable.shape, self.inner_lr, f"inner_lr_{i}", variable.dtype)
            for i, variable in enumerate(self.model.trainable_variables)
        ]

    @property
    def _inner_variables(self):
        return list(self.inner_lrs or [])

    def _inner_update(self, params, grads, inner, step, slots):
        del step
        step_sizes = [inner[i] for i in self._adapted_indices]
        return [p - lr * g for p, lr, g in zip(params, step_sizes, grads)], slots
