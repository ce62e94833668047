"""Fused BatchNormalization computes what the stock layer computes, to any order MAML needs."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.keras_patches.exact_gradients import exact_second_order
from tf_maml.keras_patches.fused_batch_norm import fused_kernels

from helpers import as_float32, classification_episode, conv_bn_pool_net, sparse_ce
from helpers import assert_gradients_close, meta_gradient


@pytest.fixture
def fused_calls(monkeypatch):
    """The input dtype of each fused kernel traced."""
    calls = []
    stock = tf.compat.v1.nn.fused_batch_norm

    def counting(*args, **kwargs):
        calls.append(args[0].dtype)
        return stock(*args, **kwargs)

    monkeypatch.setattr(tf.compat.v1.nn, "fused_batch_norm", counting)
    return calls


def _net():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(momentum=0.5, center=False, scale=False),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


def _one_step_maml_stock_and_fused():
    """Outputs, new moving statistics and meta-gradient of one MAML step, stock and fused."""
    model = _net()
    rng = np.random.default_rng(0)
    x, query_x = (tf.constant(rng.standard_normal((6, 8, 8, 1)), tf.float32) for _ in range(2))
    y = tf.constant([0, 1, 2, 0, 1, 2])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    state = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]

    def one_step_maml(params):
        with tf.GradientTape() as outer:
            outer.watch(params)
            with tf.GradientTape() as inner:
                inner.watch(params)
                logits, new_state = model.stateless_call(params, state, x, training=True)
                loss = loss_fn(y, logits)
            fast = [p - 0.4 * g for p, g in zip(params, inner.gradient(loss, params))]
            query_logits, _ = model.stateless_call(fast, state, query_x, training=True)
            query_loss = loss_fn(y, query_logits)
        return logits, new_state, outer.gradient(query_loss, params)

    @tf.function
    def stock(params):
        with exact_second_order(xla=False):
            return one_step_maml(params)

    @tf.function
    def fused(params):
        with exact_second_order(xla=False), fused_kernels():
            return one_step_maml(params)

    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    return stock(params), fused(params)


def test_fused_forward_state_and_meta_gradient_match_stock(fused_calls):
    expected, actual = _one_step_maml_stock_and_fused()
    assert len(fused_calls) == 4  # both layers, support and query passes
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    for a, e in zip(actual[1], expected[1]):  # moving mean and (biased) variance
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert_gradients_close(actual[2], expected[2], rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_feeds_16_bit_activations_and_matches_stock(fused_calls, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        expected, actual = _one_step_maml_stock_and_fused()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    half = policy.removeprefix("mixed_")
    assert len(fused_calls) == 4 and all(dtype == half for dtype in fused_calls)
    # Both round the same float32 statistics to 16 bits; only rounding differs.
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-2, atol=1e-2)
    for a, e in zip(actual[1], expected[1]):  # float32 statistics of the same 16-bit inputs
        assert a.dtype == "float32"
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert_gradients_close(actual[2], expected[2], rtol=2e-2)


@pytest.mark.parametrize("transductive", [True, False])
def test_maml_meta_gradient_is_the_same_fused_or_not(fused_calls, transductive):
    """Non-transductive steps differentiate support statistics: those layers stay stock."""
    episode = as_float32(classification_episode(np.random.default_rng(4), tasks=2))
    keras.utils.set_random_seed(4)
    net = conv_bn_pool_net()
    weights = net.get_weights()
    actual = meta_gradient(
        tf_maml.MAML(net, inner_lr=0.4, inner_steps=2, transductive=transductive),
        episode, loss=sparse_ce(),
    )
    assert fused_calls, "the fused kernel was not used"
    fused_calls.clear()
    net.set_weights(weights)
    expected = meta_gradient(
        tf_maml.MAML(net, inner_lr=0.4, inner_steps=2, transductive=transductive,
                     fused_batch_norm=False),
        episode, loss=sparse_ce(),
    )
    assert not fused_calls
    assert_gradients_close(actual, expected, rtol=2e-5)


@pytest.mark.parametrize(
    "layer, shape, dtype",
    [
        (keras.layers.BatchNormalization(), (5, 3), "float32"),  # not 4-D
        (keras.layers.BatchNormalization(axis=1), (2, 3, 4, 4), "float32"),  # channels first
        (keras.layers.BatchNormalization(momentum=0.0), (2, 4, 4, 3), "float32"),
        (keras.layers.BatchNormalization(epsilon=1e-6), (2, 4, 4, 3), "float32"),
        (keras.layers.BatchNormalization(renorm=True), (2, 4, 4, 3), "float32"),
        (keras.layers.BatchNormalization(dtype="float64"), (2, 4, 4, 3), "float64"),
    ],
)
def test_layers_the_kernel_cannot_serve_keep_the_stock_path(fused_calls, layer, shape, dtype):
    x = tf.constant(np.random.default_rng(1).standard_normal(shape), dtype)
    layer.build(shape)
    state = [tf.convert_to_tensor(v) for v in layer.non_trainable_variables]
    params = [tf.convert_to_tensor(v) for v in layer.trainable_variables]

    @tf.function
    def run(fused):
        with fused_kernels(fused):
            return layer.stateless_call(params, state, x, training=True)

    expected = run(False)
    actual = run(True)
    assert not fused_calls
    np.testing.assert_array_equal(actual[0], expected[0])


def test_only_the_context_fuses_and_only_in_its_thread(fused_calls):
    layer = keras.layers.BatchNormalization()
    x = tf.constant(np.random.default_rng(1).standard_normal((4, 3, 3, 2)), tf.float32)
    layer.build(x.shape)
    values = ([tf.convert_to_tensor(v) for v in layer.trainable_variables],
              [tf.convert_to_tensor(v) for v in layer.non_trainable_variables])

    def traced_fuses():
        before = len(fused_calls)
        tf.function(lambda: layer.stateless_call(*values, x, training=True))()
        return len(fused_calls) > before

    with fused_kernels(xla=True):  # XLA fuses on its own
        assert not traced_fuses()
    with pytest.raises(RuntimeError):
        with fused_kernels():
            assert traced_fuses()
            other = []
            thread = threading.Thread(target=lambda: other.append(traced_fuses()))
            thread.start()
            thread.join()
            assert other == [False]  # another thread keeps the stock path
            raise RuntimeError
    assert not traced_fuses()
