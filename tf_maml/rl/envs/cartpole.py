"""Cart-pole balancing whose task is the pole's mass and length and the cart's mass."""

import math

import keras
import tensorflow as tf

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.base import Discrete, TaskEnv, checked_tasks


def checked_range(value, name):
    """`value` as a `(low, high)` pair of floats with `0 < low <= high`, or an error naming it."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high) of numbers; received "
                         f"{value!r}.") from None
    if not 0.0 < low <= high or math.isinf(high):
        raise ValueError(f"`{name}` must be a finite range with 0 < low <= high; received "
                         f"{value!r}.")
    return low, high


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class CartPole(TaskEnv):
    """Gymnasium's `CartPole-v1` in TensorFlow, with the masses and the pole's length as the task.

    The dynamics are gymnasium's (Barto, Sutton and Anderson 1983): Euler
    integration with `tau = 0.02` s, a force of `+-10` N (action 1 pushes
    right, 0 left), gravity 9.8; an episode ends when `|x| > 2.4` or the
    pole leans more than 12 degrees, and every step earns 1, the ending one
    included. The state starts uniform in `[-0.05, 0.05]^4`. A task is
    `[pole_mass, pole_half_length, cart_mass]`, drawn uniformly in the
    given ranges; gymnasium's own pole is the task `DEFAULT_TASK`
    `[0.1, 0.5, 1.0]`. The observation is `[x, x_dot, theta, theta_dot]`
    (float32); the state is kept in float64, as gymnasium keeps it, so a
    trajectory follows gymnasium's to float precision.

    Args:
        horizon: steps per episode.
        pole_mass_range: `(low, high)` of the pole's mass (kg).
        half_length_range: `(low, high)` of half the pole's length (m).
        cart_mass_range: `(low, high)` of the cart's mass (kg).

    Example:

    ```python
    env = tf_maml.rl.envs.CartPole()
    tasks = env.sample_tasks(20, seed=[0, 0])                # [20, 3]
    state, obs = env.reset(tasks, tf.zeros([20, 2], tf.int32))
    state, obs, reward, done = env.step(tasks, state, tf.ones([20], tf.int32))
    ```
    """

    observation_size = 4
    task_size = 3
    action_space = Discrete(2)
    DEFAULT_TASK = (0.1, 0.5, 1.0)
    gravity = 9.8
    force_mag = 10.0
    tau = 0.02
    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360
    initial_range = 0.05

    def __init__(self, horizon=200, pole_mass_range=(0.05, 0.5),
                 half_length_range=(0.25, 1.0), cart_mass_range=(0.5, 2.0)):
        self.horizon = checked_int(horizon, "horizon", 1)
        self.pole_mass_range = checked_range(pole_mass_range, "pole_mass_range")
        self.half_length_range = checked_range(half_length_range, "half_length_range")
        self.cart_mass_range = checked_range(cart_mass_range, "cart_mass_range")

    def sample_tasks(self, count, seed):
        ranges = (self.pole_mass_range, self.half_length_range, self.cart_mass_range)
        low = tf.constant([r[0] for r in ranges], tf.float32)
        high = tf.constant([r[1] for r in ranges], tf.float32)
        unit = tf.random.stateless_uniform([count, self.task_size], seed)
        return low + unit * (high - low)

    def reset(self, tasks, seeds):
        checked_tasks(self, tasks)
        state = tf.map_fn(
            lambda seed: tf.random.stateless_uniform(
                [4], seed, -self.initial_range, self.initial_range, tf.float64),
            tf.convert_to_tensor(seeds, tf.int32), fn_output_signature=tf.float64)
        return state, tf.cast(state, tf.float32)

    def step(self, tasks, state, action):
        tasks = tf.cast(checked_tasks(self, tasks), tf.float64)
        pole_mass, length, cart_mass = tf.unstack(tasks, axis=-1)
        total_mass = pole_mass + cart_mass
        polemass_length = pole_mass * length
        x, x_dot, theta, theta_dot = tf.unstack(state, axis=-1)
        force = tf.where(tf.equal(tf.cast(action, tf.int32), 1),
                         tf.constant(self.force_mag, tf.float64),
                         tf.constant(-self.force_mag, tf.float64))
        cos, sin = tf.cos(theta), tf.sin(theta)
        temp = (force + polemass_length * tf.square(theta_dot) * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            length * (4.0 / 3.0 - pole_mass * tf.square(cos) / total_mass))
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        state = tf.stack([x + self.tau * x_dot, x_dot + self.tau * x_acc,
                          theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc], -1)
        done = tf.logical_or(tf.abs(state[:, 0]) > self.x_threshold,
                             tf.abs(state[:, 2]) > self.theta_threshold)
        reward = tf.ones(tf.shape(done), tf.float32)
        return state, tf.cast(state, tf.float32), reward, done

    def get_config(self):
        return {"horizon": self.horizon, "pole_mass_range": list(self.pole_mass_range),
                "half_length_range": list(self.half_length_range),
                "cart_mass_range": list(self.cart_mass_range)}
