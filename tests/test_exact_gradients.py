"""The exact replacements compute what the stock ops compute."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import nn as tf_backend_nn

from tf_maml.keras_patches import exact_gradients
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


def variance_curvature_along_ones():
    """The Hessian of the variance of x (via Keras' moments) times the ones vector: 0
    exactly (the variance ignores shifts); the stock ops, whose gradient graph holds the
    mean constant, give 2 / n."""
    x = tf.constant(np.random.default_rng(0).standard_normal(6), tf.float64)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            variance = keras.ops.moments(x, axes=[0])[1]
        directional = tf.reduce_sum(inner.gradient(variance, x))
    return outer.gradient(directional, x).numpy()


def test_exact_ops_hold_for_the_calling_thread_only():
    """Contexts of several threads interleave without effect on each other: a thread whose
    context is open computes exactly while another opens and closes its own; a thread
    outside any context gets the stock ops meanwhile; errors close the context too."""
    stock = variance_curvature_along_ones()
    assert np.abs(stock).min() > 0.3
    opened, other_closed, done = threading.Event(), threading.Event(), threading.Event()
    results = {}

    def first():
        with exact_second_order(xla=False):
            opened.set()
            other_closed.wait(30)  # the other thread entered and left meanwhile
            results["first"] = variance_curvature_along_ones()
        done.set()

    def second():
        opened.wait(30)
        with exact_second_order(xla=True):
            results["second"] = variance_curvature_along_ones()
        results["outside"] = variance_curvature_along_ones()
        other_closed.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    np.testing.assert_allclose(results["first"], 0.0, atol=1e-12)
    np.testing.assert_allclose(results["second"], 0.0, atol=1e-12)
    np.testing.assert_allclose(results["outside"], stock)
    with pytest.raises(KeyError):
        with exact_second_order(xla=True):
            assert tf_backend_nn.max_pool(tf.ones([1, 2, 2, 1]), 2, 2, "valid", None).shape
            raise KeyError("closed on errors too")
    assert exact_gradients.active() is None
    np.testing.assert_allclose(variance_curvature_along_ones(), stock)


def test_exact_moments_match_stock_moments():
    x = tf.constant(np.random.default_rng(0).standard_normal((4, 5, 5, 3)), tf.float32)
    expected = tf_backend_nn.moments(x, axes=[0, 1, 2])
    with exact_second_order(xla=False):
        actual = tf_backend_nn.moments(x, axes=[0, 1, 2])
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_layer_normalization_needs_no_patch(float64):
    """The stock ops' second derivative is already exact for LayerNormalization (the mean
    is over features, whose deviations sum to zero), as docs/concepts.md says."""
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5),
                              keras.layers.LayerNormalization(), keras.layers.Dense(2)])
    x, y = (tf.constant(rng.standard_normal(shape)) for shape in ((4, 3), (4, 2)))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]

    def meta_gradient():
        def loss(weights):
            return tf.reduce_mean((model.stateless_call(weights, [], x)[0] - y) ** 2)

        with tf.GradientTape() as outer:
            outer.watch(params)
            with tf.GradientTape() as inner:
                inner.watch(params)
                support_loss = loss(params)
            fast = [p - 0.5 * g for p, g in zip(params, inner.gradient(support_loss, params))]
            query_loss = loss(fast)
        return outer.gradient(query_loss, params)

    stock = meta_gradient()
    with exact_second_order(xla=False):
        exact = meta_gradient()
    for s, e in zip(stock, exact):
        np.testing.assert_allclose(s, e, rtol=1e-12, atol=1e-13)


def test_two_threads_tracing_meta_steps_at_once_get_exact_meta_gradients():
    """Two meta-learners (BatchNorm, second order) traced in two threads started together
    give the meta-gradients of the same steps traced one after the other."""
    from helpers import classification_episode, conv_bn_pool_net, meta_gradient, sparse_ce

    import tf_maml

    episode = classification_episode(np.random.default_rng(3))
    episode = tuple(tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in pair)
                    for pair in episode)
    metas = [tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4) for _ in range(3)]
    for meta in metas[1:]:
        meta.model.set_weights(metas[0].model.get_weights())
    expected = meta_gradient(metas.pop(), episode, loss=sparse_ce())
    start, results = threading.Barrier(2), {}

    def run(index):
        start.wait(30)
        results[index] = meta_gradient(metas[index], episode, loss=sparse_ce())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for index in range(2):
        for actual, reference in zip(results[index], expected):
            np.testing.assert_allclose(actual, reference, rtol=1e-4, atol=1e-6)
