"""Adapted policies served: adapt() and the exported adaptation of tf_maml.rl."""

import concurrent.futures

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.rl import envs

ENV = envs.Navigation2D(horizon=12)


@pytest.fixture(scope="module")
def meta_and_trajectories():
    keras.utils.set_random_seed(1)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(ENV, hidden=(8,)), ENV,
                                         inner_lr=0.3, trajectories=4, outer_steps=1)
    meta.compile(optimizer="adam")
    meta.fit(tf_maml.rl.task_batches(ENV, 2, num_batches=1), verbose=0)
    batch = next(iter(tf_maml.rl.task_batches(ENV, 1, seed=7, num_batches=1)))
    sampled = meta.sample_by_step(batch, 0)["trajectories"][0]
    trajectories = {k: sampled[k][0] for k in ("observations", "actions", "rewards", "mask",
                                               "advantages")}
    return meta, trajectories


def _given(trajectories):
    return [trajectories[k] for k in ("observations", "actions", "rewards", "mask")]


def test_adapt_takes_the_policy_gradient_step_on_the_trajectories(meta_and_trajectories):
    meta, trajectories = meta_and_trajectories
    adapted = meta.adapt(*_given(trajectories))
    assert isinstance(adapted, keras.Model) and adapted is not meta.policy
    variables = meta.policy.trainable_variables
    with tf.GradientTape() as tape:
        log_probs = meta.distribution.log_prob(
            meta.policy(tf.reshape(trajectories["observations"], [-1, 2])),
            tf.reshape(trajectories["actions"], [-1, 2]))
        mask = tf.reshape(trajectories["mask"], [-1])
        objective = tf.reduce_sum(log_probs * tf.reshape(trajectories["advantages"], [-1])
                                  * mask) / tf.reduce_sum(mask)
    for value, variable, gradient in zip(adapted.trainable_variables, variables,
                                         tape.gradient(objective, variables)):
        np.testing.assert_allclose(value, variable + 0.3 * gradient, rtol=1e-4, atol=1e-6)
    unchanged = meta.adapt(*_given(trajectories), steps=0)
    for a, b in zip(unchanged.weights, meta.policy.weights):
        np.testing.assert_array_equal(a, b)


def test_adapt_is_safe_from_many_threads(meta_and_trajectories):
    meta, trajectories = meta_and_trajectories
    given = _given(trajectories)
    query = tf.random.stateless_uniform([5, 2], [0, 1], -0.5, 0.5)
    alone = meta.adapt(*given)(query)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: meta.adapt(*given)(query).numpy(), range(8)))
    for result in results:
        np.testing.assert_allclose(result, alone, rtol=1e-6, atol=1e-7)


def test_exported_adaptation_acts_as_the_adapted_policy(meta_and_trajectories, tmp_path):
    meta, trajectories = meta_and_trajectories
    path = str(tmp_path / "adaptive")
    meta.export_adaptive(path)
    served = tf.saved_model.load(path)
    query = tf.random.stateless_uniform([6, 2], [2, 3], -0.5, 0.5)
    result = served.adapt_and_act(*_given(trajectories), query)
    assert result.shape == (6, 4)  # mean and log standard deviation of 2-D actions
    np.testing.assert_allclose(result, meta.adapt(*_given(trajectories))(query), rtol=1e-5,
                               atol=1e-6)
    adapted_path = str(tmp_path / "adapted")
    meta.adapt(*_given(trajectories)).export(adapted_path, verbose=False)
    loaded = tf.saved_model.load(adapted_path)  # kept: its functions need its variables
    np.testing.assert_allclose(loaded.serve(query), result, rtol=1e-5, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one step"):
        given = _given(trajectories)
        served.adapt_and_act(*given[:3], tf.zeros_like(given[3]), query)


def test_trajectories_of_the_wrong_shape_are_refused(meta_and_trajectories):
    meta, trajectories = meta_and_trajectories
    observations, actions, rewards, mask = _given(trajectories)
    with pytest.raises(ValueError, match=r"`actions` must have shape \[trajectories, steps, 2\]"):
        meta.adapt(observations, actions[..., :1], rewards)
    with pytest.raises(ValueError, match="`rewards`.*matching observations' \\[4, 12\\]"):
        meta.adapt(observations, actions, rewards[:2])


@pytest.mark.parametrize("package, make_env", [
    pytest.param("metaworld", lambda: envs.MetaWorldML1("push-v3", horizon=40), id="metaworld"),
    pytest.param("highway_env", lambda: envs.HighwayTraffic(horizon=30), id="highway"),
])
def test_exported_adaptation_of_bridge_environments(package, make_env, tmp_path):
    """The configs of issue 30 serve alike: Meta-World's 4-D actions, highway's discrete."""
    pytest.importorskip(package)
    env = make_env()
    keras.utils.set_random_seed(2)
    # More steps than the linear baseline's features (2 x observation + 4): advantages that
    # are not rounding noise.
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(8,)), env,
                                         inner_lr=0.3, trajectories=5)
    batch = next(iter(tf_maml.rl.task_batches(env, 1, seed=3, num_batches=1)))
    sampled = meta.sample_by_step(batch, 0)["trajectories"][0]
    given = [sampled[k][0] for k in ("observations", "actions", "rewards", "mask")]
    meta.export_adaptive(str(tmp_path / "adaptive"))
    served = tf.saved_model.load(str(tmp_path / "adaptive"))
    query = tf.reshape(given[0], [-1, env.observation_size])[:4]
    adapted = meta.adapt(*given)(query)
    np.testing.assert_allclose(served.adapt_and_act(*given, query), adapted, rtol=1e-5,
                               atol=1e-6)
    assert np.abs(adapted - meta.policy(query)).max() > 1e-4  # the step moved the policy
