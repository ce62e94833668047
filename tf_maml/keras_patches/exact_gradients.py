"""Exact second derivatives for stock Keras layers on the TensorFlow backend.

Second-order MAML differentiates through gradients, so every op's gradient
graph must itself be differentiable exactly. Two stock Keras 3 / TF paths are
not, although their first derivatives are right:

1. `BatchNormalization` computes the variance with `tf.nn.moments`, which
   reads the mean through `stop_gradient`. d var / d mean is zero, so first
   derivatives are unaffected, but the gradient graph then treats the mean as
   a constant and a term of the second derivative is lost (the peer gradient
   checks of ../shared/bench/peers measured errors of 1.2 on entries up to
   2.3 for the Omniglot conv net).
2. Under XLA, the second derivative of `tf.nn.max_pool` (MaxPoolGradGrad) is
   inexact (about 4% there) or, inside tf_maml's task loop, does not compile.
3. On a GPU, `LSTM` and `GRU` run cuDNN's kernels by default, whose gradient
   has no gradient of its own.
4. Under XLA, TensorFlow's gradient of a slice (of a concatenation's
   gradient, say) is an `XlaDynamicUpdateSlice`, which has no gradient:
   third derivatives (TRPO's Fisher-vector products through an inner step)
   failed. Its gradient is registered below, once, for every thread (an op
   without a gradient has no other behaviour to keep), with TensorFlow's
   private XLA op wrapper (`gen_xla_ops`), kept to this module.

Within `exact_second_order()` these backend functions are replaced, for the
calling thread only, by formulations whose gradient graphs differentiate
exactly: the
variance without `stop_gradient`, max-pooling as an elementwise maximum over
strided slices, and for recurrent layers Keras' own generic kernel (a
`tf.while_loop` of the cell, which Keras falls back to when the cuDNN path
declines). The forward results are the same up to float rounding, and the
user's model is used unchanged. The backend functions are replaced once by
dispatchers that run the stock function unless a context of the calling
thread asks otherwise, so one thread tracing a meta-step never changes what
another thread traces (as `fused_batch_norm` does for BatchNormalization).
(The cuDNN case is untested: no GPU here;
tests/test_sequence_models.py checks it with a GPU pretended.)
"""

import contextlib
import functools
import itertools
import math
import threading

import tensorflow as tf
from keras.src import backend as keras_backend
from tensorflow.compiler.tf2xla.ops import gen_xla_ops
from keras.src.backend.tensorflow import nn as tf_backend_nn


def _exact_moments(x, axes, keepdims):
    """Mean and biased variance, differentiable to any order."""
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axes, keepdims=True)
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        variance = tf.squeeze(variance, axes)
    return mean, variance


