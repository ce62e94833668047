"""2D point navigation, the MAML paper's first reinforcement-learning problem."""

import keras
import tensorflow as tf

from tf_maml.learners.arguments import checked_int, checked_positive
from tf_maml.rl.envs.base import Box, TaskEnv


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class Navigation2D(TaskEnv):
    """A point in the plane that must reach a goal (Finn et al. 2017, section 5.3).

    As pytorch-maml-rl's `2DNavigation-v0`: the point starts at the origin;
    a task is a goal drawn uniformly in `[-goal_range, goal_range]^2`; an
    action moves the point by the action clipped to `[-0.1, 0.1]^2`; the
    reward is minus the distance to the goal after the move; an episode ends
    within `0.01` of the goal (in both coordinates) or after `horizon` steps.
    The observation is the point's position.

    Example:

    ```python
    env = tf_maml.rl.envs.Navigation2D()
    goals = env.sample_tasks(20, seed=[0, 0])                # [20, 2]
    state, obs = env.reset(goals, tf.zeros([20, 2], tf.int32))
    state, obs, reward, done = env.step(goals, state, tf.fill([20, 2], 0.05))
    ```
    """

    observation_size = 2
    task_size = 2
    max_step = 0.1
    tolerance = 0.01

    def __init__(self, horizon=100, goal_range=0.5):
        self.horizon = checked_int(horizon, "horizon", 1)
        self.goal_range = checked_positive(goal_range, "goal_range")
        self.action_space = Box(2, -self.max_step, self.max_step)

    def sample_tasks(self, count, seed):
        return tf.random.stateless_uniform(
            [count, 2], seed, minval=-self.goal_range, maxval=self.goal_range)

    def reset(self, tasks, seeds):
        del seeds  # every episode starts at the origin
        position = tf.zeros([tf.shape(tasks)[0], 2], tf.float32)
        return position, position

    def step(self, tasks, state, action):
        position = state + tf.clip_by_value(action, -self.max_step, self.max_step)
        offset = position - tasks
        reward = -tf.norm(offset, axis=-1)
        done = tf.reduce_all(tf.abs(offset) < self.tolerance, axis=-1)
        return position, position, reward, done

    def get_config(self):
        return {"horizon": self.horizon, "goal_range": self.goal_range}
