"""Keras habits on a meta-learner: hyper-parameters assigned after fit or evaluate apply as
if the meta-learner had been made with them (or raise naming them), and an overridden
`compute_loss` is the task loss of both loops."""

import keras
import numpy as np
import pytest

import tf_maml
from helpers import meta_gradient, regression_episode

rules = tf_maml.rules


def bn_regressor():
    return keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(6), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Dense(1),
    ])


EPISODE = regression_episode(np.random.default_rng(0), tasks=2, shots=6, queries=5,
                             dtype=np.float32)


def after_one_update(meta):
    """Evaluation logs before and the weights after one `train_on_batch` (SGD)."""
    logs = meta.evaluate(*EPISODE, verbose=0, return_dict=True)
    meta.train_on_batch(*EPISODE)
    return logs, [v.numpy() for v in meta.trainable_variables]


@pytest.mark.parametrize("name, value", [
    ("inner_steps", 3),
    ("eval_inner_steps", 3),
    ("first_order", True),
    ("transductive", False),
    ("inner_optimizer", rules.momentum(0.05)),
])
def test_hyper_parameter_assigned_after_fit_acts_as_if_made_with_it(name, value):
    initial = bn_regressor()
    assigned = tf_maml.MAML(initial, inner_lr=0.05)
    fresh = tf_maml.MAML(keras.models.clone_model(initial), **{name: value},
                         **({} if name == "inner_optimizer" else {"inner_lr": 0.05}))
    for meta in (assigned, fresh):
        meta.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # Traced and run once with the old value (the fresh one evaluated alike).
    assigned.train_on_batch(*EPISODE)
    assigned.evaluate(*EPISODE, verbose=0)
    fresh.evaluate(*EPISODE, verbose=0)
    fresh.set_weights(assigned.get_weights())
    fresh.optimizer.iterations.assign(assigned.optimizer.iterations)
    setattr(assigned, name, value)
    expected_logs, expected_weights = after_one_update(fresh)
    logs, weights = after_one_update(assigned)
    for key, expected in expected_logs.items():
        np.testing.assert_allclose(logs[key], expected, rtol=1e-5, err_msg=key)
    for actual, expected in zip(weights, expected_weights):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    # The adapted model follows too (eval_inner_steps follows inner_steps).
    support_x, support_y = EPISODE[0][0][0], EPISODE[0][1][0]
    np.testing.assert_allclose(
        assigned.adapt(support_x, support_y).predict(support_x, verbose=0),
        fresh.adapt(support_x, support_y).predict(support_x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, name, value, message", [
    (lambda net: tf_maml.MAMLPlusPlus(net, inner_steps=2), "inner_steps", 3,
     "`inner_steps` of MAMLPlusPlus is fixed"),
    (lambda net: tf_maml.MAMLPlusPlus(net, inner_steps=2), "first_order", True,
     "`first_order` of MAMLPlusPlus is fixed"),
    (lambda net: tf_maml.MetaSGD(net), "inner_optimizer", rules.sgd(0.1),
     "`inner_optimizer` of MetaSGD is fixed"),
    (lambda net: tf_maml.FOMAML(net), "first_order", False, "FOMAML is first-order"),
    (lambda net: tf_maml.Reptile(net), "first_order", False, "`first_order` of Reptile is fixed"),
    (lambda net: tf_maml.MAML(net), "inner_optimizer", rules.meta_sgd(0.1),
     "`inner_optimizer` can not change"),
    (lambda net: tf_maml.MAML(net), "inner_steps", 0, "`inner_steps` must be an integer >= 1"),
    (lambda net: tf_maml.MAML(net), "inner_lr", 0.1, "assign `inner_optimizer` a rule"),
])
def test_a_change_that_cannot_apply_raises_naming_the_attribute(make, name, value, message):
    meta = make(bn_regressor())
    with pytest.raises((AttributeError, ValueError), match=message):
        setattr(meta, name, value)


def test_anil_keeps_its_head_when_given_a_new_rule():
    anil = tf_maml.ANIL(bn_regressor(), inner_lr=0.1)
    anil.inner_optimizer = rules.adam(0.01)
    assert isinstance(anil.inner_optimizer, rules.Masked)
    assert [w.variable for w in anil.inner_optimizer.select(rules.model_weights(anil.model))] \
        == anil.model.layers[-1].trainable_variables


class DoubledLoss(tf_maml.MAML):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return 2.0 * super().compute_loss(x, y, y_pred, sample_weight, training)


def test_compute_loss_override_is_the_task_loss_of_both_loops():
    """Doubling the task loss doubles the inner step (as inner_lr doubled does) and the
    meta-objective, so its meta-gradient is twice that of MAML with inner_lr doubled."""
    initial = keras.models.clone_model(bn_regressor())
    doubled_loss = DoubledLoss(initial, inner_lr=0.05, inner_steps=2)
    doubled_lr = tf_maml.MAML(keras.models.clone_model(initial), inner_lr=0.1, inner_steps=2)
    doubled_lr.build((None, 4))
    doubled_lr.set_weights(doubled_loss.get_weights())
    grads = meta_gradient(doubled_loss, EPISODE)
    expected = meta_gradient(doubled_lr, EPISODE)
    for actual, reference in zip(grads, expected):
        np.testing.assert_allclose(actual, 2.0 * reference, rtol=1e-4, atol=1e-6)
    logs = doubled_loss.evaluate(*EPISODE, verbose=0, return_dict=True)
    reference_logs = doubled_lr.evaluate(*EPISODE, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], 2.0 * reference_logs["loss"], rtol=1e-5)
    support_x, support_y = EPISODE[0][0][0], EPISODE[0][1][0]
    np.testing.assert_allclose(  # adapt() descends it too
        doubled_loss.adapt(support_x, support_y).predict(support_x, verbose=0),
        doubled_lr.adapt(support_x, support_y).predict(support_x, verbose=0),
        rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, value", [("eval_inner_steps", 1), ("first_order", True)])
def test_rl_hyper_parameter_assigned_after_fit_acts_as_if_made_with_it(name, value):
    env = tf_maml.rl.envs.Navigation2D(horizon=5)
    batches = tf_maml.rl.task_batches(env, 2, seed=0, num_batches=1)
    metas = []
    for kwargs in ({}, {name: value}):
        keras.utils.set_random_seed(0)
        meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(4,)), env,
                                             trajectories=2, outer_steps=1,
                                             **{"eval_inner_steps": 2, **kwargs})
        meta.compile(optimizer=keras.optimizers.SGD(0.01))
        metas.append(meta)
    assigned, fresh = metas
    assigned.evaluate(batches, verbose=0)
    assigned.fit(batches, verbose=0)
    fresh.set_weights(assigned.get_weights())
    setattr(assigned, name, value)
    results = [(m.evaluate(batches, verbose=0, return_dict=True),
                m.fit(batches, verbose=0).history, m.get_weights()) for m in (assigned, fresh)]
    (logs, history, weights), (expected_logs, expected_history, expected_weights) = results
    assert logs == pytest.approx(expected_logs, rel=1e-5)
    assert history == pytest.approx(expected_history, rel=1e-5)
    for actual, expected in zip(weights, expected_weights):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
