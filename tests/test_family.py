"""The MAML family: each member's defining property."""

import keras
import tensorflow as tf
import numpy as np
import pytest

import tf_maml

from helpers import as_float32, classification_episode, conv_bn_pool_net, regression_episode, sparse_ce
from helpers import (
    assert_directional_derivatives_match,
    assert_export_serves_like_adapt,
    assert_gradients_close,
    finite_difference_gradient,
    linear_model,
    meta_gradient,
    tanh_mlp,
)


# ---------------------------------------------------------------- Meta-SGD


def test_meta_sgd_gradients_match_closed_form(float64):
    """Linear regression, one step: w' = w - a * grad_s(w), elementwise a."""
    episode = regression_episode(np.random.default_rng(11))
    meta_sgd = tf_maml.MetaSGD(linear_model(4), inner_lr=0.1)
    w = meta_sgd.model.trainable_variables[0].numpy()
    rates = np.random.default_rng(12).uniform(0.05, 0.2, w.shape)
    meta_sgd.inner_lrs[0].assign(rates)
    (support_x, support_y), (query_x, query_y) = episode
    grad_w, grad_a = [], []
    for xs, ys, xq, yq in zip(support_x, support_y, query_x, query_y):
        support_grad = 2.0 / len(xs) * xs.T @ (xs @ w - ys)
        fast = w - rates * support_grad
        query_grad = 2.0 / len(xq) * xq.T @ (xq @ fast - yq)
        hessian = 2.0 / len(xs) * xs.T @ xs
        grad_w.append((np.eye(4) - np.diag(rates[:, 0]) @ hessian).T @ query_grad)
        grad_a.append(-query_grad * support_grad)
    grads = dict(zip(map(id, meta_sgd.trainable_variables), meta_gradient(meta_sgd, episode)))
    np.testing.assert_allclose(grads[id(meta_sgd.model.trainable_variables[0])],
                               np.mean(grad_w, axis=0), rtol=1e-10)
    np.testing.assert_allclose(grads[id(meta_sgd.inner_lrs[0])], np.mean(grad_a, axis=0),
                               rtol=1e-10)


def test_meta_sgd_step_size_gradient_matches_finite_differences(float64):
    episode = regression_episode(np.random.default_rng(13))
    meta_sgd = tf_maml.MetaSGD(tanh_mlp(), inner_lr=0.2, inner_steps=2)
    assert len(meta_sgd.trainable_variables) == 2 * len(meta_sgd.model.trainable_variables)
    actual = meta_gradient(meta_sgd, episode)
    assert_gradients_close(actual, finite_difference_gradient(meta_sgd, episode))


def test_meta_sgd_learns_step_sizes_and_saves_them(tmp_path):
    meta_sgd = tf_maml.MetaSGD(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.05)
    meta_sgd.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    meta_sgd.fit(tf_maml.data.sinusoid_episodes(meta_batch_size=4, num_batches=5), verbose=0)
    rates = [v.numpy() for v in meta_sgd.inner_lrs]
    assert any(np.abs(r - 0.05).max() > 1e-3 for r in rates)
    meta_sgd.save(tmp_path / "meta_sgd.keras")
    loaded = keras.models.load_model(tmp_path / "meta_sgd.keras")
    assert isinstance(loaded, tf_maml.MetaSGD)
    for a, b in zip(rates, loaded.inner_lrs):
        np.testing.assert_array_equal(a, b.numpy())
    # Optimizer slots belong to the same variables: training on gives the same weights.
    more = tf_maml.data.sinusoid_episodes(meta_batch_size=4, num_batches=2, seed=9)
    meta_sgd.fit(more, verbose=0)
    loaded.fit(more, verbose=0)
    for a, b in zip(meta_sgd.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- ANIL


def test_anil_adapts_only_the_head():
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=2))
    anil = tf_maml.ANIL(conv_bn_pool_net(), inner_lr=0.4, eval_inner_steps=3)
    anil.compile(optimizer="adam", loss=sparse_ce())
    anil.fit(*episode, batch_size=2, verbose=0)
    (support_x, support_y), _ = episode
    adapted = anil.adapt(support_x[0], support_y[0])
    head = anil.model.layers[-1]
    for layer, adapted_layer in zip(anil.model.layers, adapted.layers):
        for v, a in zip(layer.trainable_variables, adapted_layer.trainable_variables):
            if layer is head:
                assert np.abs(v.numpy() - a.numpy()).max() > 1e-4
            else:
                np.testing.assert_array_equal(v.numpy(), a.numpy())


