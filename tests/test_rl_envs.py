"""tf_maml.rl.envs: CartPole against gymnasium's, and the gymnasium bridge driven by rollouts."""

import json
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_maml.rl import distributions, envs, experiment, policies, rollouts
from tf_maml.rl.envs import gym_pools
from tf_maml.rl import plots as rl_plots


def gym_cartpole(task=envs.CartPole.DEFAULT_TASK):
    """Gymnasium's CartPole-v1 itself (no wrappers), with the pole `task`."""
    gym = pytest.importorskip("gymnasium")
    env = gym.make("CartPole-v1").unwrapped
    set_pole(env, task)
    return env


def set_pole(env, task):
    """`set_task` of gymnasium's CartPole: `task` = [pole mass, pole half-length]."""
    env = env.unwrapped
    env.masspole, env.length = float(task[0]), float(task[1])
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def sample_fn(env, trajectories, jit_compile=False):
    """A compiled `rollouts.sample` of a small random policy for `env`."""
    policy = policies.mlp(env, hidden=(8,))
    distribution = distributions.for_action_space(env.action_space)
    return tf.function(
        lambda tasks, seeds: rollouts.sample(policy, distribution, env, tasks, seeds,
                                             trajectories),
        jit_compile=jit_compile)


def reset_seeds(seeds, trajectories):
    """The `[T, K, 2]` reset seeds `rollouts.sample` gives the environments of `seeds` `[T, 2]`."""
    per_trajectory = tf.reshape(rollouts.trajectory_seeds(seeds, 2), [-1, 2, 2])
    return rollouts.trajectory_seeds(per_trajectory[:, 1], trajectories).numpy()


# ----------------------------------------------------------------------
# CartPole.


def test_cartpole_follows_gymnasium():
    env, batch = envs.CartPole(), 8
    tasks = tf.constant([env.DEFAULT_TASK] * batch)
    state, observation = env.reset(tasks, tf.reshape(tf.range(2 * batch), [batch, 2]))
    gyms = [gym_cartpole() for _ in range(batch)]
    for gym_env, initial in zip(gyms, state.numpy()):
        gym_env.reset(seed=0)
        gym_env.state = initial.copy()
    step = tf.function(env.step)
    actions = np.random.default_rng(0).integers(0, 2, [env.horizon, batch])
    ended = np.zeros(batch, bool)
    for action in actions:
        state, observation, reward, done = step(tasks, state, tf.constant(action, tf.int32))
        for i, gym_env in enumerate(gyms):
            if ended[i]:
                continue
            gym_observation, gym_reward, terminated, _, _ = gym_env.step(int(action[i]))
            np.testing.assert_allclose(observation[i], gym_observation, rtol=1e-6, atol=1e-6)
            assert (reward[i], done[i]) == (gym_reward, terminated)
            ended[i] = terminated
    assert ended.all()  # every episode was checked up to and including its end


def test_cartpole_tasks_change_dynamics():
    env = envs.CartPole()
    state = tf.constant([[0.0, 0.0, 0.1, 0.0]] * 3, tf.float64)
    tasks = tf.constant([[0.1, 0.5, 1.0], [0.1, 1.0, 1.0], [0.1, 0.5, 2.0]])
    action = tf.ones([3], tf.int32)
    state, *_ = env.step(tasks, env.step(tasks, state, action)[0], action)
    x_dot, theta_dot = np.abs(state[:, 1]), np.abs(state[:, 3])
    assert theta_dot[1] < 0.6 * theta_dot[0]  # a longer pole turns slower
    assert x_dot[2] < 0.6 * x_dot[0]  # a heavier cart speeds up less


