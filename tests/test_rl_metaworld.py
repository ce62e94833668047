"""Success through the gymnasium bridge, Meta-World's ML1 as tasks, and its config's run."""

import json
import multiprocessing
import pickle

import numpy as np
import pytest
import tensorflow as tf

import tf_maml.rl.experiment
from tf_maml.rl import envs, rollouts
from tf_maml.rl import plots as rl_plots
from tf_maml.rl.envs import gym_bridge, gym_pools

from test_rl_envs import reset_seeds, sample_fn
from configs import metaworld as metaworld_config  # helpers put the repository on the path

gymnasium = pytest.importorskip("gymnasium")


class Counter(gymnasium.Env):
    """Counts the 1s played; `info` says solved only at the step the count hits the task's
    threshold (an episode succeeded if any step did)."""

    observation_space = gymnasium.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)
    threshold = 3

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.count += int(action)
        info = {"success": self.count == self.threshold}
        return np.array([self.count], np.float32), 0.0, False, False, info


def set_threshold(env, task):
    env.threshold = int(task[0])


def test_bridge_reports_success_as_gymnasium_info_says():
    env = envs.GymTaskEnv(Counter, set_threshold, task_range=([2], [6]), horizon=6,
                          success_fn=lambda info: info["success"])
    assert env.reports_success and not envs.GymTaskEnv(
        Counter, set_threshold, task_range=([2], [6]), horizon=6).reports_success
    tasks, seeds = tf.constant([[2.0], [5.0]]), tf.constant([[1, 2], [3, 4]])
    result = sample_fn(env, 8)(tasks, seeds)
    actions = result["actions"].numpy()
    # Succeeded if the count hit the threshold at some step, whatever it is at the end.
    hit = np.any(np.cumsum(actions, -1) == tasks.numpy()[:, :, None], -1)
    np.testing.assert_array_equal(result["success"], hit.astype(np.float32))
    assert 0 < hit.mean() < 1  # both outcomes occur
    assert np.any(hit & (actions.sum(-1) > tasks.numpy())), "no success that did not last"


def metaworld_env(env_name="reach-v3", horizon=12):
    pytest.importorskip("metaworld")
    return envs.MetaWorldML1(env_name, horizon=horizon)


def test_metaworld_rollouts_match_metaworld_with_its_own_tasks():
    """An ML1 task of Meta-World's own encoding, replayed by hand, against the bridge given
    that task's positions: observations (goal hidden), rewards and success agree."""
    metaworld = pytest.importorskip("metaworld")
    env, trajectories = metaworld_env(), 2
    assert (env.observation_size, env.action_space.size, env.task_size) == (39, 4, 6)
    benchmark = metaworld.ML1("reach-v3", seed=3)
    own = benchmark.test_tasks[:2]
    tasks = tf.constant([pickle.loads(t.data)["rand_vec"] for t in own], tf.float32)
    seeds = tf.constant([[1, 2], [3, 4]])
    result = sample_fn(env, trajectories)(tasks, seeds)
    for t, k in np.ndindex(2, trajectories):
        by_hand = benchmark.test_classes["reach-v3"]()
        by_hand.set_task(own[t])
        observation, _ = by_hand.reset(seed=gym_pools.gym_seed(
            reset_seeds(seeds, trajectories)[t, k]))
        solved = False
        for step, action in enumerate(result["actions"][t, k].numpy()):
            np.testing.assert_allclose(result["observations"][t, k, step], observation,
                                       rtol=1e-4, atol=1e-4)
            observation, reward, _, _, info = by_hand.step(np.clip(action, -1.0, 1.0))
            np.testing.assert_allclose(result["rewards"][t, k, step], reward, rtol=1e-4)
            solved = solved or bool(info["success"])
        assert result["success"][t, k] == float(solved)
    # The goal is hidden, as ML1's: the observation's last three numbers are 0.
    np.testing.assert_array_equal(result["observations"][..., -3:], 0.0)


def test_metaworld_success_is_reported_where_the_hand_starts_at_the_goal():
    env = metaworld_env(horizon=3)
    probe = env.make_environment()
    probe.set_task(metaworld_config_task(env))
    probe.reset()
    # The object away from the goal (reach-v3 redraws a goal within 0.15 of it).
    task = np.concatenate([[0.3, 0.9, 0.02], probe.tcp_center]).astype(np.float32)
    result = sample_fn(env, 2)(tf.constant([task]), tf.constant([[5, 6]]))
    np.testing.assert_array_equal(result["success"], [[1.0, 1.0]])


def metaworld_config_task(env):
    """One of ML1's own tasks for `env`'s skill."""
    import metaworld  # noqa: PLC0415

    return metaworld.ML1(env.env_name, seed=0).train_tasks[0]