@pytest.mark.parametrize("member", ["ANIL", "BOIL"])
def test_masked_members_meta_gradients_match_finite_differences(float64, member):
    episode = regression_episode(np.random.default_rng(14))
    meta = getattr(tf_maml, member)(tanh_mlp(), inner_lr=0.3, inner_steps=2)
    actual = meta_gradient(meta, episode)
    # The layers that do not adapt (ANIL's body, BOIL's head) are meta-trained too.
    assert all(np.abs(g).max() > 0 for g in actual)
    assert_gradients_close(actual, finite_difference_gradient(meta, episode))


def test_anil_layer_selection_by_name_and_predicate(tmp_path):
    model = tanh_mlp()
    names = [layer.name for layer in model.layers]
    by_name = tf_maml.ANIL(model, adapted_layers=names[:2])
    assert by_name.inner_loop.adapted == [0, 1, 2, 3]
    by_predicate = tf_maml.ANIL(model, adapted_layers=lambda layer: layer.name == names[1])
    assert by_predicate.inner_loop.adapted == [2, 3]
    assert tf_maml.ANIL(model).inner_loop.adapted == [4, 5]
    by_name.compile(optimizer="adam", loss="mse")
    by_name.save(tmp_path / "anil.keras")
    assert keras.models.load_model(tmp_path / "anil.keras").adapted_layers == names[:2]
    with pytest.raises(ValueError, match="cannot be saved; pass layer names"):
        by_predicate.get_config()


def test_anil_unknown_layer_is_rejected():
    with pytest.raises(ValueError, match=r"names layers not in .*\['nope'\]"):
        tf_maml.ANIL(tanh_mlp(), adapted_layers=["nope"])


# ---------------------------------------------------------------- BOIL


def test_boil_adapts_all_but_the_head():
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=2))
    boil = tf_maml.BOIL(conv_bn_pool_net(), inner_lr=0.4, eval_inner_steps=3)
    boil.compile(optimizer="adam", loss=sparse_ce())
    head_before = [v.numpy().copy() for v in boil.model.layers[-1].trainable_variables]
    boil.fit(*episode, batch_size=2, verbose=0)
    head = boil.model.layers[-1]
    # The head is meta-trained by the outer update...
    assert any(np.abs(v.numpy() - b).max() > 0
               for v, b in zip(head.trainable_variables, head_before))
    # ...and stays put within a task, while every other layer with weights adapts.
    (support_x, support_y), _ = episode
    adapted = boil.adapt(support_x[0], support_y[0])
    for layer, adapted_layer in zip(boil.model.layers, adapted.layers):
        for v, a in zip(layer.trainable_variables, adapted_layer.trainable_variables):
            if layer is head:
                np.testing.assert_array_equal(v.numpy(), a.numpy())
            else:  # (a conv bias before BatchNorm moves little: its gradient is ~0)
                assert np.abs(v.numpy() - a.numpy()).max() > 0, v.path


def test_boil_frozen_layers_by_name_save_and_unknown_names(tmp_path):
    model = tanh_mlp()
    names = [layer.name for layer in model.layers]
    assert tf_maml.BOIL(model).inner_loop.adapted == [0, 1, 2, 3]
    frozen_first = tf_maml.BOIL(model, frozen_layers=names[:1])
    assert frozen_first.inner_loop.adapted == [2, 3, 4, 5]
    frozen_first.compile(optimizer="adam", loss="mse")
    frozen_first.save(tmp_path / "boil.keras")
    loaded = keras.models.load_model(tmp_path / "boil.keras")
    assert loaded.frozen_layers == names[:1] and loaded.inner_loop.adapted == [2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"`frozen_layers` names layers without trainable "
                       r"weights in the model: \['nope'\]"):
        tf_maml.BOIL(tanh_mlp(), frozen_layers=["nope"])
    with pytest.raises(TypeError, match="`frozen_layers` must be layer names"):
        tf_maml.BOIL(tanh_mlp(), frozen_layers="dense")


