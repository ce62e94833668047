"""Meta-World's ML1 (Yu et al. 2019) through the gymnasium bridge: one manipulation
skill, a task per object and goal position, the goal hidden from the policy."""

import pickle
import threading

import keras
import numpy as np
import tensorflow as tf

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.gym_bridge import GymTaskEnv, optional_module


def metaworld():
    """The `metaworld` module."""
    return optional_module("metaworld", "tf_maml.rl.envs.MetaWorldML1 runs Meta-World",
                           'pip install metaworld (or tf_maml\'s extra: pip install '
                           '"tf_maml[metaworld]")')


class _TaskSetter:
    """Applies a task vector (Meta-World's `rand_vec`: object and goal positions) to an
    environment with Meta-World's own `set_task`, in ML1's encoding (goal hidden)."""

    def __init__(self, template):
        self.template = template  # an ML1 task: its fields beside the positions

    def __call__(self, env, task):
        data = pickle.loads(self.template.data)
        data["rand_vec"] = np.asarray(task, np.float64)
        env.unwrapped.set_task(type(self.template)(self.template.env_name, pickle.dumps(data)))


def _solved(info):
    return bool(info["success"])


class _GoalSampler:
    """Draws task vectors as ML1 draws its goals: a Meta-World environment resets with
    its positions unfrozen and seeded, and its `reset_model` redraws until they are
    valid for the skill (e.g. the goal 0.15 from the object). A vector drawn uniformly in
    the range instead can be one its reset redraws forever once frozen by `set_task`.
    Meta-World keeps these switches in attributes of its environments; they are read and
    set here only."""

    def __init__(self, env_class, template):
        self.env = env_class()
        self.env.set_task(template)  # ML1's settings (goal hidden); then unfreeze
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.lock = threading.Lock()  # tf.data may draw from several threads

    def __call__(self, count, seed):
        rng = np.random.default_rng(np.asarray(seed).view(np.uint32).tolist())
        tasks = np.zeros([int(count), len(self.env._random_reset_space.low)], np.float32)
        with self.lock:
            for i in range(len(tasks)):
                self.env.seed(int(rng.integers(2**31)))
                self.env.reset()
                tasks[i] = self.env._last_rand_vec
        return tasks

    def bounds(self):
        """`(low, high)` of the skill's positions."""
        space = self.env._random_reset_space
        return space.low.astype(np.float32), space.high.astype(np.float32)


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class MetaWorldML1(GymTaskEnv):
    """A Meta-World ML1 skill (`"reach-v3"`, `"push-v3"`, ...) as a task family.

    As Meta-World's ML1 benchmark: a task is the object's and the goal's
    initial positions (Meta-World's `rand_vec`), drawn as ML1 draws its 50
    train and 50 test goals (uniform in the skill's range, redrawn until
    valid for the skill), and the observation hides the goal, so the policy
    must find it from rewards; tasks drawn from other seeds are held-out
    goals. Rewards are
    Meta-World's (shaped, at most 10 a step); rollouts report whether each
    episode succeeded (Meta-World's `info["success"]` at any step). Needs
    `pip install metaworld` (MuJoCo). Not a pure function (see `GymTaskEnv`).

    Args:
        env_name: an ML1 skill, one of `metaworld.ML1.ENV_NAMES`.
        horizon: steps per episode (Meta-World's own limit is 500).
        workers: processes that step the simulator (`GymTaskEnv`'s).

    Example:

    ```python
    env = tf_maml.rl.envs.MetaWorldML1("reach-v3", horizon=150)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env), env, parallel_tasks=1)
    meta.compile(optimizer="adam", jit_compile=False)
    ```
    """

    def __init__(self, env_name="reach-v3", horizon=150, workers=0):
        module = metaworld()
        if env_name not in module.ML1.ENV_NAMES:
            raise ValueError(f"{env_name!r} is not a Meta-World ML1 skill; known: "
                             f"{', '.join(module.ML1.ENV_NAMES)}.")
        benchmark = module.ML1(env_name, seed=0)
        self.env_name = env_name
        self._env_class = benchmark.train_classes[env_name]
        self._goals = _GoalSampler(self._env_class, benchmark.train_tasks[0])
        limit = self._goals.env.max_path_length
        horizon = checked_int(horizon, "horizon", 1)
        if horizon > limit:
            raise ValueError(f"`horizon` {horizon} is past Meta-World's episode limit {limit} "
                             f"for {env_name!r}.")
        self.task_bounds = self._goals.bounds()
        super().__init__(self._env_class, _TaskSetter(benchmark.train_tasks[0]),
                         sample_tasks_fn=self._sample_goals, task_size=len(self.task_bounds[0]),
                         horizon=horizon, success_fn=_solved, workers=workers)

    def _sample_goals(self, count, seed):
        return tf.numpy_function(self._goals, [count, tf.cast(seed, tf.int64)],
                                 tf.float32, name="metaworld_goals")

    def get_config(self):
        return {"env_name": self.env_name, "horizon": self.horizon, "workers": self.workers}