def test_metaworld_tasks_are_drawn_as_ml1_draws_its_goals():
    """In the skill's range, and valid for it: push-v3 redraws a goal within 0.15 of the
    object at reset, forever once the task is frozen (about 6 % of uniform draws)."""
    env = metaworld_env("push-v3")
    tasks = env.sample_tasks(200, tf.constant([0, 1])).numpy()
    low, high = env.task_bounds
    assert tasks.shape == (200, 6) and np.all(tasks >= low - 1e-6) and np.all(tasks <= high + 1e-6)
    assert np.linalg.norm(tasks[:, :2] - tasks[:, 3:5], axis=1).min() >= 0.15
    # Object x and goal y vary; the table height does not.
    assert tasks[:, 0].std() > 0.03 and tasks[:, 4].std() > 0.02 and tasks[:, 2].std() < 1e-6
    np.testing.assert_array_equal(env.sample_tasks(200, tf.constant([0, 1])), tasks)
    assert not np.array_equal(env.sample_tasks(200, tf.constant([0, 2])), tasks)
    state, _ = env.reset(tasks[:40], tf.zeros([40, 2], tf.int32))  # each reset ends
    assert state.shape == (40, 2)
    restored = envs.deserialize(json.loads(json.dumps(envs.serialize(env))))
    assert type(restored) is envs.MetaWorldML1
    assert restored.get_config() == {"env_name": "push-v3", "horizon": 12, "workers": 0}


def test_metaworld_errors_name_the_value():
    pytest.importorskip("metaworld")
    with pytest.raises(ValueError, match="'grab-v9' is not a Meta-World ML1 skill"):
        envs.MetaWorldML1("grab-v9")
    with pytest.raises(ValueError, match="`horizon` 600 is past Meta-World's episode limit 500"):
        envs.MetaWorldML1("reach-v3", horizon=600)


def test_environments_without_success_refuse_to_report_it():
    env = envs.Navigation2D(horizon=3)
    assert not env.reports_success
    with pytest.raises(NotImplementedError, match="Navigation2D reports no success"):
        env.succeeded(tf.zeros([1, 2]))
    policy = tf_maml.rl.policies.mlp(env, hidden=(4,))
    sampled = rollouts.sample(policy, tf_maml.rl.distributions.for_action_space(
        env.action_space), env, env.sample_tasks(1, [0, 0]), tf.constant([[0, 1]]), 2)
    assert "success" not in sampled


@pytest.mark.parametrize("skill", ["reach-v3", "push-v3"])
def test_episode_traces_read_metaworld_s_own_distance_to_the_goal(skill):
    """The episode figure's distance (from the observation and the task vector) is the one
    Meta-World's success tests (`obj_to_target`), checked where it matters: the gripper
    steered onto the goal (reach), the object pushed from its start (push)."""
    metaworld = pytest.importorskip("metaworld")
    benchmark = metaworld.ML1(skill, seed=1)
    own = benchmark.train_tasks[0]
    env = benchmark.train_classes[skill]()
    env.set_task(own)
    env.reset(seed=0)
    trace = rl_plots.episode_trace(metaworld_env(skill, horizon=5))
    task = pickle.loads(own.data)["rand_vec"]
    target = env._target_pos if skill == "reach-v3" else env.obj_init_pos + [0.0, 0.05, 0.0]
    observations, distances = [], []
    for _ in range(60):
        action = np.append(np.clip(20.0 * (target - env.tcp_center), -1.0, 1.0), -1.0)
        observation, _, _, _, info = env.step(action)
        observations.append(observation)
        distances.append(info["obj_to_target"])
    traced = trace.values({"observations": np.array(observations)}, task)
    np.testing.assert_allclose(traced, distances, atol=0.006)  # the tool-hand offset varies
    if skill == "reach-v3":
        assert traced[-1] < 0.01  # steered onto the goal: well inside the success radius


def test_metaworld_run_reports_success_by_step_against_baselines(tmp_path, monkeypatch):
    pytest.importorskip("metaworld")
    pools = []

    class CountedPool(gym_bridge.ProcessPool):
        def __init__(self, *args):
            super().__init__(*args)
            pools.append(self)

    monkeypatch.setattr(gym_bridge, "ProcessPool", CountedPool)
    config = metaworld_config.get_config("reach")
    config.meta_steps, config.steps_per_epoch, config.meta_batch_size = 2, 1, 2
    config.trajectories, config.outer_steps, config.env.horizon = 2, 1, 5
    config.policy.hidden, config.eval_tasks, config.eval_max_steps = (8,), 2, 1
    config.verbose = 0
    assert config.env.workers == 2  # Meta-World steps in two worker processes
    before = len(multiprocessing.active_children())
    report = tf_maml.rl.experiment.run(config, str(tmp_path))
    # MAML's, the pretrained policy's and the random initialization's, each closed.
    assert len(pools) == 3 and not any(pool.alive for pool in pools)
    assert len(multiprocessing.active_children()) == before
    for prefix in ("", "pretrained_", "random_"):
        for measure in ("return", "success"):
            assert len(report[f"{prefix}{measure}_by_step"]) == 2, (prefix, measure)
            assert len(report[f"{prefix}{measure}_confidence_95"]) == 2
        assert all(0.0 <= s <= 1.0 for s in report[f"{prefix}success_by_step"])
    assert (tmp_path / "success_by_step.png").exists()
    assert (tmp_path / "episodes.png").exists()  # the hand's distance to the goal
    history = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert "success" in history and "val_success" in history
    with pytest.raises(ValueError, match="Unknown Meta-World setting 'pick'"):
        metaworld_config.get_config("pick")
