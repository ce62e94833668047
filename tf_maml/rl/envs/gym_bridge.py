"""Gymnasium environments as a `TaskEnv`: a pool of Python environments behind `tf.numpy_function`.

`GymTaskEnv` runs any family of gymnasium environments whose task is a
parameter (a goal velocity, a mass) outside the graph: `reset` and `step`
call into Python through `tf.numpy_function`, so `rollouts.sample` drives
them from inside its `tf.while_loop`. The environments live in one pool
(`gym_pools`: in this process, or in worker processes), and the `state`
tensor is only a ticket to it: the bridge is not a
pure function of its inputs, it can not run under XLA (not
`jit_compile=True`), and two rollouts must not step one pool at once: the
bridge raises an error if they do (`MetaPolicyGradient(parallel_tasks=1)`
rules it out).
"""

import functools
import importlib
import threading

import numpy as np
import tensorflow as tf

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.base import Box, Discrete, TaskEnv, checked_tasks
from tf_maml.rl.envs.gym_pools import LocalPool, ProcessPool


def optional_module(name, needed_by, install):
    """The module `name`, or, if it is not installed, an ImportError saying who needs it and
    how to install it (an installed module that fails to import raises its own error)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != name:
            raise  # installed, but one of its own dependencies is missing
        raise ImportError(f"{needed_by}: {install}.") from error


def gymnasium():
    """The `gymnasium` module."""
    return optional_module("gymnasium", "tf_maml.rl.envs.GymTaskEnv runs gymnasium "
                           "environments", 'pip install gymnasium (MuJoCo ones: pip install '
                           '"gymnasium[mujoco]")')


def make_by_id(env_id):
    """A new gymnasium environment of id `env_id`."""
    return gymnasium().make(env_id)


def checked_task_range(task_range):
    """`task_range` `(low, high)` as two float32 vectors with `low <= high`, or an error."""
    try:
        low, high = (np.atleast_1d(np.asarray(v, np.float32)) for v in task_range)
    except (TypeError, ValueError):
        raise ValueError("`task_range` must be a pair (low, high) of numbers or of equal-length "
                         f"sequences; received {task_range!r}.") from None
    if low.ndim != 1 or low.shape != high.shape or not np.all(np.isfinite(low)) \
            or not np.all(np.isfinite(high)) or np.any(low > high):
        raise ValueError("`task_range` must be a pair (low, high) of finite vectors of one length "
                         f"with low <= high; received {task_range!r}.")
    return low, high


class GymTaskEnv(TaskEnv):
    """A batch of gymnasium environments with a task parameter, stepped from the graph.

    `reset(tasks, seeds)` grows the pool to the batch size `B`, applies each
    task (`set_task`) and resets environment `i` with the gymnasium seed
    `gym_pools.gym_seed(seeds[i])`; `step` steps each environment, continuous actions
    clipped to the gymnasium action space. An episode ends when gymnasium
    says it terminated or was truncated; after that the environment is not
    stepped again and returns its last observation, reward 0 and done.
    The state is int32 `[B, 2]`: the number of the reset it belongs to, and
    1 once the episode succeeded (with `success_fn`; `succeeded(state)`).

    Args:
        make_env: a gymnasium id (`"Pendulum-v1"`) or a callable returning a
            new gymnasium environment.
        set_task: `(env, task) -> None`, applies a task (a float32 vector) to
            an environment before it is reset (e.g. sets a mass), or None.
        task_range: `(low, high)`, numbers or vectors: tasks are drawn
            uniformly in that box.
        sample_tasks_fn: instead of `task_range`, `(count, seed) -> [count,
            task_size]` in TensorFlow (it runs in `tf.data`), with `task_size`.
        task_size: the length of a task, with `sample_tasks_fn`.
        reward_fn: `(task, reward, info, action) -> reward`, the reward of a
            step recomputed from gymnasium's, for tasks that change only the
            reward (a goal velocity), or None.
        horizon: steps per episode (default: the environment's
            `max_episode_steps`).
        success_fn: `info -> bool`, whether a step's gymnasium `info` says
            the task is solved (Meta-World's `info["success"]`), or None:
            rollouts then report each trajectory's success.
        workers: 0 to step the environments here, one after the other; `N`
            to step them in `N` worker processes at once (`gym_pools`:
            worth it where the simulator, not the policy, takes the time;
            the rollouts are the same). Started at the first `reset`.

    Example:

    ```python
    def set_task(env, task):  # a pendulum of mass and length `task`
        env.unwrapped.m, env.unwrapped.l = float(task[0]), float(task[1])

    env = tf_maml.rl.envs.GymTaskEnv("Pendulum-v1", set_task,
                                     task_range=([0.5, 0.5], [1.5, 1.5]))
    policy = tf_maml.rl.policies.mlp(env)
    meta = tf_maml.rl.MetaPolicyGradient(policy, env, parallel_tasks=1)
    meta.compile(optimizer="adam", jit_compile=False)
    ```
    """

    pure = False

    def __init__(self, make_env, set_task=None, task_range=None, sample_tasks_fn=None,
                 task_size=None, reward_fn=None, horizon=None, success_fn=None, workers=0):
        if not (isinstance(make_env, str) or callable(make_env)):
            raise TypeError(f"`make_env` must be a gymnasium id or a callable; received "
                            f"{make_env!r}.")
        for name, value in (("set_task", set_task), ("sample_tasks_fn", sample_tasks_fn),
                            ("reward_fn", reward_fn), ("success_fn", success_fn)):
            if value is not None and not callable(value):
                raise TypeError(f"`{name}` must be a callable or None; received {value!r}.")
        if (task_range is None) == (sample_tasks_fn is None):
            raise ValueError("Give one of `task_range` and `sample_tasks_fn`; received "
                             f"task_range={task_range!r}, sample_tasks_fn={sample_tasks_fn!r}.")
        self.make_env, self.set_task, self.reward_fn = make_env, set_task, reward_fn
        self.success_fn = success_fn
        self.sample_tasks_fn, self.task_range = sample_tasks_fn, task_range
        if task_range is not None:
            self._task_low, self._task_high = checked_task_range(task_range)
            if task_size is not None and task_size != len(self._task_low):
                raise ValueError(f"`task_size` {task_size!r} does not match `task_range` "
                                 f"{task_range!r}.")
            self.task_size = len(self._task_low)
        else:
            self.task_size = checked_int(task_size, "task_size", 1)
        self.workers = checked_int(workers, "workers", 0)
        self._pool_lock = threading.Lock()
        first = self.make_environment()  # it tells the spaces
        self._read_spaces(first)
        self._pool = None if self.workers else LocalPool(self._factory(), set_task, reward_fn,
                                                          success_fn, first)
        if self._pool is None:
            first.close()
        if horizon is None:
            spec = getattr(first, "spec", None)
            horizon = getattr(spec, "max_episode_steps", None)
            if horizon is None:
                raise ValueError(f"{make_env!r} has no max_episode_steps; give `horizon`.")
        self.horizon = checked_int(horizon, "horizon", 1)
        self._generation, self._batch, self._ready = 0, 0, False

    def _factory(self):
        """`() -> ` a new environment, without this env object (pools may pickle it)."""
        if isinstance(self.make_env, str):
            return functools.partial(make_by_id, self.make_env)
        return self.make_env

    def make_environment(self):
        """A new gymnasium environment of the family (no task applied)."""
        return self._factory()()

    def _read_spaces(self, env):
        spaces = gymnasium().spaces
        observation_space, action_space = env.observation_space, env.action_space
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(f"GymTaskEnv takes Box observations; {self.make_env!r} has "
                             f"{observation_space}.")
        self.observation_size = int(np.prod(observation_space.shape))
        if isinstance(action_space, spaces.Discrete):
            self.action_space = Discrete(action_space.n)
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.action_space = Box(action_space.shape[0], np.min(action_space.low),
                                    np.max(action_space.high))
        else:
            raise ValueError(f"GymTaskEnv takes Discrete or flat Box actions; {self.make_env!r} "
                             f"has {action_space}.")

    @property
    def reports_success(self):
        return self.success_fn is not None

    def succeeded(self, state):
        if self.success_fn is None:
            return super().succeeded(state)
        return tf.cast(state[:, 1] > 0, tf.float32)

    def sample_tasks(self, count, seed):
        if self.sample_tasks_fn is not None:
            tasks = tf.cast(self.sample_tasks_fn(count, seed), tf.float32)
            return tf.ensure_shape(tasks, [None, self.task_size])
        unit = tf.random.stateless_uniform([count, self.task_size], seed)
        return self._task_low + unit * (self._task_high - self._task_low)

    def reset(self, tasks, seeds):
        tasks = checked_tasks(self, tasks)
        state, observation = tf.numpy_function(
            self._reset_pool, [tasks, tf.convert_to_tensor(seeds, tf.int32)],
            [tf.int32, tf.float32], name="gym_reset")
        return self._shaped(tasks, state, observation)

    def step(self, tasks, state, action):
        tasks = checked_tasks(self, tasks)
        action = tf.convert_to_tensor(action, tf.int32 if self.action_space.discrete
                                      else tf.float32)
        state, observation, reward, done = tf.numpy_function(
            self._step_pool, [tasks, state, action], [tf.int32, tf.float32, tf.float32, tf.bool],
            name="gym_step")
        reward.set_shape([tasks.shape[0]])
        done.set_shape([tasks.shape[0]])
        return (*self._shaped(tasks, state, observation), reward, done)

    def _shaped(self, tasks, state, observation):
        state.set_shape([tasks.shape[0], 2])
        observation.set_shape([tasks.shape[0], self.observation_size])
        return state, observation

    def _reset_pool(self, tasks, seeds):
        if seeds.shape != (len(tasks), 2):
            raise ValueError(f"GymTaskEnv.reset takes one seed [2] per task ({len(tasks)}); "
                             f"received seeds of shape {seeds.shape}.")
        with self._pool_lock:
            if self._pool is None or not self._pool.alive:
                self._pool = ProcessPool(self._factory(), self.set_task, self.reward_fn,
                                         self.success_fn, self.workers)
            self._ready = False  # until this reset succeeds, nothing steps the pool
            self._generation += 1
            self._batch = len(tasks)
            observations = self._pool.reset(tasks, seeds)
            self._ready = True
            state = np.zeros([self._batch, 2], np.int32)
            state[:, 0] = self._generation
            return state, observations

    def _step_pool(self, tasks, state, actions):
        with self._pool_lock:
            if not self._ready:
                raise RuntimeError("GymTaskEnv.step came before a reset (a first one, or one "
                                   "after a failed reset or step, or close()).")
            if state.shape != (self._batch, 2) or np.any(state[:, 0] != self._generation):
                raise RuntimeError(
                    f"GymTaskEnv stepped the environments of reset {np.unique(state[:, 0])} (batch "
                    f"{state.shape[0]}) after reset {self._generation} (batch {self._batch}): "
                    "two rollouts stepped one pool of gymnasium environments at once. Run them "
                    "one after another (MetaPolicyGradient(parallel_tasks=1)), or give each "
                    "its own GymTaskEnv.")
            self._ready = False  # until this step succeeds (a failed one may end the pool)
            observations, rewards, done, succeeded = self._pool.step(tasks, actions)
            self._ready = True
            state = state.copy()
            state[succeeded, 1] = 1
            return state, observations, rewards, done

    def close(self):
        """Closes the pool's gymnasium environments and ends its workers (a later `reset`
        makes new ones)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()  # a closed ProcessPool is not alive: reset makes another
            self._ready = False  # a step needs a reset first

    def get_config(self):
        return {"make_env": self.make_env, "set_task": self.set_task,
                "task_range": self.task_range, "sample_tasks_fn": self.sample_tasks_fn,
                "task_size": self.task_size, "reward_fn": self.reward_fn,
                "horizon": self.horizon, "success_fn": self.success_fn,
                "workers": self.workers}
