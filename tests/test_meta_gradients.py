"""Meta-gradients against a closed form and against finite differences.

The meta-gradient is read off one real `train_on_batch` with SGD of step 1
(weights before minus after), so the checked path is the one `fit` runs.
The meta-loss is read off `test_on_batch`, which adapts with the same steps
and reports the mean post-adaptation query loss.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml import learners

from conftest import precision
from helpers import (
    as_float32, assert_directional_derivatives_match, assert_gradients_close,
    classification_episode, conv_bn_pool_net, finite_difference_gradient, linear_model,
    meta_gradient, regression_episode, sparse_ce, tanh_mlp,
)


def closed_form_linear_meta_gradient(w, episode, inner_lr, steps, first_order, l2=0.0):
    """MAML on y = x . w with mean squared error (+ l2 ||w||^2), in closed form."""
    (support_x, support_y), (query_x, query_y) = episode
    grads = []
    for xs, ys, xq, yq in zip(support_x, support_y, query_x, query_y):
        hessian = 2.0 / len(xs) * xs.T @ xs + 2.0 * l2 * np.eye(len(w))
        fast = w.copy()
        for _ in range(steps):
            fast = fast - inner_lr * (2.0 / len(xs) * xs.T @ (xs @ fast - ys) + 2.0 * l2 * fast)
        query_grad = 2.0 / len(xq) * xq.T @ (xq @ fast - yq) + 2.0 * l2 * fast
        jacobian = np.linalg.matrix_power(np.eye(len(w)) - inner_lr * hessian, steps)
        grads.append(query_grad if first_order else jacobian.T @ query_grad)
    return np.mean(grads, axis=0)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_linear_regression_meta_gradient_matches_closed_form(float64, steps, first_order):
    episode = regression_episode(np.random.default_rng(1))
    maml = tf_maml.MAML(linear_model(4), inner_lr=0.1, inner_steps=steps, first_order=first_order)
    w = maml.model.trainable_variables[0].numpy()
    expected = closed_form_linear_meta_gradient(w, episode, 0.1, steps, first_order)
    (actual,) = meta_gradient(maml, episode)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_weight_regularization_enters_inner_and_outer_losses(float64):
    episode = regression_episode(np.random.default_rng(7))
    # 0.25: Keras casts the L2 factor through float32, so pick one it keeps exact.
    maml = tf_maml.MAML(linear_model(4, l2=0.25), inner_lr=0.1, inner_steps=2)
    w = maml.model.trainable_variables[0].numpy()
    expected = closed_form_linear_meta_gradient(w, episode, 0.1, 2, False, l2=0.25)
    (actual,) = meta_gradient(maml, episode)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_second_order_differs_from_first_order(float64):
    episode = regression_episode(np.random.default_rng(2))
    w = linear_model(4).trainable_variables[0].numpy()
    second = closed_form_linear_meta_gradient(w, episode, 0.1, 2, first_order=False)
    first = closed_form_linear_meta_gradient(w, episode, 0.1, 2, first_order=True)
    assert np.abs(second - first).max() > 0.05 * np.abs(second).max()
    grads = {}
    for order in (False, True):
        maml = tf_maml.MAML(linear_model(4), inner_lr=0.1, inner_steps=2, first_order=order)
        maml.model.set_weights([w])
        (grads[order],) = meta_gradient(maml, episode)
    np.testing.assert_allclose(grads[False], second, rtol=1e-10)
    np.testing.assert_allclose(grads[True], first, rtol=1e-10)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_mlp_second_order_meta_gradient_matches_finite_differences(float64, jit_compile):
    episode = regression_episode(np.random.default_rng(3))
    maml = tf_maml.MAML(tanh_mlp(), inner_lr=0.3, inner_steps=2)
    actual = meta_gradient(maml, episode, jit_compile=jit_compile)
    assert_gradients_close(actual, finite_difference_gradient(maml, episode))


def test_first_order_meta_gradient_is_query_gradient_at_adapted_weights(float64):
    episode = regression_episode(np.random.default_rng(4))
    maml = tf_maml.FOMAML(tanh_mlp(), inner_lr=0.3, inner_steps=2)
    actual = meta_gradient(maml, episode)
    (support_x, support_y), (query_x, query_y) = episode
    per_task = []
    for t in range(len(support_x)):
        adapted = maml.adapt(support_x[t], support_y[t])
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(query_y[t], adapted(query_x[t]))
            loss = tf.reduce_mean(loss)
        per_task.append([g.numpy() for g in tape.gradient(loss, adapted.trainable_variables)])
    expected = [np.mean(gs, axis=0) for gs in zip(*per_task)]
    assert_gradients_close(actual, expected, rtol=1e-10)


_FINITE_DIFFERENCES = {}


def shared_finite_difference_gradient(maml, episode, loss):
    """`finite_difference_gradient`, computed once for the tests that start from the same point.

    Keyed by the weights, episode and inner loop: the tests build the same
    seeded net, and per-weight differences of it take about 15 s.
    """
    key = (maml.inner_steps, maml.transductive,
           b"".join(a.tobytes() for a in maml.get_weights() + [a for pair in episode for a in pair]))
    if key not in _FINITE_DIFFERENCES:
        _FINITE_DIFFERENCES[key] = finite_difference_gradient(maml, episode, loss=loss)
    return _FINITE_DIFFERENCES[key]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_conv_batchnorm_maxpool_meta_gradient_matches_finite_differences(float64, jit_compile):
    """Every entry of the meta-gradient against per-weight central differences."""
    episode = classification_episode(np.random.default_rng(5))
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, inner_steps=1)
    expected = shared_finite_difference_gradient(maml, episode, sparse_ce())
    actual = meta_gradient(maml, episode, jit_compile=jit_compile, loss=sparse_ce())
    assert_gradients_close(actual, expected)


@pytest.mark.parametrize("jit_compile, transductive", [(True, True), (False, False)])
def test_conv_batchnorm_maxpool_two_steps_match_finite_differences(
    float64, jit_compile, transductive
):
    """Two inner steps, along random directions (two evaluations each, not two per weight)."""
    episode = classification_episode(np.random.default_rng(5))
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, inner_steps=2, transductive=transductive)
    assert_directional_derivatives_match(
        maml, episode, directions=4, loss=sparse_ce(), jit_compile=jit_compile
    )


def test_stock_batchnorm_second_derivative_is_wrong(float64, monkeypatch):
    """Guards the test above: without the exact ops, it would fail."""
    episode = classification_episode(np.random.default_rng(5))
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, inner_steps=1)
    expected = shared_finite_difference_gradient(maml, episode, sparse_ce())
    monkeypatch.setattr(learners.base, "exact_second_order", lambda xla: contextlib.nullcontext())
    actual = meta_gradient(maml, episode, loss=sparse_ce())
    scale = max(np.abs(g).max() for g in expected)
    error = max(np.abs(a - e).max() for a, e in zip(actual, expected))
    assert error > 1e-3 * scale


@pytest.mark.parametrize("jit_compile", [False, True])
def test_float32_conv4_meta_gradient_matches_float64_reference(jit_compile):
    """The papers' backbone at 28x28 in float32, graph and XLA.

    Reference: the float64 graph-mode meta-gradient, which the finite
    difference tests above verify on a smaller net of the same layers.
    (Stock XLA max-pooling has no exact second derivative: see
    tf_maml.keras_patches.exact_gradients.)
    """
    episode = classification_episode(
        np.random.default_rng(6), tasks=4, ways=5, shots=1, queries=2, image=(28, 28, 1)
    )
    maml32 = tf_maml.MAML(tf_maml.nets.conv4(5, filters=8), inner_lr=0.4, inner_steps=1)
    assert maml32.model.weights[0].dtype == "float32"
    with precision("float64"):
        maml64 = tf_maml.MAML(tf_maml.nets.conv4(5, filters=8), inner_lr=0.4, inner_steps=1)
        assert maml64.model.weights[0].dtype == "float64"
        maml64.model.set_weights([w.astype(np.float64) for w in maml32.model.get_weights()])
        expected = meta_gradient(maml64, episode, loss=sparse_ce())
    episode32 = as_float32(episode)
    actual = meta_gradient(maml32, episode32, jit_compile=jit_compile, loss=sparse_ce())
    assert_gradients_close(actual, expected, rtol=1e-4)
