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

Padded episodes (per-example weights, weight 0 marking padding) need batch
statistics of the real examples only: within `example_weights(weights)`, a
training-mode BatchNormalization passes Keras' own `mask` argument, which
computes masked moments (the stock path).

The fused kernel's gradient ignores its batch mean and variance outputs, so
a layer whose statistics are themselves differentiated keeps the stock
path: that is the support-set statistics capture (`stock_kernels()`, see
tf_maml.engine.support_statistics). So do masks, renormalization,
synchronized statistics, inputs other than 4-D channels-last float32 or
16-bit floats, and epsilons below the kernel's minimum. Under a mixed
precision policy the kernel takes the 16-bit activations and keeps its
statistics, scale and offset in float32, as the stock layer does.

Both contexts hold for the calling thread only: tf_maml installs one
`BatchNormalization.call` once, which runs the stock call unless a context
of this thread asks otherwise, so other threads (serving `adapt()`, say)
never see another thread's choice.
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
_install_lock = threading.Lock()


@contextlib.contextmanager
def _thread_setting(name, value):
    """Within: `_local.<name>` is `value` in this thread; the dispatcher installed."""
    with _install_lock:
        keras.layers.BatchNormalization.call = _dispatch
    before = getattr(_local, name, None)
    setattr(_local, name, value)
    try:
        yield
    finally:
        setattr(_local, name, before)


def stock_kernels():
    """Within this context (in this thread only), BatchNormalization never fuses."""
    return _thread_setting("stock", True)


def example_weights(weights):
    """Within (this thread only): training-mode BatchNormalization statistics ignore
    the examples whose weight is 0.

    Args:
        weights: `[examples]`, one weight per example along the first axis of
            every BatchNormalization input traced within; None: every example.
    """
    return _thread_setting("weights", weights)


def current_example_weights():
    """The weights of the innermost `example_weights` context of this thread, or None."""
    return getattr(_local, "weights", None)


def _example_mask(layer, inputs, weights, mask):
    """Keras' BatchNormalization mask (inputs' shape without the channel axis) from weights."""
    examples, rank = inputs.shape[0], len(inputs.shape)
    if examples is not None and weights.shape[0] is not None and examples != weights.shape[0]:
        raise ValueError(
            f"BatchNormalization layer {layer.name!r} sees {examples} examples but the "
            f"episode weights are for {weights.shape[0]}: per-example weights need layers "
            "whose first axis is the examples' (no reshaping of the example axis)."
        )
    if layer.axis % rank != rank - 1:
        raise ValueError(
            f"BatchNormalization layer {layer.name!r} normalizes axis {layer.axis}; padded "
            "episodes (per-example weights) need the channel axis last."
        )
    valid = tf.reshape(weights > 0, [-1] + [1] * (rank - 2))
    valid = tf.broadcast_to(valid, tf.shape(inputs)[:-1])
    return valid if mask is None else tf.logical_and(valid, tf.cast(mask, tf.bool))


def _dispatch(layer, inputs, training=None, mask=None):
    """`BatchNormalization.call`: stock unless this thread's contexts say otherwise."""
    weights = getattr(_local, "weights", None)
    if weights is not None and training and layer.trainable:
        mask = _example_mask(layer, inputs, weights, mask)
        return _STOCK_CALL(layer, inputs, training=training, mask=mask)
    if getattr(_local, "fused", None) and _fusable(layer, inputs, training, mask):
        return _fused_call(layer, inputs)
    return _STOCK_CALL(layer, inputs, training=training, mask=mask)


def _fusable(layer, inputs, training, mask):
    rank = len(inputs.shape)
    return (
        training and layer.trainable and mask is None
        and not getattr(_local, "stock", None)
        and not layer.renorm and not layer.synchronized
        and layer.momentum > 0
        and rank == 4 and layer.axis % rank == 3
        and keras.backend.result_type(inputs.dtype, "float32") == "float32"
        and layer.epsilon >= _MIN_EPSILON
    )


def _fused_call(layer, inputs):
    """`BatchNormalization.call` in training mode with one fused kernel."""
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


def fused_kernels(enabled=True, xla=False):
    """Within this context (this thread only), BatchNormalization layers traced on TF
    run fused where the kernel serves them.

    Args:
        enabled: whether to fuse at all.
        xla: whether the code traced inside is compiled with XLA; then nothing
            is fused, since XLA fuses the elementwise ops itself.
    """
    return _thread_setting("fused", enabled and not xla)
