"""CAVIA's context parameters (Zintgraf et al., ICML 2019) as a Keras layer."""

import keras
from keras import ops

from tf_maml.learners.arguments import checked_int


@keras.saving.register_keras_serializable(package="tf_maml.layers")
class TaskContext(keras.layers.Layer):
    """Appends `size` context parameters to the last axis of its input.

    The context is what `tf_maml.CAVIA` adapts in the inner loop, and all it
    adapts: it starts at 0 in every task and is never meta-trained (CAVIA drops
    its meta-gradient), so outside a task its variable stays 0 and the layer
    appends zeros. Inputs `[batch, ..., features]` give `[batch, ...,
    features + size]`, the context repeated over the batch and other axes.

    Example (the CAVIA paper's regression network):

    ```python
    net = keras.Sequential([keras.Input((1,)), tf_maml.layers.TaskContext(4),
                            keras.layers.Dense(40, activation="relu"),
                            keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])
    cavia = tf_maml.CAVIA(net, inner_lr=1.0)
    ```
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = checked_int(size, "size", 1)

    def build(self, input_shape):
        self.context = self.add_weight(shape=(self.size,), initializer="zeros", name="context")

    def call(self, inputs):
        rank = len(inputs.shape)
        context = ops.reshape(ops.cast(self.context, inputs.dtype), (1,) * (rank - 1) + (-1,))
        # Zeros of the input's shape but the last axis, whatever its values (NaN included).
        return ops.concatenate([inputs, ops.zeros_like(inputs[..., :1]) + context], axis=-1)

    def compute_output_shape(self, input_shape):
        last = None if input_shape[-1] is None else input_shape[-1] + self.size
        return (*input_shape[:-1], last)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
