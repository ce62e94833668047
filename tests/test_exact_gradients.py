"""The exact replacements compute what the stock ops compute."""

import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import nn as tf_backend_nn

from tf_maml.keras_patches.exact_gradients import _STOCK_MAX_POOL, exact_second_order, max_pool_by_slices


@pytest.mark.parametrize(
    "shape, pool, strides, padding, data_format",
    [
        ((2, 8, 8, 3), 2, None, "valid", "channels_last"),
        ((2, 7, 9, 3), 3, 2, "valid", "channels_last"),
        ((2, 7, 9, 3), (3, 2), (1, 2), "same", "channels_last"),
        ((2, 3, 6, 6), 2, None, "same", "channels_first"),
        ((2, 11, 4), 3, 2, "same", "channels_last"),
    ],
)
def test_max_pool_by_slices_matches_stock_values_and_gradients(
    shape, pool, strides, padding, data_format
):
    x = tf.constant(np.random.default_rng(0).standard_normal(shape), tf.float32)
    weights = tf.constant(np.random.default_rng(1).standard_normal((1000,)), tf.float32)

    def forward_and_gradient(pool_fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pool_fn(x, pool, strides, padding, data_format)
            flat = tf.reshape(y, [-1])
            loss = tf.reduce_sum(flat * weights[: flat.shape[0]])
        return y, tape.gradient(loss, x)

    expected_y, expected_grad = forward_and_gradient(_STOCK_MAX_POOL)
    y, grad = forward_and_gradient(max_pool_by_slices)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)


def test_context_swaps_the_backend_functions_and_restores_them():
    moments, max_pool = tf_backend_nn._compute_moments, tf_backend_nn.max_pool
    with exact_second_order(xla=False):
        assert tf_backend_nn._compute_moments is not moments
        assert tf_backend_nn.max_pool is max_pool
        with exact_second_order(xla=True):
            assert tf_backend_nn.max_pool is max_pool_by_slices
        assert tf_backend_nn.max_pool is max_pool
    assert (tf_backend_nn._compute_moments, tf_backend_nn.max_pool) == (moments, max_pool)
    with pytest.raises(KeyError):
        with exact_second_order(xla=True):
            raise KeyError("restored on errors too")
    assert (tf_backend_nn._compute_moments, tf_backend_nn.max_pool) == (moments, max_pool)


def test_exact_moments_match_stock_moments():
    x = tf.constant(np.random.default_rng(0).standard_normal((4, 5, 5, 3)), tf.float32)
    expected = tf_backend_nn.moments(x, axes=[0, 1, 2])
    with exact_second_order(xla=False):
        actual = tf_backend_nn.moments(x, axes=[0, 1, 2])
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
