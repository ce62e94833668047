"""Inner update rules: each against a closed form or a Keras optimizer's step,
second order by finite differences along random directions, composition,
saving, serving, and every family member's step-by-step curve."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml import rules
from tf_maml.runs.step_curves import query_results_by_step

from helpers import (
    MEMBERS, ROOT, as_float32, assert_directional_derivatives_match,
    assert_export_serves_like_adapt, classification_episode, conv_bn_pool_net, linear_model, regression_episode, sparse_ce,
    tanh_mlp,
)




def built(rule, model):
    """`rule` built for every weight of `model`, as the meta-learner builds it."""
    weights = rule.select(rules.model_weights(model))
    rule.build(weights)
    return weights


def run_rule(rule, params, grads_fn, steps):
    """`steps` updates of `rule` from `params`, the gradients from `grads_fn(params)`."""
    state = rule.init(params)
    for step in range(steps):
        params, state = rule.update(grads_fn(params), state, params, tf.constant(step))
    return [p.numpy() for p in params]


def keras_optimizer_run(optimizer, params, grads_fn, steps):
    variables = [tf.Variable(p) for p in params]
    for _ in range(steps):
        optimizer.apply_gradients(zip(grads_fn([v.read_value() for v in variables]), variables))
    return [v.numpy() for v in variables]


def quadratic_grads(params):
    """Gradients of sum(p^3 / 3 - p): non-constant, so moments matter."""
    return [tf.square(p) - 1.0 for p in params]


# Keras keeps an optimizer's learning rate in float32: hyper-parameters that
# float32 holds exactly compare to rounding; the defaults to float32's.
@pytest.mark.parametrize("rule, optimizer, rtol", [
    (lambda: rules.sgd(0.125), lambda: keras.optimizers.SGD(0.125), 1e-12),
    (lambda: rules.momentum(0.125, beta=0.75),
     lambda: keras.optimizers.SGD(0.125, momentum=0.75), 1e-12),
    (lambda: rules.adam(0.0625, beta_1=0.5, beta_2=0.75, epsilon=2.0**-10),
     lambda: keras.optimizers.Adam(0.0625, beta_1=0.5, beta_2=0.75, epsilon=2.0**-10), 1e-12),
    # 1 - 0.999 in float32 is 1.3e-5 off: the bias correction carries it.
    (lambda: rules.adam(0.05), lambda: keras.optimizers.Adam(0.05), 2e-5),
])
def test_fixed_step_rules_equal_keras_optimizers(float64, rule, optimizer, rtol):
    params = [tf.constant(np.random.default_rng(0).uniform(-1, 1, (3, 2))), tf.constant([0.5, 0.0])]
    expected = keras_optimizer_run(optimizer(), params, quadratic_grads, 4)
    actual = run_rule(rule(), params, quadratic_grads, 4)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * 1e-2)


def test_sgd_step_sizes_by_layer_name(float64):
    model = tanh_mlp()
    names = [layer.name for layer in model.layers]
    rule = rules.sgd({names[0]: 0.1, names[1]: 0.2, names[2]: 0.0 + 0.3})
    built(rule, model)
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    grads = [tf.ones_like(p) for p in params]
    new, _ = rule.update(grads, rule.init(params), params, tf.constant(0))
    steps = [float(np.mean(p.numpy() - n.numpy())) for p, n in zip(params, new)]
    np.testing.assert_allclose(steps, [0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    with pytest.raises(ValueError, match=r"unknown \['nope'\], missing \["):
        built(rules.sgd({"nope": 0.1}), tanh_mlp())


def test_clipping_by_value_and_by_global_norm():
    grads = [tf.constant([3.0, -4.0]), tf.constant([0.5])]
    clipped, _ = rules.clip_by_value(1.0).transform(grads, (), grads, 0)
    np.testing.assert_array_equal(clipped[0], [1.0, -1.0])
    np.testing.assert_array_equal(clipped[1], [0.5])
    norm = np.sqrt(9 + 16 + 0.25)
    scaled, _ = rules.clip_by_global_norm(1.0).transform(grads, (), grads, 0)
    np.testing.assert_allclose(scaled[0], np.array([3.0, -4.0]) / norm, rtol=1e-6)
    unchanged, _ = rules.clip_by_global_norm(10.0).transform(grads, (), grads, 0)
    np.testing.assert_array_equal(unchanged[0], grads[0])


def test_chain_clips_then_steps_in_optax_order():
    rule = rules.chain(rules.clip_by_value(0.5), rules.sgd(1.0))
    params = [tf.constant([0.0, 0.0])]
    new, _ = rule.update([tf.constant([2.0, -0.25])], rule.init(params), params, tf.constant(0))
    np.testing.assert_array_equal(new[0], [-0.5, 0.25])
    with pytest.raises(ValueError, match="exactly one rule that steps"):
        rules.chain(rules.sgd(0.1), rules.clip_by_value(1.0))
    with pytest.raises(ValueError, match="exactly one rule that steps"):
        rules.chain(rules.sgd(0.1), rules.adam(0.1))
    with pytest.raises(ValueError, match="only transforms gradients"):
        tf_maml.MAML(tanh_mlp(), inner_optimizer=rules.clip_by_global_norm(1.0))


def test_lslr_indexes_its_step_and_reuses_the_last(float64):
    model = linear_model(2)
    rule = rules.lslr(0.1, steps=2)
    built(rule, model)
    rule.learning_rates[0].assign([0.1, 0.3])
    params = [tf.zeros((2, 1), tf.float64)]
    state = rule.init(params)
    grads = [tf.ones((2, 1), tf.float64)]
    for step, size in ((0, 0.1), (1, 0.3), (5, 0.3)):
        new, _ = rule.update(grads, state, params, tf.constant(step))
        np.testing.assert_allclose(new[0], -size)


def test_masked_selects_layers_by_name_or_predicate():
    model = tanh_mlp()
    names = [layer.name for layer in model.layers]
    assert tf_maml.MAML(model, inner_optimizer=rules.masked(rules.sgd(0.1), [names[2]])
                        ).inner_loop.adapted == [4, 5]
    by_predicate = rules.masked(rules.sgd(0.1), lambda layer: layer.name != names[2])
    assert tf_maml.MAML(model, inner_optimizer=by_predicate).inner_loop.adapted == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"names layers not in the model: \['head'\]"):
        tf_maml.MAML(model, inner_optimizer=rules.masked(rules.sgd(0.1), ["head"]))
    with pytest.raises(TypeError, match="layer names or a predicate"):
        rules.masked(rules.sgd(0.1), "dense")


@pytest.mark.parametrize("make_rule", [
    lambda names: rules.momentum(0.2, beta=0.7),
    lambda names: rules.adam(0.05),
    lambda names: rules.chain(rules.clip_by_global_norm(0.5), rules.sgd(0.3)),
    lambda names: rules.chain(rules.clip_by_value(0.2), rules.momentum(0.3)),
    lambda names: rules.lslr(0.2, steps=2),
    lambda names: rules.masked(rules.meta_sgd(0.3), adapted=names[1:]),  # ANIL + Meta-SGD
], ids=["momentum", "adam", "clip_norm_sgd", "clip_value_momentum", "lslr", "masked_meta_sgd"])
def test_second_order_meta_gradient_through_each_rule(float64, make_rule):
    model = tanh_mlp()
    names = [layer.name for layer in model.layers]
    maml = tf_maml.MAML(model, inner_steps=2, inner_optimizer=make_rule(names))
    for variable in maml.meta_variables:  # learned step sizes away from their start
        variable.assign(variable + np.random.default_rng(1).uniform(0, 0.1, variable.shape))
    episode = regression_episode(np.random.default_rng(3))
    assert_directional_derivatives_match(maml, episode, rtol=1e-6)


def docs_rule_example():
    """The user-written rule of docs/api.md, run as written."""
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(# A rule of your own.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102
    return namespace


def test_a_user_written_rule_trains_saves_and_serves(tmp_path):
    episode = as_float32(regression_episode(np.random.default_rng(4), features=1))
    namespace = docs_rule_example()
    maml, sign_sgd = namespace["maml"], namespace["SignSGD"]
    maml.compile(optimizer="adam", loss="mse")
    maml.fit(*episode, batch_size=3, verbose=0)
    (support_x, support_y), (query_x, _) = episode
    expected = maml.adapt(support_x[0], support_y[0]).predict(query_x[0], verbose=0)
    maml.save(tmp_path / "sign.keras")
    loaded = keras.models.load_model(tmp_path / "sign.keras")
    assert isinstance(loaded.inner_optimizer, sign_sgd)
    actual = loaded.adapt(support_x[0], support_y[0]).predict(query_x[0], verbose=0)
    np.testing.assert_array_equal(actual, expected)


def test_a_chained_rule_saves_loads_trains_on_and_exports(tmp_path):
    episode = as_float32(classification_episode(np.random.default_rng(5), tasks=2))
    rule = rules.chain(rules.clip_by_global_norm(1.0), rules.masked(rules.meta_sgd(0.3),
                                                                    adapted=["dense"]))
    net = conv_bn_pool_net()
    net.layers[-1].name = "dense"
    maml = tf_maml.MAML(net, inner_optimizer=rule, eval_inner_steps=2)
    maml.compile(optimizer="adam", loss=sparse_ce())
    maml.fit(*episode, batch_size=2, verbose=0)
    maml.save(tmp_path / "chained.keras")
    loaded = keras.models.load_model(tmp_path / "chained.keras")
    assert repr(loaded.inner_optimizer) == repr(maml.inner_optimizer)
    for a, b in zip(maml.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    maml.fit(*episode, batch_size=2, verbose=0)
    loaded.fit(*episode, batch_size=2, verbose=0)
    for a, b in zip(maml.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    (support_x, support_y), (query_x, _) = episode
    task = (support_x[0], support_y[0], query_x[0])
    assert_export_serves_like_adapt(maml, maml, tmp_path / "served", task, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("member", list(MEMBERS))
def test_step_by_step_curve_equals_evaluate_after_k_steps(member):
    """The per-step curve keeps the rule's state (Adam's moments, momentum)."""
    episodes = tf.data.Dataset.from_tensors(
        as_float32(classification_episode(np.random.default_rng(6), tasks=2))
    )
    maml = MEMBERS[member](conv_bn_pool_net())
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    curve = query_results_by_step(maml, episodes, num_tasks=2, max_steps=3)
    for k in (1, 3):
        maml.eval_inner_steps = k
        maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
        logs = maml.evaluate(episodes, return_dict=True, verbose=0)
        np.testing.assert_allclose(curve["loss"][:, k].mean(), logs["loss"], rtol=1e-5)
        np.testing.assert_allclose(curve["accuracy"][:, k].mean(), logs["accuracy"], rtol=1e-6)


@pytest.mark.parametrize("member", list(MEMBERS))
def test_each_member_saves_loads_trains_on_identically_and_serves(member, tmp_path):
    episodes = tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=2, num_batches=2, seed=3)
    maml = MEMBERS[member](tf_maml.nets.mlp(hidden=(8,)))
    maml.compile(optimizer="adam", loss="mse")
    maml.fit(episodes.take(1), verbose=0)
    maml.save(tmp_path / "meta.keras")
    loaded = keras.models.load_model(tmp_path / "meta.keras")
    assert type(loaded) is type(maml)
    assert repr(loaded.inner_optimizer) == repr(maml.inner_optimizer)
    # Weights, learned step sizes and optimizer slots line up: training on agrees.
    maml.fit(episodes.skip(1), verbose=0)
    loaded.fit(episodes.skip(1), verbose=0)
    for a, b in zip(maml.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    (support_x, support_y), (query_x, _) = next(iter(episodes))
    task = (support_x[0], support_y[0], query_x[0])
    assert_export_serves_like_adapt(loaded, maml, tmp_path / "served", task, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: tf_maml.MAMLPlusPlus(tanh_mlp(), first_order=True), "first_order_steps"),
    (lambda: tf_maml.Reptile(tanh_mlp(), first_order=True), "Reptile does not take `first_order`"),
    (lambda: tf_maml.FOMAML(tanh_mlp(), first_order=False), "FOMAML is first-order"),
    (lambda: tf_maml.MetaSGD(tanh_mlp(), inner_optimizer=rules.adam(0.1)),
     "MetaSGD does not take `inner_optimizer`"),
    (lambda: tf_maml.MAMLPlusPlus(tanh_mlp(), inner_optimizer=rules.adam(0.1)),
     "MAMLPlusPlus does not take `inner_optimizer`"),
    (lambda: tf_maml.MAML(tanh_mlp(), inner_lr=0.1, inner_optimizer=rules.sgd(0.1)),
     "either `inner_lr`"),
    (lambda: tf_maml.MAML(tanh_mlp(), inner_optimizer="rmsprop"), "tf_maml.rules rule"),
])
def test_arguments_a_member_cannot_honour_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_inner_lr_cannot_be_changed_silently():
    maml = tf_maml.MAML(tanh_mlp(), inner_lr=0.1)
    with pytest.raises(AttributeError, match="make a new meta-learner with inner_lr=0.2"):
        maml.inner_lr = 0.2


def test_one_registry_for_configs_tuning_and_scripts():
    assert set(tf_maml.tuning.ALGORITHMS) < set(tf_maml.family.ALGORITHMS)
    assert tf_maml.family.meta_learner_class("meta_sgd") is tf_maml.MetaSGD
    with pytest.raises(ValueError, match="Unknown algorithm 'mamal'; known: maml, fomaml"):
        tf_maml.family.meta_learner_class("mamal")


@pytest.mark.parametrize("make, message", [
    (lambda: rules.sgd(-0.1), "`learning_rate` must be a positive number"),
    (lambda: rules.sgd({"dense": 0.0}), r"`learning_rate\['dense'\]` must be a positive number"),
    (lambda: rules.momentum(0.1, beta=1.0), r"`beta` must be a number in \[0, 1\)"),
    (lambda: rules.adam(0.1, beta_2=True), r"`beta_2` must be a number in \[0, 1\)"),
    (lambda: rules.adam(0.1, epsilon=0), "`epsilon` must be a positive number"),
    (lambda: rules.meta_sgd("fast"), "`initial_learning_rate` must be a positive number"),
    (lambda: rules.lslr(0.1, steps=0), "`steps` must be an integer >= 1"),
    (lambda: rules.clip_by_value(-1.0), "`limit` must be a positive number"),
    (lambda: rules.clip_by_global_norm(0), "`max_norm` must be a positive number"),
    (lambda: rules.chain(), "needs at least one rule"),
    (lambda: rules.chain("sgd"), "chain\\(\\) takes rules"),
    (lambda: rules.masked("sgd", ["dense"]), "masked\\(\\) takes a rule"),
])
def test_bad_rule_arguments_are_refused_by_name(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_a_mask_selecting_nothing_and_unsavable_rules_say_so():
    with pytest.raises(ValueError, match="selects no trainable weight"):
        tf_maml.MAML(tanh_mlp(), inner_optimizer=rules.masked(rules.sgd(0.1), lambda layer: False))
    by_predicate = tf_maml.MAML(tanh_mlp(), inner_optimizer=rules.masked(
        rules.sgd(0.1), lambda layer: True))
    with pytest.raises(ValueError, match="predicate cannot be saved; pass layer names"):
        by_predicate.get_config()
    by_callable = tf_maml.MAML(tanh_mlp(), inner_optimizer=rules.sgd(lambda layer: 0.1))
    with pytest.raises(ValueError, match="callable learning rate cannot be saved"):
        by_callable.get_config()
