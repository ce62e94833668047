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

`--environments` adds other environment paths (names of
`tf_maml.rl.experiment.ENVIRONMENTS`, default settings, horizon `--horizon`
where the environment takes one), each sampled in the graph by
`rollouts.sample` with a policy of the same shape: the in-graph game
(`matrix_game_opponents`) and the gymnasium bridge (`half_cheetah_velocity`,
`metaworld_ml1`, `highway_traffic`); for a bridge, also gymnasium's own
`step` in a Python loop with random actions, as many steps (the difference
is what the bridge and the policy add), and with `--workers=0,2` the bridge
with its environments stepped in 2 worker processes (`GymTaskEnv(workers=2)`).
Steps are those simulated: episodes that end early (a crash) count their
steps up to the end.

  python scripts/rl_sampling_benchmark.py --out=docs/data/benchmarks/rl_sampling.jsonl
  python scripts/rl_sampling_benchmark.py --environments=matrix_game_opponents,\
      half_cheetah_velocity,metaworld_ml1 --tasks=10 --trajectories=10 --repeats=3
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
_ENVIRONMENTS = flags.DEFINE_list(
    "environments", ["navigation2d"],
    "Environment paths to time: navigation2d (against the Python loop) and any other "
    "name of tf_maml.rl.experiment.ENVIRONMENTS.")
_WORKERS = flags.DEFINE_list(
    "workers", ["0"], "For the gymnasium bridge: worker processes that step the "
    "environments (0: this process), a row each.")


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
    sample = tf.function(lambda: tf.reduce_sum(rollouts.sample(
        policy, distribution, env, tasks, seeds, trajectories)["mask"]))
    return timed(lambda: sample().numpy(), repeats), int(sample().numpy())


def timed(fn, repeats):
    """The median seconds of `fn()` over `repeats` calls, after one (tracing)."""
    fn()  # warm-up: tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_gymnasium_loop(env, tasks, steps, repeats):
    """Seconds of `steps` gymnasium steps with random actions, in a new environment of the
    bridge's family, the task applied as the bridge does (no graph, no policy)."""
    import numpy as np  # noqa: PLC0415

    gym_env = env.make_environment()  # a fresh one: the timed rollouts keep the pool

    def run():
        if env.set_task is not None:
            env.set_task(gym_env, tasks[0])
        gym_env.reset(seed=0)
        done = 0
        for _ in range(steps):
            _, _, terminated, truncated, _ = gym_env.step(gym_env.action_space.sample())
            done += 1
            if terminated or truncated or done % env.horizon == 0:
                gym_env.reset()
        return np.float32(done)

    return timed(run, repeats)


def environment(name, horizon, workers=0):
    """An environment of `tf_maml.rl.experiment.ENVIRONMENTS` with `horizon` where it has one
    (and `workers`, a bridge's)."""
    import inspect  # noqa: PLC0415

    from tf_maml.rl import experiment  # noqa: PLC0415

    make = experiment.ENVIRONMENTS[name]
    parameters = inspect.signature(make).parameters
    settings = {"horizon": horizon} if "horizon" in parameters else {}
    if workers:
        settings["workers"] = workers
    return make(**settings)


def main(argv):
    del argv
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415
    from tf_maml.runs import reporting  # noqa: PLC0415

    print(f"{_TASKS.value} tasks x {_TRAJECTORIES.value} trajectories ({reporting.machine()})")
    print("| environment | horizon | sampling | seconds | environment steps/s |\n"
          "|---|---|---|---|---|")
    for name in _ENVIRONMENTS.value:
        keras.utils.set_random_seed(0)
        env = environment(name, _HORIZON.value)
        policy = tf_maml.rl.policies.mlp(env)
        tasks = env.sample_tasks(_TASKS.value, [0, 0])
        seeds = tf.random.stateless_uniform([_TASKS.value, 2], [0, 1], None, None, tf.int32)
        graph_seconds, steps = time_graph(policy, env, tasks, seeds, _TRAJECTORIES.value,
                                          _REPEATS.value)
        seconds = {"graph" if env.pure else "graph, through the bridge": graph_seconds}
        for workers in map(int, _WORKERS.value):
            if workers and not env.pure:
                pooled = environment(name, _HORIZON.value, workers)
                seconds[f"graph, through the bridge, workers={workers}"], _ = time_graph(
                    policy, pooled, tasks, seeds, _TRAJECTORIES.value, _REPEATS.value)
                pooled.close()
        if name == "navigation2d":  # every environment steps the whole horizon there
            goals = np.repeat(tasks.numpy(), _TRAJECTORIES.value, axis=0)
            seconds["python loop"] = time_python_loop(policy, goals, env.horizon,
                                                      _REPEATS.value)
            steps = _TASKS.value * _TRAJECTORIES.value * env.horizon
        elif not env.pure:
            seconds["gymnasium alone, random actions"] = time_gymnasium_loop(
                env, tasks.numpy(), steps, _REPEATS.value)
        for sampling, value in seconds.items():
            print(f"| {name} | {env.horizon} | {sampling} | {value:.3f} | "
                  f"{steps / value:,.0f} |")
            if _OUT.value:
                with open(_OUT.value, "a") as f:
                    f.write(json.dumps({
                        "environment": name, "sampling": sampling, "tasks": _TASKS.value,
                        "trajectories": _TRAJECTORIES.value, "horizon": env.horizon,
                        "seconds_median": round(value, 4), "steps": steps,
                        "env_steps_per_s": round(steps / value),
                        "machine": reporting.machine(),
                        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
                    }) + "\n")


if __name__ == "__main__":
    app.run(main)
