"""The MAML paper's half-cheetahs, a goal velocity or a goal direction, through the gymnasium
bridge."""

import functools

import keras
import tensorflow as tf

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.gym_bridge import GymTaskEnv, checked_task_range, gymnasium


def make_half_cheetah(ctrl_cost_weight, max_episode_steps):
    """Gymnasium's MuJoCo `HalfCheetah-v5`."""
    return gymnasium().make("HalfCheetah-v5", ctrl_cost_weight=ctrl_cost_weight,
                            max_episode_steps=max_episode_steps)


def goal_velocity_reward(task, reward, info, action):
    """Minus the distance of the forward velocity to the goal `task[0]`, plus the control reward."""
    del reward, action
    return -abs(float(info["x_velocity"]) - float(task[0])) + float(info["reward_ctrl"])


def goal_direction_reward(task, reward, info, action):
    """The velocity along the goal direction `task[0]` (+1 forward, -1 backward), plus the
    control reward."""
    del reward, action
    return float(task[0]) * float(info["x_velocity"]) + float(info["reward_ctrl"])


def checked_ctrl_cost_weight(ctrl_cost_weight):
    """`ctrl_cost_weight` as a float, or an error naming it: a finite number >= 0."""
    if (isinstance(ctrl_cost_weight, bool) or not isinstance(ctrl_cost_weight, (int, float))
            or not 0 <= ctrl_cost_weight < float("inf")):
        raise ValueError(f"`ctrl_cost_weight` must be a finite number >= 0; received "
                         f"{ctrl_cost_weight!r}.")
    return float(ctrl_cost_weight)


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class HalfCheetahVelocity(GymTaskEnv):
    """Half-cheetah running at a goal velocity (Finn et al. 2017, section 5.3), in MuJoCo.

    As pytorch-maml-rl's `HalfCheetahVel-v2`: a task is a goal velocity
    drawn uniformly in `velocity_range`; the reward is `-|forward velocity
    - goal| - ctrl_cost_weight * |action|^2`, the forward velocity and the
    control cost those of gymnasium's `HalfCheetah-v5` (whose 17-number
    observation leaves out the torso's x position and, unlike
    pytorch-maml-rl's, its center of mass). Needs `pip install
    "gymnasium[mujoco]"`. Not a pure function (see `GymTaskEnv`).

    Args:
        horizon: steps per episode.
        velocity_range: `(low, high)` of the goal velocity.
        ctrl_cost_weight: weight of the squared action in the reward.
        workers: processes that step the simulator (`GymTaskEnv`'s).

    Example:

    ```python
    env = tf_maml.rl.envs.HalfCheetahVelocity()
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env), env, parallel_tasks=1)
    meta.compile(optimizer="adam", jit_compile=False)
    meta.fit(tf_maml.rl.task_batches(env, meta_batch_size=40), steps_per_epoch=10)
    ```
    """

    def __init__(self, horizon=200, velocity_range=(0.0, 2.0), ctrl_cost_weight=0.05, workers=0):
        horizon = checked_int(horizon, "horizon", 1)
        low, high = checked_task_range(velocity_range)
        if low.shape != (1,):
            raise ValueError(f"`velocity_range` must be a pair of numbers; received "
                             f"{velocity_range!r}.")
        self.velocity_range = (float(low[0]), float(high[0]))
        self.ctrl_cost_weight = checked_ctrl_cost_weight(ctrl_cost_weight)
        super().__init__(functools.partial(make_half_cheetah, self.ctrl_cost_weight, horizon),
                         task_range=(low, high), reward_fn=goal_velocity_reward,
                         horizon=horizon, workers=workers)

    def get_config(self):
        return {"horizon": self.horizon, "velocity_range": list(self.velocity_range),
                "ctrl_cost_weight": self.ctrl_cost_weight, "workers": self.workers}


def random_directions(count, seed):
    """`[count, 1]` of +1 and -1, each with probability 1/2."""
    coin = tf.random.stateless_uniform([count, 1], seed, maxval=2, dtype=tf.int32)
    return tf.cast(2 * coin - 1, tf.float32)


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class HalfCheetahDirection(GymTaskEnv):
    """Half-cheetah running forward or backward (Finn et al. 2017, section 5.3), in MuJoCo.

    As pytorch-maml-rl's `HalfCheetahDir-v2`: a task is a direction, +1
    (forward) or -1 (backward), each drawn with probability 1/2; the reward
    is `direction * forward velocity - ctrl_cost_weight * |action|^2`, the
    velocity and the control cost those of gymnasium's `HalfCheetah-v5`.
    Nothing in the observation says the direction: the first episodes must
    find it. Needs `pip install "gymnasium[mujoco]"`. Not a pure function
    (see `GymTaskEnv`).

    Args:
        horizon: steps per episode.
        ctrl_cost_weight: weight of the squared action in the reward.
        workers: processes that step the simulator (`GymTaskEnv`'s).
    """

    def __init__(self, horizon=200, ctrl_cost_weight=0.05, workers=0):
        horizon = checked_int(horizon, "horizon", 1)
        self.ctrl_cost_weight = checked_ctrl_cost_weight(ctrl_cost_weight)
        super().__init__(functools.partial(make_half_cheetah, self.ctrl_cost_weight, horizon),
                         sample_tasks_fn=random_directions, task_size=1,
                         reward_fn=goal_direction_reward, horizon=horizon, workers=workers)

    def get_config(self):
        return {"horizon": self.horizon, "ctrl_cost_weight": self.ctrl_cost_weight,
                "workers": self.workers}
