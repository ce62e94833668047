"""Sampling speed: tf_maml.rl's rollouts in the graph against a Python loop over gymnasium.

The peers that do meta-reinforcement learning (pytorch-maml-rl, learn2learn
with cherry, the original maml_rl) sample with a Python loop: at every time
step, one call of the policy on the batch of observations, then one `step`
of a gymnasium vector environment. Here both sample the same trajectories of
2D navigation (`--tasks` x `--trajectories`, `--horizon` steps) with the
same Keras policy (two layers of 100 ReLU, Gaussian):

- "graph": `tf_maml.rl.rollouts.sample` in one `tf.function` (one
  `tf.while_loop`), as inside `MetaPolicyGradient`'s meta-step;
- "python loop": gymnasium's `SyncVectorEnv` of NumPy 2D-navigation
  environments (pytorch-maml-rl's `2DNavigation-v0`, written here), the
  policy a `tf.function` called once a step, the action drawn in NumPy.

Reports environment steps per second, median over `--repeats`.

  python scripts/rl_sampling_benchmark.py --out=docs/data/benchmarks/rl_sampling.jsonl
"""

import json
import statistics
import time

from absl import app, flags

_TASKS = flags.DEFINE_integer("tasks", 20, "Tasks sampled at once.")
_TRAJECTORIES = flags.DEFINE_integer("trajectories", 20, "Trajectories per task.")
_HORIZON = flags.DEFINE_integer("horizon", 100, "Steps per trajectory.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (after one warm-up).")
_OUT = flags.DEFINE_string("out", None, "Append JSON lines here.")


def navigation_vector_env(goals, horizon):
    """A gymnasium SyncVectorEnv of 2D navigation, one environment per goal."""
    import gymnasium  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    class Navigation(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        action_space = gymnasium.spaces.Box(-0.1, 0.1, (2,), np.float32)

        def __init__(self, goal):
            self.goal = np.asarray(goal, np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.position, self.steps = np.zeros(2, np.float32), 0
            return self.position.copy(), {}

        def step(self, action):
            self.position = self.position + np.clip(action, -0.1, 0.1)
            offset = self.position - self.goal
            self.steps += 1
            reached = bool(np.all(np.abs(offset) < 0.01))
            return (self.position.copy(), -float(np.hypot(*offset)), reached,
                    self.steps >= horizon, {})

    # An episode that reaches its goal restarts (gymnasium's default autoreset): every
    # environment steps `horizon` times, as in the graph, where ended ones are masked.
    return gymnasium.vector.SyncVectorEnv([lambda goal=goal: Navigation(goal) for goal in goals])


def time_python_loop(policy, goals, horizon, repeats):
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    envs = navigation_vector_env(goals, horizon)
    forward = tf.function(lambda observations: policy(observations))
    rng = np.random.default_rng(0)

    def sample():
        observations, _ = envs.reset(seed=0)
        for _ in range(horizon):
            params = forward(tf.constant(observations)).numpy()
            mean, log_std = params[:, :2], params[:, 2:]
            actions = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
            observations, _, _, _, _ = envs.step(actions.astype(np.float32))
        return observations

    return timed(sample, repeats)


def time_graph(policy, env, tasks, seeds, trajectories, repeats):
    import tensorflow as tf  # noqa: PLC0415

    from tf_maml.rl import distributions, rollouts  # noqa: PLC0415

    distribution = distributions.for_action_space(env.action_space)
    sample = tf.function(lambda: rollouts.sample(policy, distribution, env, tasks, seeds,
                                                 trajectories)["rewards"])
    return timed(lambda: sample().numpy(), repeats)


def timed(fn, repeats):
    fn()  # warm-up: tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415
    from tf_maml.runs import reporting  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    env = tf_maml.rl.envs.Navigation2D(horizon=_HORIZON.value)
    policy = tf_maml.rl.policies.mlp(env)
    tasks = env.sample_tasks(_TASKS.value, [0, 0])
    seeds = tf.random.stateless_uniform([_TASKS.value, 2], [0, 1], None, None, tf.int32)
    steps = _TASKS.value * _TRAJECTORIES.value * _HORIZON.value
    goals = np.repeat(tasks.numpy(), _TRAJECTORIES.value, axis=0)
    seconds = {
        "graph": time_graph(policy, env, tasks, seeds, _TRAJECTORIES.value, _REPEATS.value),
        "python loop": time_python_loop(policy, goals, _HORIZON.value, _REPEATS.value),
    }
    print(f"2D navigation, {_TASKS.value} tasks x {_TRAJECTORIES.value} trajectories x "
          f"{_HORIZON.value} steps ({reporting.machine()})")
    print("| sampling | seconds | environment steps/s |\n|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} | {steps / value:,.0f} |")
        if _OUT.value:
            with open(_OUT.value, "a") as f:
                f.write(json.dumps({
                    "sampling": name, "tasks": _TASKS.value, "trajectories": _TRAJECTORIES.value,
                    "horizon": _HORIZON.value, "seconds_median": round(value, 4),
                    "env_steps_per_s": round(steps / value), "machine": reporting.machine(),
                    "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
                }) + "\n")


if __name__ == "__main__":
    app.run(main)
