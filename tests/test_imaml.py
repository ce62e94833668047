"""iMAML: the implicit meta-gradient, against the closed form and finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml import rules
from tf_maml.engine.conjugate_gradient import conjugate_gradient

from helpers import (
    assert_directional_derivatives_match, linear_model, meta_gradient, regression_episode,
    tanh_mlp,
)


def test_imaml_meta_gradient_matches_the_closed_form_on_linear_regression(float64):
    """Converged proximal inner loop: phi* = (H + lam I)^-1 (lam w + 2/n X^T y), and the
    meta-gradient of the query loss at phi* is (I + H / lam)^-1 g_query(phi*)."""
    episode = regression_episode(np.random.default_rng(21))
    lam = 2.0
    imaml = tf_maml.IMAML(linear_model(4), inner_lr=0.1, inner_steps=150, proximal_weight=lam,
                          cg_steps=6)
    w = imaml.model.trainable_variables[0].numpy()
    (support_x, support_y), (query_x, query_y) = episode
    expected, adapted = [], []
    for xs, ys, xq, yq in zip(support_x, support_y, query_x, query_y):
        hessian = 2.0 / len(xs) * xs.T @ xs
        fast = np.linalg.solve(hessian + lam * np.eye(4), lam * w + 2.0 / len(xs) * xs.T @ ys)
        query_grad = 2.0 / len(xq) * xq.T @ (xq @ fast - yq)
        expected.append(np.linalg.solve(np.eye(4) + hessian / lam, query_grad))
        adapted.append(fast)
    (actual,) = meta_gradient(imaml, episode)
    np.testing.assert_allclose(actual, np.mean(expected, axis=0), rtol=1e-10)
    # The inner loop reached phi*, which the served model holds.
    served = imaml.adapt(support_x[0], support_y[0])
    np.testing.assert_allclose(served.trainable_variables[0].numpy(), adapted[0], rtol=1e-10)
    # The implicit correction matters: the query gradient at phi* alone (first order) is off.
    first_order = np.mean([2.0 / len(xq) * xq.T @ (xq @ fast - yq)
                           for fast, xq, yq in zip(adapted, query_x, query_y)], axis=0)
    assert np.abs(first_order - actual).max() > 1e-2


def test_imaml_gradient_of_weights_a_masked_rule_keeps_fixed_matches_finite_differences(
        float64):
    """The body is fixed within a task, the head's inner problem is convex: the implicit
    gradient is exact for both, and equals the derivative of the converged query loss."""
    episode = regression_episode(np.random.default_rng(22))
    net = tanh_mlp()
    head = net.layers[-1].name
    imaml = tf_maml.IMAML(net, inner_steps=100, proximal_weight=1.0, cg_steps=8,
                          inner_optimizer=rules.masked(rules.sgd(0.2), adapted=[head]))
    assert imaml.inner_loop.adapted == [4, 5]
    assert_directional_derivatives_match(imaml, episode, rtol=1e-7)


def test_conjugate_gradient_solves_a_symmetric_system_and_stops_at_zero_residual(float64):
    rng = np.random.default_rng(23)
    m = rng.standard_normal((5, 5))
    a = m @ m.T + np.eye(5)
    b = rng.standard_normal(5)
    x = conjugate_gradient(lambda v: [tf.linalg.matvec(a, v[0])], [tf.constant(b)], 5)[0]
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-8)
    # 2 I: solved exactly by the first iteration; the next ones meet a zero residual
    # (0 / 0 without divide_no_nan) and keep the solution.
    x = conjugate_gradient(lambda v: [2.0 * v[0]], [tf.constant(b)], 3)[0]
    np.testing.assert_array_equal(x.numpy(), b / 2.0)


def test_imaml_is_a_proximal_rule_saved_and_refuses_what_it_cannot_honour(tmp_path):
    imaml = tf_maml.IMAML(tanh_mlp(), inner_optimizer=rules.adam(0.01), inner_steps=3,
                          proximal_weight=0.5, cg_steps=2)
    assert repr(imaml.inner_optimizer).startswith("chain(Proximal(weight=0.5), Adam(")
    imaml.compile(optimizer="adam", loss="mse")
    episode = tuple(tuple(a.astype(np.float32) for a in pair)
                    for pair in regression_episode(np.random.default_rng(24)))
    imaml.train_on_batch(*episode)
    imaml.proximal_weight = 3.0  # applies from the next call
    assert imaml.inner_optimizer.rules[0].weight == 3.0
    imaml.inner_optimizer = rules.sgd(0.1)  # keeps the proximal term
    assert repr(imaml.inner_optimizer) == "chain(Proximal(weight=3.0), SGD(learning_rate=0.1))"
    imaml.save(tmp_path / "imaml.keras")
    loaded = keras.models.load_model(tmp_path / "imaml.keras")
    assert type(loaded) is tf_maml.IMAML
    assert (loaded.proximal_weight, loaded.cg_steps, loaded.inner_steps) == (3.0, 2, 3)
    assert repr(loaded.inner_optimizer) == repr(imaml.inner_optimizer)
    for name in ("first_order", "recompute_inner_steps"):
        with pytest.raises(ValueError, match=f"IMAML does not take `{name}`"):
            tf_maml.IMAML(tanh_mlp(), **{name: True})
        with pytest.raises(AttributeError, match=f"`{name}` of IMAML is fixed"):
            setattr(imaml, name, not getattr(imaml, name))
    with pytest.raises(ValueError, match="`proximal_weight` must be a positive number"):
        tf_maml.IMAML(tanh_mlp(), proximal_weight=0)
    with pytest.raises(ValueError, match="`cg_steps` must be an integer >= 1"):
        tf_maml.IMAML(tanh_mlp(), cg_steps=0)
    learned = tf_maml.IMAML(tanh_mlp(), inner_optimizer=rules.meta_sgd(0.1))
    learned.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="has learned variables; the implicit meta-gradient"):
        learned.train_on_batch(*episode)


def test_residual_script_measures_the_distance_to_the_proximal_minimizer():
    """scripts/imaml_residual.py: the proximal objective's gradient norm at the adapted
    weights falls to 0 as a convergent inner loop reaches phi*, and not with a step size
    past the stability limit (as on Omniglot, docs/results.md)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "imaml_residual.py")
    spec = importlib.util.spec_from_file_location("imaml_residual", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (support_x, support_y), _ = regression_episode(np.random.default_rng(3))
    for inner_lr, converges in ((0.1, True), (1.2, False)):
        imaml = tf_maml.IMAML(linear_model(4), inner_lr=inner_lr, inner_steps=5,
                              proximal_weight=2.0)
        imaml.compile(optimizer="sgd", loss="mse")
        start, offset = script.residuals(imaml, support_x[0], support_y[0], 0)
        end, distance = script.residuals(imaml, support_x[0], support_y[0], 20 if converges else 10)
        assert offset == 0 and distance > 0
        assert (end < 1e-3 * start) == converges and (end > start) != converges, (start, end)
    # The implicit meta-gradient is the unrolled one once the inner loop converges.
    imaml = tf_maml.IMAML(linear_model(4), inner_lr=0.1, inner_steps=5, proximal_weight=2.0)
    imaml.compile(optimizer="sgd", loss="mse")
    episode = regression_episode(np.random.default_rng(4))
    converged = script.against_unrolled(imaml, episode, 0.1, 150)
    early = script.against_unrolled(imaml, episode, 0.1, 2)
    (cosine, norm), (_, exact) = (converged[name] for name in (
        "implicit (iMAML)", "unrolled (MAML, second order)"))
    assert cosine > 0.9999 and norm == pytest.approx(exact, rel=1e-3), converged
    (_, norm), (_, exact) = (early[name] for name in (
        "implicit (iMAML)", "unrolled (MAML, second order)"))
    assert abs(norm / exact - 1) > 0.1, early  # two steps: far from phi*
    assert imaml.inner_steps == 5 and imaml.inner_optimizer.rules[1].learning_rate == 0.1
