"""Meta-World's ML1 (Yu et al. 2019) through the gymnasium bridge: one manipulation
skill, a task per object and goal position, the goal hidden from the policy."""

import pickle

import keras
import numpy as np

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.gym_bridge import GymTaskEnv


def metaworld():
    """The `metaworld` module, or an error saying how to install it."""
    try:
        import metaworld
    except ImportError:
        raise ImportError("tf_maml.rl.envs.MetaWorldML1 runs Meta-World: pip install "
                          "metaworld (or tf_maml's extra: pip install \"tf_maml[metaworld]\")."
                          ) from None
    return metaworld


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


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class MetaWorldML1(GymTaskEnv):
    """A Meta-World ML1 skill (`"reach-v3"`, `"push-v3"`, ...) as a task family.

    As Meta-World's ML1 benchmark: a task is the object's and the goal's
    initial positions (Meta-World's `rand_vec`), drawn uniformly in the
    skill's own range, and the observation hides the goal, so the policy
    must find it from rewards; ML1's train and test goals are such draws,
    so tasks drawn from other seeds are held-out goals. Rewards are
    Meta-World's (shaped, at most 10 a step); rollouts report whether each
    episode succeeded (Meta-World's `info["success"]` at any step). Needs
    `pip install metaworld` (MuJoCo). Not a pure function (see `GymTaskEnv`).

    Args:
        env_name: an ML1 skill, one of `metaworld.ML1.ENV_NAMES`.
        horizon: steps per episode (Meta-World's own limit is 500).

    Example:

    ```python
    env = tf_maml.rl.envs.MetaWorldML1("reach-v3", horizon=150)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env), env, parallel_tasks=1)
    meta.compile(optimizer="adam", jit_compile=False)
    ```
    """

    def __init__(self, env_name="reach-v3", horizon=150):
        module = metaworld()
        if env_name not in module.ML1.ENV_NAMES:
            raise ValueError(f"{env_name!r} is not a Meta-World ML1 skill; known: "
                             f"{', '.join(module.ML1.ENV_NAMES)}.")
        benchmark = module.ML1(env_name, seed=0)
        self.env_name = env_name
        self._env_class = benchmark.train_classes[env_name]
        probe = self._env_class()
        limit = probe.max_path_length
        horizon = checked_int(horizon, "horizon", 1)
        if horizon > limit:
            raise ValueError(f"`horizon` {horizon} is past Meta-World's episode limit {limit} "
                             f"for {env_name!r}.")
        # The range ML1 draws its goals from (Meta-World keeps it in this attribute).
        space = probe._random_reset_space
        probe.close()
        super().__init__(self._env_class, _TaskSetter(benchmark.train_tasks[0]),
                         task_range=(space.low, space.high), horizon=horizon,
                         success_fn=_solved)

    def get_config(self):
        return {"env_name": self.env_name, "horizon": self.horizon}
