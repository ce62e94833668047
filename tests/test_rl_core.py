"""tf_maml.rl's parts: 2D navigation, distributions, rollouts and advantages, checked exactly."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.rl import advantages, distributions, envs, rollouts


def test_navigation_follows_the_paper():
    env = envs.Navigation2D()
    goals = env.sample_tasks(1000, [1, 2])
    assert goals.shape == (1000, 2)
    assert np.all(np.abs(goals) <= 0.5) and np.abs(goals).max() > 0.45
    np.testing.assert_array_equal(goals, env.sample_tasks(1000, [1, 2]))
    goal = tf.constant([[0.3, -0.2], [0.05, 0.0]])
    state, observation = env.reset(goal, tf.zeros([2, 2], tf.int32))
    np.testing.assert_array_equal(observation, np.zeros([2, 2]))
    # Actions are clipped to [-0.1, 0.1]; the reward is minus the distance after the move.
    state, observation, reward, done = env.step(goal, state, tf.constant([[1.0, -0.05],
                                                                          [0.05, 0.0]]))
    np.testing.assert_allclose(observation, [[0.1, -0.05], [0.05, 0.0]])
    np.testing.assert_allclose(reward, [-math.hypot(0.2, 0.15), 0.0], atol=1e-7)
    np.testing.assert_array_equal(done, [False, True])
    assert env.action_space.low == -0.1 and env.horizon == 100


def test_gaussian_log_prob_and_kl_match_their_formulas():
    gaussian = distributions.Gaussian(2)
    params = tf.constant([[0.5, -1.0, 0.1, -0.3]], tf.float64)
    action = tf.constant([[0.2, 0.4]], tf.float64)
    std = np.exp([0.1, -0.3])
    expected = sum(-0.5 * ((a - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                   for a, m, s in zip([0.2, 0.4], [0.5, -1.0], std))
    np.testing.assert_allclose(gaussian.log_prob(params, action), [expected], rtol=1e-12)
    other = tf.constant([[0.0, 0.0, 0.0, 0.0]], tf.float64)
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1) / 2 - log s per dimension.
    expected_kl = sum((s ** 2 + m ** 2 - 1) / 2 - math.log(s) for m, s in zip([0.5, -1.0], std))
    np.testing.assert_allclose(gaussian.kl(params, other), [expected_kl], rtol=1e-12)


def test_categorical_samples_its_probabilities():
    categorical = distributions.Categorical(3)
    logits = tf.math.log(tf.constant([[0.2, 0.5, 0.3]]))
    noise = categorical.noise([4, 5], [20_000])
    samples = categorical.sample(tf.repeat(logits, 20_000, 0), noise)
    frequencies = np.bincount(samples.numpy(), minlength=3) / 20_000
    np.testing.assert_allclose(frequencies, [0.2, 0.5, 0.3], atol=0.015)
    np.testing.assert_allclose(categorical.log_prob(logits, tf.constant([1])), [math.log(0.5)],
                               rtol=1e-6)


def _policy_fn(policy):
    return lambda observations: policy(observations)


def test_rollouts_are_functions_of_their_seeds_and_mask_finished_episodes():
    env = envs.Navigation2D(horizon=30)
    policy = tf_maml.rl.policies.mlp(env, hidden=(8,), init_log_std=-1.0)
    gaussian = distributions.for_action_space(env.action_space)
    tasks = tf.constant([[0.05, 0.0], [0.4, -0.3], [-0.2, 0.2]])
    seeds = tf.constant([[1, 2], [3, 4], [5, 6]])
    sample = tf.function(lambda t, s: rollouts.sample(_policy_fn(policy), gaussian, env, t, s, 4))
    batch = sample(tasks, seeds)
    assert batch["observations"].shape == (3, 4, 30, 2)
    assert batch["actions"].shape == (3, 4, 30, 2)
    for name in ("log_probs", "rewards", "mask"):
        assert batch[name].shape == (3, 4, 30)
    # A task's trajectories do not depend on the other tasks of the batch.
    alone = sample(tasks[1:2], seeds[1:2])
    for name in rollouts.FIELDS:
        np.testing.assert_array_equal(alone[name][0], batch[name][1])
    again = sample(tasks, seeds)
    np.testing.assert_array_equal(again["actions"], batch["actions"])
    # Log-probabilities are those of the actions under the policy.
    params = policy(tf.reshape(batch["observations"], [-1, 2]))
    np.testing.assert_allclose(
        tf.reshape(gaussian.log_prob(params, tf.reshape(batch["actions"], [-1, 2])), [3, 4, 30]),
        batch["log_probs"], rtol=1e-5, atol=1e-5)
    # Observations follow the clipped actions from the origin.
    positions = np.cumsum(np.clip(batch["actions"].numpy(), -0.1, 0.1), axis=2)
    np.testing.assert_allclose(batch["observations"][:, :, 1:], positions[:, :, :-1], atol=1e-5)
    # Rewards: minus the distance to the goal while alive, 0 after the episode ended.
    distance = np.linalg.norm(positions - tasks.numpy()[:, None, None], axis=-1)
    mask = batch["mask"].numpy()
    np.testing.assert_allclose(batch["rewards"], -distance * mask, atol=1e-5)
    reached = np.all(np.abs(positions - tasks.numpy()[:, None, None]) < 0.01, -1)
    expected_mask = np.concatenate([np.ones([3, 4, 1]), np.cumprod(~reached, 2)[..., :-1]], 2)
    np.testing.assert_array_equal(mask, expected_mask)


def _random_trajectories(seed=0, tasks=2, count=3, horizon=6):
    rng = np.random.default_rng(seed)
    mask = np.ones([tasks, count, horizon], np.float32)
    mask[0, 1, 4:] = 0.0  # one episode ended early
    return {
        "observations": rng.normal(size=[tasks, count, horizon, 2]).astype(np.float32),
        "rewards": (rng.normal(size=[tasks, count, horizon]) * mask).astype(np.float32),
        "mask": mask,
    }


def test_discounted_returns_match_a_loop():
    rewards = np.random.default_rng(1).normal(size=[2, 5]).astype(np.float32)
    expected = np.zeros_like(rewards)
    for t in reversed(range(5)):
        expected[:, t] = rewards[:, t] + 0.9 * (expected[:, t + 1] if t < 4 else 0)
    np.testing.assert_allclose(advantages.discounted_returns(tf.constant(rewards), 0.9), expected,
                               rtol=1e-6)


def test_linear_baseline_is_each_tasks_least_squares_fit():
    data = _random_trajectories()
    returns = advantages.discounted_returns(tf.constant(data["rewards"]), 0.99)
    values = advantages.linear_baseline(tf.constant(data["observations"]), returns,
                                        tf.constant(data["mask"]), l2=0.0)
    for task in range(2):
        obs, mask = data["observations"][task], data["mask"][task]
        time = np.broadcast_to(np.arange(6)[None, :, None] / 100.0, mask.shape + (1,))
        features = np.concatenate([obs, obs ** 2, time, time ** 2, time ** 3,
                                   np.ones_like(time)], -1)[mask > 0]
        target = returns.numpy()[task][mask > 0]
        coefficients = np.linalg.lstsq(features.astype(np.float64), target, rcond=None)[0]
        np.testing.assert_allclose(values.numpy()[task][mask > 0], features @ coefficients,
                                   rtol=1e-4, atol=1e-4)
        assert np.all(values.numpy()[task][mask == 0] == 0)


def test_gae_with_lambda_one_is_returns_less_the_baseline():
    data = {k: tf.constant(v) for k, v in _random_trajectories().items()}
    returns = advantages.discounted_returns(data["rewards"], 0.95)
    values = advantages.linear_baseline(data["observations"], returns, data["mask"])
    np.testing.assert_allclose(advantages.advantages(data, 0.95, 1.0),
                               (returns - values) * data["mask"], atol=1e-4)
    # lambda = 0: one-step temporal differences.
    next_values = np.concatenate([values.numpy()[..., 1:], np.zeros([2, 3, 1])], -1)
    np.testing.assert_allclose(advantages.advantages(data, 0.95, 0.0),
                               (data["rewards"] + 0.95 * next_values - values) * data["mask"],
                               atol=1e-5)
    np.testing.assert_allclose(advantages.advantages(data, 0.95, baseline=None),
                               returns * data["mask"], atol=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        advantages.advantages(data, baseline="critic")


def test_standardized_uses_only_unmasked_steps():
    data = _random_trajectories()
    values, scale = advantages.standardized(tf.constant(data["rewards"]),
                                            tf.constant(data["mask"]))
    for task in range(2):
        real = data["mask"][task] > 0
        np.testing.assert_allclose(values.numpy()[task][real].mean(), 0.0, atol=1e-6)
        np.testing.assert_allclose(values.numpy()[task][real].std(), 1.0, rtol=1e-4)
        np.testing.assert_allclose(scale.numpy()[task].item(),
                                   data["rewards"][task][real].std(), rtol=1e-4)
        assert np.all(values.numpy()[task][~real] == 0)


def test_task_batches_are_reproducible_and_resumable():
    env = envs.Navigation2D()
    stream = list(tf_maml.rl.task_batches(env, 5, seed=4, num_batches=3))
    resumed = list(tf_maml.rl.task_batches(env, 5, seed=4, num_batches=1, start_batch=2))
    np.testing.assert_array_equal(stream[2]["tasks"], resumed[0]["tasks"])
    np.testing.assert_array_equal(stream[2]["seeds"], resumed[0]["seeds"])
    assert not np.array_equal(stream[0]["tasks"], stream[1]["tasks"])
    other = next(iter(tf_maml.rl.task_batches(env, 5, seed=5, num_batches=1)))
    assert not np.array_equal(other["tasks"], stream[0]["tasks"])
    assert stream[0]["tasks"].shape == (5, 2) and stream[0]["seeds"].dtype == tf.int32
