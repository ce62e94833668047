"""The shape of a task environment: batched TensorFlow functions of a task parameter.

A `TaskEnv` runs a batch of environments at once, each with its own task
parameter (a goal, a mass, a velocity): `reset` and `step` are pure tensor
functions, so a whole rollout of a meta-batch of tasks is one
`tf.while_loop` inside the compiled meta-step. Randomness comes in as
stateless seeds, so a rollout is a function of its seeds.
"""

import keras
import tensorflow as tf

from tf_maml.configurable import Configurable


class Box:
    """Continuous actions: vectors of `size`, clipped by the environment to [low, high]."""

    discrete = False

    def __init__(self, size, low, high):
        self.size, self.low, self.high = int(size), float(low), float(high)

    def __repr__(self):
        return f"Box(size={self.size}, low={self.low}, high={self.high})"


class Discrete:
    """Discrete actions: integers in [0, n)."""

    discrete = True

    def __init__(self, n):
        self.n = int(n)

    def __repr__(self):
        return f"Discrete(n={self.n})"


class TaskEnv(Configurable):
    """Base class of batched task environments.

    Subclasses set `observation_size`, `action_space` (`Box` or `Discrete`),
    `horizon` and `task_size`, and implement:

    - `sample_tasks(count, seed)`: `[count, task_size]` task parameters from
      the task distribution (`seed`: a stateless seed, int32 `[2]`);
    - `reset(tasks, seeds)`: `(state, observation)` for a batch `[B, ...]`
      of tasks, `seeds` `[B, 2]` one stateless seed per environment;
    - `step(tasks, state, action)`: `(state, observation, reward, done)`,
      `reward` and `done` `[B]`; an environment keeps stepping after it is
      done (rollouts mask those steps out).

    `state` may be any nest of `[B, ...]` tensors. Observations are float32.

    An environment whose tasks can be solved or not (Meta-World's) sets
    `reports_success` and implements `succeeded(state)`: `[B]` float32, 1.0
    where the episode reached success at some step up to `state`; rollouts
    then report each trajectory's `success`. One that holds something outside
    the graph frees it in `close()`.
    """

    observation_size = None
    action_space = None
    # False for environments stepped outside the graph (the gymnasium bridge): they
    # can not run under XLA, and a meta-learner runs their tasks one at a time.
    pure = True
    horizon = None
    task_size = None
    reports_success = False

    def sample_tasks(self, count, seed):
        raise NotImplementedError(f"{type(self).__name__} must implement sample_tasks().")

    def reset(self, tasks, seeds):
        raise NotImplementedError(f"{type(self).__name__} must implement reset().")

    def step(self, tasks, state, action):
        raise NotImplementedError(f"{type(self).__name__} must implement step().")

    def succeeded(self, state):
        raise NotImplementedError(f"{type(self).__name__} reports no success.")

    def close(self):
        """Frees what the environment holds outside the graph (the gymnasium bridge's
        simulators and worker processes); an in-graph environment holds nothing."""


def serialize(env):
    return keras.saving.serialize_keras_object(env)


def deserialize(config):
    env = keras.saving.deserialize_keras_object(config)
    if not isinstance(env, TaskEnv):
        raise TypeError(f"Expected a tf_maml.rl.envs.TaskEnv; the config gave {env!r}.")
    return env


def checked_tasks(env, tasks, name="tasks"):
    """`tasks` as float32 `[B, task_size]`, or an error naming the shape received."""
    tasks = tf.convert_to_tensor(tasks, tf.float32)
    if tasks.shape.rank != 2 or tasks.shape[-1] != env.task_size:
        raise ValueError(
            f"{type(env).__name__} takes `{name}` of shape [batch, {env.task_size}]; "
            f"received shape {tasks.shape}."
        )
    return tasks
