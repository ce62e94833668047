"""BatchNormalization through TensorFlow's fused kernels while meta-training.

Keras 3 normalizes a training batch with separate ops (mean, variance, then
scale and shift), each a pass over the activations, and so do their
gradients: on the Omniglot conv net they took about a third of a
second-order meta-step's op time (docs/benchmarks.md). TensorFlow's
`FusedBatchNormV3` does the forward pass in one kernel and its gradient,
`FusedBatchNormGradV3`, in another (oneDNN on CPU, cuDNN on GPU). The
gradient of that gradient, which second-order MAML needs, is registered by
TensorFlow (tensorflow/python/ops/nn_fused_batch_norm_grad.py): it
differentiates the textbook backward formula once, which is exact for the
Hessian-vector products MAML takes (only a third derivative would meet the
`stop_gradient` inside it).

The fused kernel's gradient ignores its batch mean and variance outputs, so
a layer whose statistics are themselves differentiated keeps the stock
path: that is the support-set statistics capture (`stock_kernels()`, see
tf_maml.support_statistics). So do masks, renormalization,
synchronized statistics, inputs other than 4-D channels-last float32 or
16-bit floats, and epsilons below the kernel's minimum. Under a mixed
precision policy the kernel takes the 16-bit activations and keeps its
statistics, scale and offset in float32, as the stock layer does.
"""

import contextlib
import threading

import keras
import tensorflow as tf
from keras import ops

# FusedBatchNormV3 raises smaller epsilons to this; such layers keep the stock path.
_MIN_EPSILON = 1.001e-5
_HALF_DTYPES = ("bfloat16", "float16")

_STOCK_CALL = keras.layers.BatchNormalization.call
# Per thread: another thread may be tracing a meta-step with fused kernels.
_local = threading.local()


@contextlib.contextmanager
def stock_kernels():
    """Within this context (in this thread only), BatchNormalization never fuses."""
    before = getattr(_local, "stock", False)
    _local.stock = True
    try:
        yield
    finally:
        _local.stock = before


def _fusable(layer, inputs, training, mask):
    rank = len(inputs.shape)
    return (
        training and layer.trainable and mask is None
        and not getattr(_local, "stock", False)
        and not layer.renorm and not layer.synchronized
        and layer.momentum > 0
        and rank == 4 and layer.axis % rank == 3
        and keras.backend.result_type(inputs.dtype, "float32") == "float32"
        and layer.epsilon >= _MIN_EPSILON
    )


def _fused_call(layer, inputs, training=None, mask=None):
    """`BatchNormalization.call` with one fused kernel in training mode."""
    if not _fusable(layer, inputs, training, mask):
        return _STOCK_CALL(layer, inputs, training=training, mask=mask)
    # 16-bit activations (mixed precision) go in as they are: the kernel
    # accumulates its statistics in float32 and moves half the bytes (a third
    # faster meta-step with 15 queries per class than casting to float32
    # around it as the stock layer does; docs/benchmarks.md).
    if keras.backend.standardize_dtype(inputs.dtype) in _HALF_DTYPES:
        x = inputs
    else:
        x = ops.cast(inputs, "float32")
    channels = x.shape[-1]
    gamma = ops.cast(layer.gamma, "float32") if layer.scale else tf.ones([channels])
    beta = ops.cast(layer.beta, "float32") if layer.center else tf.zeros([channels])
    outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
        x, gamma, beta, epsilon=layer.epsilon, is_training=True
    )
    # The kernel returns the unbiased batch variance; Keras' moving variance
    # follows the biased one it normalizes with.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
    variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
    momentum = layer.momentum
    moving_mean = ops.cast(layer.moving_mean, "float32")
    moving_variance = ops.cast(layer.moving_variance, "float32")
    layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
    layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
    return ops.cast(outputs, layer.compute_dtype)


@contextlib.contextmanager
def fused_kernels(enabled=True, xla=False):
    """Within this context, BatchNormalization layers traced on TF run fused.

    Args:
        enabled: whether to fuse at all.
        xla: whether the code traced inside is compiled with XLA; then nothing
            is swapped, since XLA fuses the elementwise ops itself.
    """
    if not enabled or xla:
        yield
        return
    keras.layers.BatchNormalization.call = _fused_call
    try:
        yield
    finally:
        keras.layers.BatchNormalization.call = _STOCK_CALL
