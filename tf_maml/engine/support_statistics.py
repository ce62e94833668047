"""Support-set statistics of normalization layers, computed without touching any layer.

To predict a query on its own (`transductive=False`, `adapt`,
`export_adaptive`), normalization layers normalize with the statistics of
the task's support set under the adapted weights: BatchNormalization's
moving statistics, TaskNormalization's context moments. Both are what a
training-mode `stateless_call` on the support set returns as new state.
TaskNormalization stores its context outright. A BatchNormalization training-mode
`stateless_call` returns each layer's moving statistics updated with the
batch ones, `moving * momentum + batch * (1 - momentum)`; called with the
moving statistics set to zero, it returns `batch * (1 - momentum)`, which
divided by `(1 - momentum)` gives the batch statistics back to one rounding.
A pure function of the weights and the support set: many threads may adapt
at once (setting each layer's momentum to 0 for the call, as before, changed
shared layers under other threads' feet).
"""

import keras
import tensorflow as tf

from tf_maml.keras_patches import all_layers, stock_kernels
from tf_maml.layers import TaskNormalization


def batch_norm_layers(model):
    return [
        layer
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def task_norm_layers(model):
    return [layer for layer in all_layers(model) if isinstance(layer, TaskNormalization)]


def _moving_statistics(model):
    """`(index into non_trainable_variables, momentum)` of every moving mean and variance
    that a support set sets (not a frozen layer's)."""
    index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    positions = []
    for layer in batch_norm_layers(model):
        if not layer.trainable:
            # Keras runs a frozen BatchNormalization in inference mode, training calls
            # too: it keeps its moving statistics, served as in meta-training.
            continue
        if layer.renorm or not 0.0 <= layer.momentum < 1.0:
            raise ValueError(
                f"BatchNormalization layer {layer.name!r} (momentum={layer.momentum}, "
                f"renorm={layer.renorm}) cannot give support-set statistics: they need "
                "0 <= momentum < 1 and no renorm. Use transductive=True, or change the layer."
            )
        for variable in (layer.moving_mean, layer.moving_variance):
            positions.append((index[id(variable)], layer.momentum))
    return positions


def with_support_statistics(model, forward, params, state, support_x):
    """`state` holding the support set's statistics under `params`.

    BatchNorm moving statistics and TaskNorm context moments are the support
    set's; other values are as a training-mode call on the support set leaves them.

    Args:
        model: the wrapped Keras model.
        forward: `forward(params, state, x, training)` -> `(outputs, state, losses)`.
        params, state: trainable and non-trainable values (tensors).
        support_x: the support examples of one task.
    """
    positions = _moving_statistics(model)
    if not positions and not task_norm_layers(model):
        return state
    zeroed = list(state)
    for i, _ in positions:
        zeroed[i] = tf.zeros_like(state[i])
    # The fused kernel's gradient ignores its statistics outputs, which are
    # differentiated here (transductive=False meta-training).
    with stock_kernels():
        _, new_state, _ = forward(params, zeroed, support_x, training=True)
    new_state = list(new_state)
    for i, momentum in positions:
        new_state[i] = new_state[i] / tf.cast(1.0 - momentum, new_state[i].dtype)
    return new_state