# ---------------------------------------------------------------- CAVIA


def context_mlp():
    """The CAVIA paper's regression network, small: the context enters after the input."""
    return keras.Sequential([keras.Input((4,)), tf_maml.layers.TaskContext(2),
                             keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)])


def test_task_context_appends_its_parameters_to_the_input():
    layer = tf_maml.layers.TaskContext(3)
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    np.testing.assert_array_equal(layer(x), np.concatenate([x, np.zeros((2, 2, 3))], -1))
    layer.context.assign([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(layer(x)[1, 0], [4.0, 5.0, 1.0, 2.0, 3.0])
    assert layer.compute_output_shape((None, 7, 2)) == (None, 7, 5)
    assert tf_maml.layers.TaskContext.from_config(layer.get_config()).size == 3
    with pytest.raises(ValueError, match="`size` must be an integer >= 1"):
        tf_maml.layers.TaskContext(0)


def test_cavia_adapts_only_the_context_which_is_never_meta_trained(tmp_path):
    episode = as_float32(regression_episode(np.random.default_rng(16)))
    cavia = tf_maml.CAVIA(context_mlp(), inner_lr=1.0, inner_steps=2)
    cavia.compile(optimizer="adam", loss="mse")
    before = [v.numpy().copy() for v in cavia.model.trainable_variables]
    cavia.fit(*episode, batch_size=3, epochs=3, verbose=0)
    context, *rest = cavia.model.trainable_variables
    np.testing.assert_array_equal(context.numpy(), [0.0, 0.0])  # 0 through fit (Adam)
    assert all(np.abs(v.numpy() - b).max() > 0 for v, b in zip(rest, before[1:]))
    (support_x, support_y), _ = episode
    adapted = cavia.adapt(support_x[0], support_y[0])
    assert np.abs(adapted.trainable_variables[0].numpy()).max() > 0  # the context adapted
    for v, a in zip(rest, adapted.trainable_variables[1:]):  # nothing else did
        np.testing.assert_array_equal(v.numpy(), a.numpy())
    cavia.save(tmp_path / "cavia.keras")
    loaded = keras.models.load_model(tmp_path / "cavia.keras")
    assert type(loaded) is tf_maml.CAVIA and loaded.inner_loop.adapted == [0]
    np.testing.assert_allclose(loaded.adapt(support_x[0], support_y[0]).predict(
        support_x[0], verbose=0), adapted.predict(support_x[0], verbose=0), rtol=1e-6)
    task = (support_x[0], support_y[0], support_x[0])
    assert_export_serves_like_adapt(loaded, cavia, tmp_path / "served", task, rtol=1e-5,
                                    atol=1e-6)
    with pytest.raises(ValueError, match="CAVIA adapts only tf_maml.layers.TaskContext"):
        tf_maml.CAVIA(tanh_mlp())


def test_cavia_meta_gradient_matches_finite_differences(float64):
    episode = regression_episode(np.random.default_rng(17))
    cavia = tf_maml.CAVIA(context_mlp(), inner_lr=0.5, inner_steps=2)
    actual = meta_gradient(cavia, episode)
    expected = finite_difference_gradient(cavia, episode)
    np.testing.assert_array_equal(actual[0], 0.0)  # the context: no meta-gradient
    assert np.abs(expected[0]).max() > 0  # (which it would have)
    assert all(np.abs(g).max() > 0 for g in actual[1:])
    assert_gradients_close(actual[1:], expected[1:])


# ---------------------------------------------------------------- Reptile


def reptile_step(reptile, episode, epsilon):
    reptile.compile(optimizer=keras.optimizers.SGD(epsilon), loss="mse")
    reptile.train_on_batch(*episode)
    return reptile.model.trainable_variables[0].numpy()


def test_reptile_sgd_update_matches_closed_form_on_a_quadratic(float64):
    """k SGD steps on a least-squares task, then theta + eps (mean theta' - theta)."""
    episode = regression_episode(np.random.default_rng(15))
    reptile = tf_maml.Reptile(linear_model(4), inner_lr=0.05, inner_steps=3)
    w = reptile.model.trainable_variables[0].numpy()
    (support_x, support_y), _ = episode
    adapted = []
    for xs, ys in zip(support_x, support_y):
        fast = w.copy()
        for _ in range(3):
            fast = fast - 0.05 * 2.0 / len(xs) * xs.T @ (xs @ fast - ys)
        adapted.append(fast)
    expected = w + 0.5 * (np.mean(adapted, axis=0) - w)
    np.testing.assert_allclose(reptile_step(reptile, episode, 0.5), expected, rtol=1e-10)


def test_reptile_adam_inner_loop_matches_keras_adam(float64):
    episode = regression_episode(np.random.default_rng(16), tasks=1)
    reptile = tf_maml.Reptile(linear_model(4), inner_lr=0.01, inner_steps=4, inner_optimizer="adam")
    w = reptile.model.trainable_variables[0].numpy()
    # Reference: keras.optimizers.Adam on a copy, 4 steps on the support set.
    reference = linear_model(4)
    reference.set_weights([w])
    adam = keras.optimizers.Adam(0.01)
    (support_x, support_y), _ = episode
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = keras.losses.MeanSquaredError()(support_y[0], reference(support_x[0]))
        adam.apply_gradients(zip(tape.gradient(loss, reference.trainable_variables),
                                 reference.trainable_variables))
    expected = reference.get_weights()[0]  # epsilon = 1: theta <- theta'
    np.testing.assert_allclose(reptile_step(reptile, episode, 1.0), expected, rtol=1e-6)


def test_reptile_epsilon_anneals_through_a_keras_schedule():
    schedule = keras.optimizers.schedules.PolynomialDecay(1.0, 10, end_learning_rate=0.0)
    reptile = tf_maml.Reptile(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.01, inner_steps=2)
    reptile.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    initial = [w.copy() for w in reptile.get_weights()]
    history = reptile.fit(tf_maml.data.sinusoid_episodes(meta_batch_size=4, num_batches=10),
                          verbose=0)
    assert np.isfinite(history.history["loss"][0])
    weights = reptile.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(weights, initial))  # epsilon was > 0
    reptile.fit(tf_maml.data.sinusoid_episodes(meta_batch_size=4, num_batches=3), verbose=0)
    for a, b in zip(weights, reptile.get_weights()):  # epsilon has reached 0
        np.testing.assert_array_equal(a, b)


def test_reptile_saves_and_rejects_unknown_inner_optimizer(tmp_path):
    reptile = tf_maml.Reptile(tf_maml.nets.mlp(hidden=(8,)), inner_optimizer="adam")
    reptile.compile(optimizer="sgd", loss="mse")
    reptile.save(tmp_path / "reptile.keras")
    loaded = keras.models.load_model(tmp_path / "reptile.keras")
    assert isinstance(loaded.inner_optimizer, tf_maml.rules.Adam)
    assert loaded.get_config()["inner_optimizer"] == "adam"
    with pytest.raises(ValueError, match="`inner_optimizer` must be one of"):
        tf_maml.Reptile(tf_maml.nets.mlp(), inner_optimizer="rmsprop")


# ---------------------------------------------------------------- MAML++


def plain_options(**overrides):
    options = dict(learned_step_sizes=False, multi_step_loss_steps=0, first_order_steps=0,
                   per_step_batch_norm=False)
    return {**options, **overrides}


def test_msl_weights_anneal_toward_the_last_step():
    from tf_maml.learners.family import multi_step_loss_weights

    np.testing.assert_allclose(multi_step_loss_weights(0.0, 4), [0.25] * 4, rtol=1e-6)
    np.testing.assert_allclose(multi_step_loss_weights(0.5, 4), [0.125] * 3 + [0.625], rtol=1e-6)
    floor = 0.03 / 4
    np.testing.assert_allclose(multi_step_loss_weights(0.999, 4)[:3], [floor] * 3, rtol=1e-5)
    np.testing.assert_allclose(multi_step_loss_weights(1.0, 4), [0, 0, 0, 1])
    for progress in (0.0, 0.3, 0.9, 2.0):
        assert float(np.sum(multi_step_loss_weights(progress, 4))) == pytest.approx(1.0)


def test_msl_meta_gradient_is_the_weighted_sum_of_per_step_gradients(float64):
    episode = regression_episode(np.random.default_rng(21))
    plus = tf_maml.MAMLPlusPlus(tanh_mlp(), inner_lr=0.3, inner_steps=2,
                                **plain_options(multi_step_loss_steps=100))
    weights = plus.model.get_weights()
    per_step = []
    for steps in (1, 2):
        maml = tf_maml.MAML(tanh_mlp(), inner_lr=0.3, inner_steps=steps)
        maml.model.set_weights(weights)
        per_step.append(meta_gradient(maml, episode))
    expected = [(a + b) / 2 for a, b in zip(*per_step)]  # progress 0: uniform weights
    assert_gradients_close(meta_gradient(plus, episode), expected, rtol=1e-10)


def test_derivative_order_annealing_switches_at_its_step(float64):
    episode = regression_episode(np.random.default_rng(22))
    plus = tf_maml.MAMLPlusPlus(tanh_mlp(), inner_lr=0.3, inner_steps=2,
                                **plain_options(first_order_steps=1))
    weights = plus.model.get_weights()
    expected = {}
    for first_order in (True, False):
        maml = tf_maml.MAML(tanh_mlp(), inner_lr=0.3, inner_steps=2, first_order=first_order)
        maml.model.set_weights(weights)
        expected[first_order] = meta_gradient(maml, episode)
    plus.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    for first_order in (True, False):  # meta-step 0: first order; meta-step 1: second
        plus.train_on_batch(*episode)
        grads = [w - v.numpy() for w, v in zip(weights, plus.model.trainable_variables)]
        plus.model.set_weights(weights)
        assert_gradients_close(grads, expected[first_order], rtol=1e-10)
    assert np.abs(expected[True][0] - expected[False][0]).max() > 1e-4


def test_lslr_and_per_step_batchnorm_gradients_match_finite_differences(float64):
    # A point where no max-pool argmax lies within the finite-difference step:
    # there the inner gradient, hence the meta-loss, jumps (seen with seed 23).
    episode = classification_episode(np.random.default_rng(25))
    plus = tf_maml.MAMLPlusPlus(conv_bn_pool_net(), inner_lr=0.3, inner_steps=2,
                                **plain_options(learned_step_sizes=True, per_step_batch_norm=True))
    # A step size per adapted variable: BatchNorm scale and offset are per step instead.
    assert len(plus.step_sizes) == len(plus.inner_loop.adapted) == 6
    assert len(plus.batch_norm_weights) == 4  # 2 BN layers x (scale, offset)
    for copies in plus.batch_norm_weights:  # distinct per-step values
        copies.assign(copies + np.random.default_rng(0).normal(0, 0.1, copies.shape))
    assert_directional_derivatives_match(plus, episode, directions=4, loss=sparse_ce())


def test_per_step_batchnorm_weights_are_not_adapted_and_reach_the_adapted_model(tmp_path):
    episode = as_float32(classification_episode(np.random.default_rng(24), tasks=2))
    plus = tf_maml.MAMLPlusPlus(conv_bn_pool_net(), inner_lr=0.3, inner_steps=2)
    plus.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    plus.fit(*episode, batch_size=2, epochs=2, verbose=0)
    (support_x, support_y), _ = episode
    adapted = plus.adapt(support_x[0], support_y[0])
    batch_norm = [layer for layer in adapted.layers if isinstance(layer, keras.layers.BatchNormalization)]
    last_step = [copies.numpy()[-1] for copies in plus.batch_norm_weights]
    adapted_values = [v.numpy() for layer in batch_norm for v in layer.trainable_variables]
    for a, b in zip(adapted_values, last_step):
        np.testing.assert_array_equal(a, b)
    plus.save(tmp_path / "plus.keras")
    loaded = keras.models.load_model(tmp_path / "plus.keras")
    assert isinstance(loaded, tf_maml.MAMLPlusPlus) and loaded.multi_step_loss_steps == 7500
    for a, b in zip(loaded.weights, plus.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(plus.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_maml_plus_plus_rejects_bad_schedules():
    with pytest.raises(ValueError, match="`first_order_steps` must be an integer >= 0"):
        tf_maml.MAMLPlusPlus(tanh_mlp(), first_order_steps=-1)
