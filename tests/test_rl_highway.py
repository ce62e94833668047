"""highway-env's traffic as tasks: rollouts against highway-env by hand, the task's effect."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tf_maml.rl.experiment
from tf_maml.rl import envs
from tf_maml.rl.envs import gym_pools, highway

from test_rl_envs import reset_seeds, sample_fn
from configs import highway as highway_config  # helpers put the repository on the path

pytest.importorskip("highway_env")


@pytest.mark.parametrize("workers", [0, 2])  # stepped here, or in two processes
def test_highway_rollouts_match_highway_env_by_hand(workers):
    env, trajectories = envs.HighwayTraffic(horizon=4, workers=workers), 2
    assert (env.observation_size, env.action_space.n, env.task_size) == (25, 5, 4)
    tasks = tf.constant([[1.5, 2.4, 0.6, 1.0], [0.7, 3.6, 2.4, 0.0]])  # 2 and 4 lanes
    seeds = tf.constant([[1, 2], [3, 4]])
    result = sample_fn(env, trajectories)(tasks, seeds)
    for t, k in np.ndindex(2, trajectories):
        by_hand = highway.make_highway(4)
        density, lanes, time_wanted, politeness = tasks[t].numpy()
        by_hand.unwrapped.configure({"vehicles_density": float(density),
                                     "lanes_count": int(round(lanes))})
        by_hand.time_wanted, by_hand.politeness = float(time_wanted), float(politeness)
        observation, _ = by_hand.reset(seed=gym_pools.gym_seed(
            reset_seeds(seeds, trajectories)[t, k]))
        road = by_hand.unwrapped.road
        assert len(road.network.lanes_list()) == int(round(lanes))
        others = [v for v in road.vehicles if v not in by_hand.unwrapped.controlled_vehicles]
        assert others and all(v.TIME_WANTED == pytest.approx(time_wanted)
                              and v.POLITENESS == pytest.approx(politeness) for v in others)
        for step, action in enumerate(result["actions"][t, k].numpy()):
            if result["mask"][t, k, step] == 0:
                break
            np.testing.assert_allclose(result["observations"][t, k, step],
                                       observation.reshape(-1), rtol=1e-5, atol=1e-6)
            observation, reward, terminated, truncated, _ = by_hand.step(int(action))
            np.testing.assert_allclose(result["rewards"][t, k, step], reward, rtol=1e-5)
    env.close()


def test_highway_tasks_config_and_errors():
    env = envs.HighwayTraffic(horizon=3)
    tasks = env.sample_tasks(300, tf.constant([0, 1])).numpy()
    low, high = np.array(highway.DEFAULT_TASK_RANGE)
    assert np.all(tasks >= low - 1e-6) and np.all(tasks <= high + 1e-6)
    assert np.all(tasks.std(0) > 0.1)
    lanes = np.round(tasks[:, 1])
    assert set(lanes) == {2, 3, 4} and all(60 < np.sum(lanes == n) < 140 for n in (2, 3, 4))
    restored = envs.deserialize(json.loads(json.dumps(envs.serialize(env))))
    assert type(restored) is envs.HighwayTraffic
    assert restored.get_config() == env.get_config()
    with pytest.raises(ValueError, match="4 numbers"):
        envs.HighwayTraffic(task_range=((1, 2), (3, 4)))
    assert highway_config.get_config().env.name in tf_maml.rl.experiment.ENVIRONMENTS