def _as_tuple(value, rank):
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def max_pool_by_slices(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Max-pooling as a maximum over strided slices.

    Same signature and result as the Keras TensorFlow backend's `max_pool`.
    Its gradients are `Maximum` gradients (selects), which XLA differentiates
    again exactly. Falls back to `tf.nn.max_pool` when spatial sizes are not
    static.
    """
    channels_first = keras_backend.standardize_data_format(data_format) == "channels_first"
    x = tf_backend_nn._transpose_spatial_inputs(inputs) if channels_first else inputs
    rank = len(x.shape) - 2
    pool = _as_tuple(pool_size, rank)
    strides = pool if strides is None else _as_tuple(strides, rank)
    sizes = x.shape[1:-1]
    if any(size is None for size in sizes):
        return _STOCK_MAX_POOL(inputs, pool_size, strides, padding, data_format)

    if padding.lower() == "same":
        pads, padded_sizes = [], []
        for size, window, stride in zip(sizes, pool, strides):
            total = max((math.ceil(size / stride) - 1) * stride + window - size, 0)
            pads.append([total // 2, total - total // 2])
            padded_sizes.append(size + total)
        # Padding with the lowest finite value never wins a maximum (as in
        # tf.nn.max_pool) and keeps gradients free of inf * 0.
        x = tf.pad(x, [[0, 0]] + pads + [[0, 0]], constant_values=x.dtype.min)
        sizes = padded_sizes

    out_sizes = [(size - window) // stride + 1 for size, window, stride in zip(sizes, pool, strides)]
    windows = []
    for offset in itertools.product(*(range(window) for window in pool)):
        index = [slice(None)]
        index += [slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out_sizes)]
        windows.append(x[tuple(index + [slice(None)])])
    outputs = functools.reduce(tf.maximum, windows)
    return tf_backend_nn._transpose_spatial_outputs(outputs) if channels_first else outputs


_STOCK_MAX_POOL = tf_backend_nn.max_pool


def _decline_cudnn(*args, **kwargs):
    """In place of the backend's cuDNN LSTM/GRU: Keras then runs its generic kernel."""
    raise NotImplementedError


_STOCK_MOMENTS = tf_backend_nn._compute_moments
_STOCK_LSTM, _STOCK_GRU = keras_backend.lstm, keras_backend.gru
# Per thread: None outside any context, else whether XLA compiles what is traced.
_local = threading.local()
_install_lock = threading.Lock()


def _xla_mode():
    return getattr(_local, "xla", None)


def _moments(x, axes, keepdims):
    if _xla_mode() is None:
        return _STOCK_MOMENTS(x, axes, keepdims)
    return _exact_moments(x, axes, keepdims)


def _max_pool(*args, **kwargs):
    if _xla_mode():
        return max_pool_by_slices(*args, **kwargs)
    return _STOCK_MAX_POOL(*args, **kwargs)


def _recurrent(stock):
    def dispatch(*args, **kwargs):
        if _xla_mode() is None:
            return stock(*args, **kwargs)
        return _decline_cudnn(*args, **kwargs)

    return dispatch


_DISPATCHERS = (
    (tf_backend_nn, "_compute_moments", _moments),
    (tf_backend_nn, "max_pool", _max_pool),
    (keras_backend, "lstm", _recurrent(_STOCK_LSTM)),
    (keras_backend, "gru", _recurrent(_STOCK_GRU)),
)


def _dynamic_update_slice_gradient(op, grad):
    """`XlaDynamicUpdateSlice(input, update, indices)`: the gradient outside the written
    block flows to `input`, inside it to `update`. XLA clamps the start so the block fits;
    so does this."""
    input_, update, indices = op.inputs
    size = tf.shape(update, out_type=indices.dtype)
    start = tf.clip_by_value(indices, tf.zeros_like(indices),
                             tf.shape(input_, out_type=indices.dtype) - size)
    input_grad = gen_xla_ops.xla_dynamic_update_slice(grad, tf.zeros_like(update), start)
    return input_grad, tf.slice(grad, start, size), None


def _register_dynamic_update_slice_gradient():
    try:
        tf.RegisterGradient("XlaDynamicUpdateSlice")(_dynamic_update_slice_gradient)
    except KeyError:  # registered already (by TensorFlow, in a later release)
        pass


_register_dynamic_update_slice_gradient()


def _install():
    """Puts the dispatchers in place of the backend functions, once (stock by default)."""
    with _install_lock:
        if all(getattr(module, name) is d for module, name, d in _DISPATCHERS):
            return
        for module, name, dispatcher in _DISPATCHERS:
            setattr(module, name, dispatcher)


def active():
    """Whether the calling thread is inside `exact_second_order`: None if not, else its `xla`."""
    return _xla_mode()


@contextlib.contextmanager
def exact_second_order(xla):
    """Within this context, Keras layers traced on TF in this thread have exact second derivatives.

    Other threads are not affected: they trace the stock ops unless they
    enter the context themselves.

    Args:
        xla: whether the code traced inside is compiled with XLA; max-pooling
            is only replaced there, since without XLA the stock op is exact
            and faster.

    Example:

    ```python
    with exact_second_order(xla=True):
        step = tf.function(meta_step, jit_compile=True)
        step(batch)  # traced here, with the exact ops
    ```
    """
    _install()
    before = _xla_mode()
    _local.xla = bool(xla)
    try:
        yield
    finally:
        _local.xla = before