def test_cartpole_reset_is_a_function_of_each_seed():
    env = envs.CartPole()
    tasks = env.sample_tasks(5, [0, 0])
    seeds = tf.constant([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    state, observation = env.reset(tasks, seeds)
    np.testing.assert_array_equal(env.reset(tasks, seeds)[1], observation)
    np.testing.assert_array_equal(env.reset(tasks[2:], seeds[2:])[1], observation[2:])
    assert observation.dtype == tf.float32 and observation.shape == [5, 4]
    assert np.all(np.abs(state) <= 0.05) and len(np.unique(observation[:, 0])) == 5


def test_cartpole_tasks_stay_in_range():
    env = envs.CartPole(pole_mass_range=(0.2, 0.3), half_length_range=(0.4, 0.6),
                        cart_mass_range=(1.0, 1.5))
    tasks = env.sample_tasks(1000, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(tasks, env.sample_tasks(1000, tf.constant([3, 4])))
    low, high = np.array([0.2, 0.4, 1.0]), np.array([0.3, 0.6, 1.5])
    assert np.all(tasks >= low - 1e-6) and np.all(tasks <= high + 1e-6)
    np.testing.assert_allclose(tasks.min(0), low, atol=0.01)
    np.testing.assert_allclose(tasks.max(0), high, atol=0.01)


def test_cartpole_config_round_trip():
    env = envs.CartPole(horizon=50, pole_mass_range=(0.1, 0.2), cart_mass_range=(1, 3))
    config = json.loads(json.dumps(envs.serialize(env)))
    restored = envs.deserialize(config)
    assert type(restored) is envs.CartPole and restored.get_config() == env.get_config()
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(env)).get_config() == env.get_config()


def test_cartpole_errors_name_the_value():
    with pytest.raises(ValueError, match=r"pole_mass_range.*\(0\.5, 0\.1\)"):
        envs.CartPole(pole_mass_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="`horizon`.*0"):
        envs.CartPole(horizon=0)
    with pytest.raises(ValueError, match=r"\[batch, 3\].*\(4, 2\)"):
        envs.CartPole().reset(tf.zeros([4, 2]), tf.zeros([4, 2], tf.int32))


def test_cartpole_rollouts_under_xla():
    env = envs.CartPole(horizon=40)
    sample = sample_fn(env, trajectories=6, jit_compile=True)
    result = sample(env.sample_tasks(2, [0, 0]), tf.constant([[1, 2], [3, 4]]))
    mask = result["mask"].numpy()
    np.testing.assert_array_equal(result["rewards"], mask)  # 1 a step while alive
    assert np.all(np.diff(mask, axis=-1) <= 0) and mask.min() == 0  # episodes end, and stay ended


# ----------------------------------------------------------------------
# The gymnasium bridge.


def pole_bridge(horizon=60):
    pytest.importorskip("gymnasium")
    return envs.GymTaskEnv("CartPole-v1", set_pole, task_range=([0.05, 0.25], [0.5, 1.0]),
                           horizon=horizon)


def test_bridge_masks_ended_episodes_as_gymnasium_ends_them():
    gym = pytest.importorskip("gymnasium")
    env, trajectories = pole_bridge(), 3
    tasks, seeds = env.sample_tasks(2, [0, 0]), tf.constant([[5, 6], [7, 8]])
    result = sample_fn(env, trajectories)(tasks, seeds)
    mask = result["mask"].numpy()
    assert np.all(np.diff(mask, axis=-1) <= 0) and mask.min() == 0
    for t, k in np.ndindex(2, trajectories):
        by_hand = gym.make("CartPole-v1")
        set_pole(by_hand, tasks[t])
        observation, _ = by_hand.reset(seed=gym_pools.gym_seed(reset_seeds(seeds, 3)[t, k]))
        rewards = []
        for action in result["actions"][t, k].numpy():
            np.testing.assert_allclose(result["observations"][t, k, len(rewards)], observation)
            observation, reward, terminated, truncated, _ = by_hand.step(int(action))
            rewards.append(reward)
            if terminated or truncated:
                break
        padded = np.pad(rewards, (0, env.horizon - len(rewards)))
        np.testing.assert_array_equal(result["rewards"][t, k], padded)
        assert mask[t, k].sum() == len(rewards)


def test_bridge_ended_environment_stays_put():
    env = pole_bridge()
    tasks = tf.constant([[0.1, 0.5]])
    state, observation = env.reset(tasks, tf.constant([[0, 0]]))
    done = False
    while not done:
        last = observation
        state, observation, reward, done = env.step(tasks, state, tf.constant([1]))
    assert reward.numpy()[0] == 1.0  # the ending step earns its reward
    state, again, reward, done = env.step(tasks, state, tf.constant([0]))
    np.testing.assert_array_equal(again, observation)
    assert (reward.numpy()[0], done.numpy()[0]) == (0.0, True)
    assert not np.array_equal(last, observation)


def test_bridge_refuses_interleaved_rollouts():
    env = pole_bridge()
    tasks = tf.constant([[0.1, 0.5]] * 2)
    first, _ = env.reset(tasks, tf.zeros([2, 2], tf.int32))
    env.reset(tasks, tf.ones([2, 2], tf.int32))
    with pytest.raises(Exception, match="at once"):
        env.step(tasks, first, tf.zeros([2], tf.int32))


def test_bridge_workers_give_the_rollouts_of_one_process(monkeypatch):
    pytest.importorskip("gymnasium")
    import multiprocessing  # noqa: PLC0415

    def pole_family(workers):  # lambdas travel to the workers by cloudpickle
        def set_task(env, task):
            if task[0] > 10:
                raise ValueError(f"no pole of mass {task[0]}")
            if task[0] < 0:  # a simulator stuck in a loop
                time.sleep(60)
            set_pole(env, task)
        return envs.GymTaskEnv("CartPole-v1", set_task, task_range=([0.05, 0.25], [0.5, 1.0]),
                               reward_fn=lambda task, reward, info, action: reward * task[1],
                               horizon=40, workers=workers)

    # 3 tasks x 3 trajectories: 9 environments, 5 and 4 in the two workers.
    tasks = tf.constant([[0.1, 0.3], [0.4, 0.9], [0.2, 0.5]])
    seeds = tf.constant([[5, 6], [7, 8], [9, 10]])
    keras.utils.set_random_seed(0)  # one policy for both
    here = sample_fn(pole_family(0), 3)(tasks, seeds)
    env = pole_family(2)
    before = len(multiprocessing.active_children())
    keras.utils.set_random_seed(0)
    there = sample_fn(env, 3)(tasks, seeds)
    assert len(multiprocessing.active_children()) == before + 2
    assert here["mask"].numpy().min() == 0  # some episodes ended early

    def assert_same(sampled):
        for name in ("observations", "actions", "rewards", "mask"):
            np.testing.assert_array_equal(here[name], sampled[name], err_msg=name)

    assert_same(there)
    # Both workers fail: both errors are read and raised, and the pool serves on.
    with pytest.raises(Exception, match=r"Worker 0 (.|\n)*no pole of mass 20(.|\n)*"
                                        r"Worker 1 (.|\n)*no pole of mass 30"):
        env.reset(tf.constant([[20.0, 0.5], [30.0, 0.5]]), tf.zeros([2, 2], tf.int32))
    keras.utils.set_random_seed(0)
    assert_same(sample_fn(env, 3)(tasks, seeds))
    env.close()
    assert len(multiprocessing.active_children()) == before
    others = set(multiprocessing.active_children())
    state, _ = env.reset(tasks, seeds)  # new workers after a close
    workers = set(multiprocessing.active_children()) - others
    assert len(workers) == 2
    workers.pop().kill()  # a worker dies: the error says so, and a reset starts new ones
    with pytest.raises(Exception, match="A worker of the gymnasium pool exited"):
        env.step(tasks, state, tf.zeros([3], tf.int32))
    with pytest.raises(Exception, match="after a failed reset or step"):
        env.step(tasks, state, tf.zeros([3], tf.int32))
    keras.utils.set_random_seed(0)
    assert_same(sample_fn(env, 3)(tasks, seeds))
    # A worker stuck: the error says so at the timeout, its workers end, a reset starts new ones.
    start = time.monotonic()
    with monkeypatch.context() as patch, pytest.raises(
            Exception, match="Worker 0 of the gymnasium pool did not answer `reset` within 2 s"):
        patch.setattr(gym_pools, "REPLY_TIMEOUT_SECONDS", 2.0)
        env.reset(tf.constant([[-1.0, 0.5], [0.1, 0.5]]), tf.zeros([2, 2], tf.int32))
    # Killed: neither the minute it sleeps nor the 10 s a worker gets to close.
    assert time.monotonic() - start < 9
    assert len(multiprocessing.active_children()) == len(others)
    keras.utils.set_random_seed(0)
    assert_same(sample_fn(env, 3)(tasks, seeds))
    state, _ = env.reset(tasks, seeds)
    env.close()
    with pytest.raises(Exception, match="after a failed reset or step, or close"):
        env.step(tasks, state, tf.zeros([3], tf.int32))
    assert len(multiprocessing.active_children()) == len(others)


def test_bridge_errors_name_the_value():
    pytest.importorskip("gymnasium")
    with pytest.raises(ValueError, match="one of `task_range` and `sample_tasks_fn`"):
        envs.GymTaskEnv("CartPole-v1", set_pole)
    with pytest.raises(ValueError, match=r"low <= high.*\(\[1, 1\], \[0, 0\]\)"):
        envs.GymTaskEnv("CartPole-v1", set_pole, task_range=([1, 1], [0, 0]))
    with pytest.raises(TypeError, match="`set_task`.*3"):
        envs.GymTaskEnv("CartPole-v1", 3, task_range=(0, 1))
    with pytest.raises(TypeError, match="`success_fn`.*3"):
        envs.GymTaskEnv("CartPole-v1", set_pole, task_range=(0, 1), success_fn=3)
    with pytest.raises(ValueError, match="`workers`.*-1"):
        envs.GymTaskEnv("CartPole-v1", set_pole, task_range=(0, 1), workers=-1)


@pytest.mark.parametrize("module, make, extra", [
    ("metaworld", lambda: envs.MetaWorldML1("reach-v3"), "metaworld"),
    ("highway_env", lambda: envs.HighwayTraffic(), "driving")])
def test_a_missing_simulator_says_how_to_install_it(monkeypatch, module, make, extra):
    pytest.importorskip("gymnasium")
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=rf'pip install .*"tf_maml\[{extra}\]"'):
        make()


@pytest.fixture
def in_tmp_path(monkeypatch, tmp_path):
    """MuJoCo 4 logs a deprecation of HalfCheetah's model to MUJOCO_LOG.TXT in the cwd."""
    monkeypatch.chdir(tmp_path)


def half_cheetah_velocity(horizon):
    pytest.importorskip("mujoco")
    return envs.HalfCheetahVelocity(horizon=horizon)


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("make, tasks, reward_by_hand, traced_velocity", [
    (envs.HalfCheetahVelocity, [[0.5], [1.5]],
     lambda task, velocity, action: -abs(velocity - task) - 0.05 * np.sum(action ** 2),
     lambda task, velocity: velocity),
    (envs.HalfCheetahDirection, [[1.0], [-1.0]],
     lambda task, velocity, action: task * velocity - 0.05 * np.sum(action ** 2),
     lambda task, velocity: task * velocity)])  # along the goal direction
def test_half_cheetah_rollouts_match_gymnasium(make, tasks, reward_by_hand, traced_velocity):
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    env, trajectories = make(horizon=30), 2
    trace = rl_plots.episode_trace(env)
    assert (env.observation_size, env.action_space.size, env.task_size) == (17, 6, 1)
    tasks, seeds = tf.constant(tasks), tf.constant([[1, 2], [3, 4]])
    result = sample_fn(env, trajectories)(tasks, seeds)
    np.testing.assert_array_equal(result["mask"], 1.0)
    for t, k in np.ndindex(2, trajectories):
        by_hand = gym.make("HalfCheetah-v5", ctrl_cost_weight=0.05)
        seed = gym_pools.gym_seed(reset_seeds(seeds, trajectories)[t, k])
        observation, _ = by_hand.reset(seed=seed)
        task = float(tasks[t, 0])
        for step, action in enumerate(result["actions"][t, k].numpy()):
            np.testing.assert_allclose(result["observations"][t, k, step], observation,
                                       rtol=1e-5, atol=1e-5)
            # The episode figure's velocity: the torso's, MuJoCo's qvel[0].
            traced = trace.values({"observations": result["observations"][t, k].numpy()},
                                  tasks[t].numpy())
            expected = traced_velocity(task, by_hand.unwrapped.data.qvel[0])
            assert traced[step] == pytest.approx(expected, abs=1e-5)
            action = np.clip(action, -1.0, 1.0)
            observation, _, _, _, info = by_hand.step(action)
            np.testing.assert_allclose(result["rewards"][t, k, step],
                                       reward_by_hand(task, info["x_velocity"], action),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("in_tmp_path")
def test_half_cheetah_goal_velocity_changes_only_the_reward():
    env = half_cheetah_velocity(horizon=20)
    seeds = tf.constant([[1, 2], [1, 2]])
    result = sample_fn(env, 1)(tf.constant([[0.0], [2.0]]), seeds)
    np.testing.assert_array_equal(result["observations"][0], result["observations"][1])
    slow, fast = result["rewards"].numpy()[:, 0]
    # Same steps, so the rewards differ by |v| - |v - 2| (the control costs cancel): in [-2, 2].
    gap = slow - fast
    assert np.all(np.abs(gap) <= 2 + 1e-4) and np.abs(gap).max() > 0.01


@pytest.mark.usefixtures("in_tmp_path")
def test_half_cheetah_direction_changes_only_the_sign_of_the_velocity_reward():
    pytest.importorskip("mujoco")
    env = envs.HalfCheetahDirection(horizon=20)
    seeds = tf.constant([[1, 2], [1, 2]])
    result = sample_fn(env, 1)(tf.constant([[1.0], [-1.0]]), seeds)
    np.testing.assert_array_equal(result["observations"][0], result["observations"][1])
    np.testing.assert_array_equal(result["actions"][0], result["actions"][1])
    forward, backward = result["rewards"].numpy()[:, 0]
    # v - c and -v - c: their sum is twice the control reward of the (clipped) actions.
    control = -0.05 * np.sum(np.clip(result["actions"].numpy()[0, 0], -1, 1) ** 2, -1)
    np.testing.assert_allclose(forward + backward, 2 * control, rtol=1e-4, atol=1e-5)
    assert np.abs(forward - backward).max() > 0.01  # the velocity, twice


@pytest.mark.usefixtures("in_tmp_path")
def test_half_cheetah_velocity_tasks_and_config():
    env = half_cheetah_velocity(horizon=50)
    goals = env.sample_tasks(500, tf.constant([0, 1])).numpy()
    assert goals.shape == (500, 1) and goals.min() >= 0.0 and goals.max() <= 2.0
    assert goals.min() < 0.05 and goals.max() > 1.95
    restored = envs.deserialize(json.loads(json.dumps(envs.serialize(env))))
    assert type(restored) is envs.HalfCheetahVelocity
    assert restored.get_config() == {"horizon": 50, "velocity_range": [0.0, 2.0],
                                     "ctrl_cost_weight": 0.05, "workers": 0}


@pytest.mark.usefixtures("in_tmp_path")
def test_half_cheetah_directions_are_forward_or_backward_at_even_odds():
    pytest.importorskip("mujoco")
    env = envs.HalfCheetahDirection(horizon=50, ctrl_cost_weight=0.1)
    directions = env.sample_tasks(1000, tf.constant([0, 1])).numpy()
    assert directions.shape == (1000, 1) and set(np.unique(directions)) == {-1.0, 1.0}
    assert 0.45 < np.mean(directions > 0) < 0.55
    again = env.sample_tasks(1000, tf.constant([0, 1])).numpy()
    np.testing.assert_array_equal(directions, again)
    assert np.any(env.sample_tasks(1000, tf.constant([0, 2])).numpy() != directions)
    restored = envs.deserialize(json.loads(json.dumps(envs.serialize(env))))
    assert type(restored) is envs.HalfCheetahDirection
    assert restored.get_config() == {"horizon": 50, "ctrl_cost_weight": 0.1, "workers": 0}
    for bad in (-1, float("inf"), True):
        with pytest.raises(ValueError, match="ctrl_cost_weight"):
            envs.HalfCheetahDirection(ctrl_cost_weight=bad)


@pytest.mark.usefixtures("in_tmp_path")
def test_half_cheetah_direction_run_reports_and_draws_its_episodes(tmp_path):
    pytest.importorskip("mujoco")
    from configs import half_cheetah as half_cheetah_config  # noqa: PLC0415

    config = half_cheetah_config.get_config("direction")
    assert config.task == "half_cheetah_direction" and config.env.name == "half_cheetah_direction"
    config.meta_steps, config.steps_per_epoch, config.meta_batch_size = 2, 1, 2
    config.trajectories, config.outer_steps, config.env.horizon = 2, 1, 5
    config.policy.hidden, config.eval_tasks, config.eval_max_steps = (8,), 2, 1
    config.verbose = 0
    report = experiment.run(config, str(tmp_path / "run"))
    for prefix in ("", "pretrained_", "random_"):
        assert len(report[f"{prefix}return_by_step"]) == 2, prefix
        assert np.all(np.isfinite(report[f"{prefix}return_by_step"]))
    assert (tmp_path / "run" / "episodes.png").exists()  # velocity along the goal direction
    with pytest.raises(ValueError, match="Unknown half-cheetah setting 'jump'"):
        half_cheetah_config.get_config("jump")
