"""Meta-step speed and memory of tf_maml on the peers' workloads (random inputs).

Each configuration runs in a fresh process (so peak memory is its own): the
first step (tracing and compiling) is timed on its own, then two warm-up
steps, then one `fit` over `--windows` windows of about `--window_sec`
seconds each; meta-steps/s is reported as median, min and max over windows,
with the process's peak RSS (the peers in ../shared/bench/peers time alike).

Workloads (as ../shared/bench/peers): Omniglot-shaped conv4 5-way 1-shot,
meta-batch 32, 1 or 15 queries per class, 1 inner step of 0.4; 20-way 1-shot,
meta-batch 16, 5 inner steps of 0.1; sinusoid MLP 40-40, meta-batch 25. And
ResNet-12 (`tf_maml.nets.resnet12`, 12.4M weights) at mini-ImageNet's 84x84x3,
5-way 1-shot, 1 query per class, meta-batch 2, 5 inner steps of 0.01. And
meta-reinforcement learning on 2D navigation (`navigation`: 20 tasks x 20
trajectories x 100 steps, one inner step, 5 PPO steps; `navigation_outer1`:
one outer step), reported in meta-iterations/s and environment steps/s.

  python scripts/benchmark.py --workloads=5w1s_q1,5w1s_q15 --orders=2,1 --xla=false,true
  python scripts/benchmark.py --workloads=5w1s_q1 --parallel_tasks=1,2,4,10 --task_loops=while,unrolled
  python scripts/benchmark.py --workloads=5w1s_q1 --meta_batch_sizes=1,8,32,64 \
      --plot=docs/images/benchmark_meta_batch.png
  python scripts/benchmark.py --workloads=5w1s_q1 --inner_steps=1,5,10,20 --recompute=false,true \
      --plot=docs/images/benchmark_inner_steps.png
  python scripts/benchmark.py --workloads=resnet12_5w1s --recompute=false,true --windows=2 \
      --algorithms=maml,meta_sgd,maml_plus_plus
  python scripts/benchmark.py --workloads=navigation,navigation_outer1 --orders=2,1 --windows=3
  python scripts/benchmark.py --workloads=20w1s --algorithms=maml,imaml --recompute=false,true \
      --inner_steps=5,20,50 --windows=1 --window_sec=1 --out=docs/data/benchmarks/imaml_memory.jsonl

iMAML (`imaml`) runs with 5 conjugate gradient steps and proximal weight 2; it has no
order and nothing to recompute (one row per inner-step count, under --orders' 2 and
--recompute's false).
"""

import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

# name: (ways, shots, queries per class, meta-batch, inner lr, inner steps, image or None,
# network: "conv4" or "resnet12" for images, the 40-40 MLP otherwise)
WORKLOADS = {
    "5w1s_q1": (5, 1, 1, 32, 0.4, 1, (28, 28, 1), "conv4"),
    "5w1s_q15": (5, 1, 15, 32, 0.4, 1, (28, 28, 1), "conv4"),
    "20w1s": (20, 1, 1, 16, 0.1, 5, (28, 28, 1), "conv4"),
    "sinusoid": (1, 10, 10, 25, 0.01, 1, None, "mlp"),
    "resnet12_5w1s": (5, 1, 1, 2, 0.01, 5, (84, 84, 3), "resnet12"),
}
# Meta-reinforcement learning (tf_maml.rl.MetaPolicyGradient): 2D navigation as the
# MAML paper (tasks, trajectories per task, horizon; one inner step), with ProMP's
# 5 outer steps a meta-iteration or 1. A "meta-step" is a meta-iteration.
RL_WORKLOADS = {"navigation": (20, 20, 100, 5), "navigation_outer1": (20, 20, 100, 1)}
# Family members (first order: --orders=1, as FOMAML is MAML(first_order=True)).
ALGORITHMS = ("maml", "meta_sgd", "maml_plus_plus", "anil", "reptile", "imaml")
# Members whose meta-gradient is of their own order (one row, under --orders' 2).
OWN_ORDER = ("reptile", "maml_plus_plus", "imaml")

_WORKLOADS = flags.DEFINE_list("workloads", ["5w1s_q1", "5w1s_q15", "20w1s", "sinusoid"], "Workloads.")
_ORDERS = flags.DEFINE_list(
    "orders", ["2", "1"],
    "Meta-gradient orders; 'plain' times plain Keras training of the network, one batch per "
    "task of a meta-step's images: the work no meta-step avoids (a bound on its speed).")
_XLA = flags.DEFINE_list("xla", ["false"], "jit_compile values.")
_TASK_LOOPS = flags.DEFINE_list("task_loops", ["auto"], "MAML(task_loop=...) values.")
_PARALLEL_TASKS = flags.DEFINE_list("parallel_tasks", ["auto"], "MAML(parallel_tasks=...) values.")
_RECOMPUTE = flags.DEFINE_list("recompute", ["false"], "MAML(recompute_inner_steps=...) values.")
_FUSED = flags.DEFINE_list("fused_batch_norm", ["true"], "MAML(fused_batch_norm=...) values.")
_ALGORITHMS = flags.DEFINE_list("algorithms", ["maml"], f"Family members: {list(ALGORITHMS)}.")
_POLICIES = flags.DEFINE_list("policies", ["float32"], "Keras dtype policies, e.g. mixed_bfloat16.")
# conv4 normalization, as scripts/normalization_benchmark.py names them.
NORMALIZATIONS = {"batch_transductive": ("batch", True), "batch_support": ("batch", False),
                  "task": ("task", False)}
_NORMALIZATIONS = flags.DEFINE_list(
    "normalizations", ["batch_transductive"], f"conv4 normalizations: {list(NORMALIZATIONS)}."
)
_META_BATCH_SIZES = flags.DEFINE_list("meta_batch_sizes", [], "Override the meta-batch sizes.")
_INNER_STEPS = flags.DEFINE_list("inner_steps", [], "Override the inner steps.")
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution", 1, "Keras steps_per_execution: meta-steps per tf.function call "
    "(the sinusoid config runs 100).")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows.")
_WINDOW_SEC = flags.DEFINE_float("window_sec", 3.0, "Seconds per window (about).")
_OUT = flags.DEFINE_string("out", None, "Append JSON lines here.")
_PLOT = flags.DEFINE_string(
    "plot", None, "Write a PNG of meta-steps/s and peak RSS against the meta-batch size or "
    "inner steps (whichever the run varies) here.")
_PROFILE = flags.DEFINE_integer(
    "profile", 0, "After timing, trace one window with the TensorFlow profiler and report "
    "this many op types with their share of the op time (0: no profile).")
_SINGLE = flags.DEFINE_string("single", None, "Internal: run one configuration (JSON).")


def op_time_by_type(profile_dir):
    """Seconds per TensorFlow op type in a profiler trace (its .xplane.pb files)."""
    import glob  # noqa: PLC0415

    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    totals = {}
    for path in glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                if line.name == "python":
                    continue
                # Self time: an op event (named "node:OpType"; runtime regions use
                # "::") minus the op events nested in it (function calls, loops).
                open_ops = []  # (end, op type) of the enclosing op events
                for event in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
                    name = plane.event_metadata[event.metadata_id].name
                    if ":" not in name or "::" in name:
                        continue
                    while open_ops and open_ops[-1][0] <= event.offset_ps:
                        open_ops.pop()
                    op_type = name.rsplit(":", 1)[1].strip()
                    if op_type.startswith("__inference"):  # a whole function's span
                        continue
                    seconds = event.duration_ps * 1e-12
                    totals[op_type] = totals.get(op_type, 0.0) + seconds
                    if open_ops:
                        parent = open_ops[-1][1]
                        totals[parent] -= seconds
                    open_ops.append((event.offset_ps + event.duration_ps, op_type))
    return totals


def time_fit(trainer, episodes, batches, per_call, plain, setting):
    """Times `trainer.fit` on `episodes` as the module docstring says; returns a result dict."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    def fit(meta_steps, **kwargs):
        # Plain Keras traces its step here: BatchNorm fused as in the meta-learner's.
        if plain:  # imported here: the meta-learner needs nothing of it
            from tf_maml.keras_patches import fused_kernels  # noqa: PLC0415

            context = fused_kernels(setting["fused_batch_norm"], xla=setting["xla"])
        else:
            context = contextlib.nullcontext()
        with context:
            trainer.fit(episodes, steps_per_epoch=meta_steps * batches, verbose=0, **kwargs)

    start = time.perf_counter()
    fit(per_call)
    first = time.perf_counter() - start
    start = time.perf_counter()
    fit(2 * per_call)
    per_step = (time.perf_counter() - start) / (2 * per_call)
    # Meta-steps per window: a whole number of calls.
    count = per_call * max(1, round(_WINDOW_SEC.value / per_step / per_call))
    # One fit over all windows (no fit start-up in the timing), the end of each
    # call (every `per_call` batches) stamped by a callback: Keras syncs there.
    stamps = [time.perf_counter()]
    stamp = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter())
    )
    fit(count * _WINDOWS.value, callbacks=[stamp])
    window = count * batches // per_call
    rates = [count / (stamps[(w + 1) * window] - stamps[w * window]) for w in range(_WINDOWS.value)]
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    profile = {}
    if _PROFILE.value:
        import tempfile  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as profile_dir:
            tf.profiler.experimental.start(profile_dir)
            start = time.perf_counter()
            fit(count)
            wall = time.perf_counter() - start
            tf.profiler.experimental.stop()
            totals = op_time_by_type(profile_dir)
        op_time = sum(totals.values())
        top = sorted(totals.items(), key=lambda item: -item[1])[: _PROFILE.value]
        profile = {
            "profile": {
                # Busy cores: op time over wall time (2 = both cores in ops all along).
                "busy_cores": round(op_time / wall, 2),
                "top_ops_percent": {k: round(100 * v / op_time, 1) for k, v in top},
            }
        }
    return {
        **setting,
        **profile,
        "first_step_s": round(first, 2),
        "steps_per_s_median": round(statistics.median(rates), 3),
        "steps_per_s_min": round(min(rates), 3),
        "steps_per_s_max": round(max(rates), 3),
        "peak_rss_mb": peak_rss_mb,  # before the profile, which takes memory of its own
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def time_meta_reinforcement_learning(setting):
    """Times `MetaPolicyGradient.fit` on 2D navigation; adds environment steps/s."""
    import keras  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415

    tasks, trajectories, horizon, outer_steps = RL_WORKLOADS[setting["workload"]]
    tasks, steps = setting["meta_batch_size"], setting["inner_steps"]
    env = tf_maml.rl.envs.Navigation2D(horizon=horizon)
    parallel = setting["parallel_tasks"]
    trainer = tf_maml.rl.MetaPolicyGradient(
        tf_maml.rl.policies.mlp(env), env, inner_steps=steps, trajectories=trajectories,
        first_order=setting["order"] == 1, outer_steps=outer_steps,
        parallel_tasks=parallel if parallel == "auto" else int(parallel))
    per_call = setting["steps_per_execution"]
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=setting["xla"],
                    steps_per_execution=per_call)
    episodes = tf_maml.rl.task_batches(env, tasks)
    result = time_fit(trainer, episodes, 1, per_call, False, setting)
    # Sampled before and after each inner step.
    env_steps = tasks * trajectories * horizon * (steps + 1)
    result["env_steps_per_s_median"] = round(result["steps_per_s_median"] * env_steps)
    return result


def run_single(setting):
    """Times one configuration in this process; returns a result dict."""
    import keras  # noqa: PLC0415  (imported in the child only)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415

    keras.mixed_precision.set_global_policy(setting["policy"])
    if setting["workload"] in RL_WORKLOADS:
        return time_meta_reinforcement_learning(setting)
    ways, shots, queries, _, lr, _, image, network = WORKLOADS[setting["workload"]]
    tasks, steps = setting["meta_batch_size"], setting["inner_steps"]
    rng = np.random.default_rng(0)
    if image is None:
        net, loss = tf_maml.nets.mlp(hidden=(40, 40)), "mse"
        transductive = None  # no normalization layers
        shape_s, shape_q = (tasks, shots, 1), (tasks, queries, 1)
        labels = lambda shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    else:
        normalization, transductive = NORMALIZATIONS[setting["normalization"]]
        net = getattr(tf_maml.nets, network)(ways, input_shape=image, normalization=normalization)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        shape_s, shape_q = (tasks, ways * shots) + image, (tasks, ways * queries) + image
        labels = lambda shape: np.tile(np.arange(ways), (tasks, shape[1] // ways)).astype(np.int32)  # noqa: E731
    episode = (
        (rng.standard_normal(shape_s).astype(np.float32), labels(shape_s)),
        (rng.standard_normal(shape_q).astype(np.float32), labels(shape_q)),
    )
    plain = setting["order"] == "plain"
    if plain:
        # One batch per task (its support and query examples), one set of weights.
        per_task = [np.concatenate([s, q], axis=1) for s, q in zip(*episode)]
        episodes = tf.data.Dataset.from_tensor_slices(tuple(per_task)).repeat()
        trainer, batches = net, tasks
    else:
        episodes = tf.data.Dataset.from_tensors(episode).repeat()
        parallel = setting["parallel_tasks"]
        algorithm = setting["algorithm"]
        member = {"maml": tf_maml.MAML, "meta_sgd": tf_maml.MetaSGD, "anil": tf_maml.ANIL,
                  "maml_plus_plus": tf_maml.MAMLPlusPlus, "reptile": tf_maml.Reptile,
                  "imaml": tf_maml.IMAML}[algorithm]
        # Reptile is first-order by construction, MAML++ second-order (after its warm-up),
        # iMAML's gradient implicit (nothing kept of the inner steps to recompute).
        options = {"first_order": setting["order"] == 1,
                   "recompute_inner_steps": setting["recompute"]}
        if algorithm in OWN_ORDER:
            del options["first_order"]
        if algorithm == "imaml":
            options = {"proximal_weight": 2.0, "cg_steps": 5}
        trainer, batches = member(
            net, inner_lr=lr, inner_steps=steps, **options,
            task_loop=setting["task_loop"],
            parallel_tasks=parallel if parallel == "auto" else int(parallel),
            fused_batch_norm=setting["fused_batch_norm"],
            transductive=transductive,
        ), 1
    per_call = setting["steps_per_execution"]
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=setting["xla"],
                    steps_per_execution=per_call)

    return time_fit(trainer, episodes, batches, per_call, plain, setting)


def settings():
    options = itertools.product(
        _WORKLOADS.value, _ALGORITHMS.value, _ORDERS.value, _XLA.value, _TASK_LOOPS.value,
        _PARALLEL_TASKS.value, _RECOMPUTE.value, _FUSED.value, _POLICIES.value,
        _NORMALIZATIONS.value,
    )
    for name, algorithm, order, xla, loop, parallel, recompute, fused, policy, normalization in options:
        for value, known, flag in ((name, {**WORKLOADS, **RL_WORKLOADS}, "workloads"),
                                   (algorithm, ALGORITHMS, "algorithms"),
                                   (normalization, NORMALIZATIONS, "normalizations")):
            if value not in known:
                raise app.UsageError(f"--{flag}: {value!r} is not one of {list(known)}.")
        if order != "2" and algorithm in OWN_ORDER:
            continue  # their order is their own: one row each, under --orders' 2
        if recompute.lower() == "true" and algorithm == "imaml":
            continue  # nothing to recompute: one row, under --recompute's false
        if order == "plain" and algorithm != "maml":
            continue  # plain Keras training: one row whatever the members
        if name in RL_WORKLOADS:
            if algorithm != "maml" or order == "plain":
                continue  # one meta-learner for policies
            tasks, steps = RL_WORKLOADS[name][0], 1
        else:
            _, _, _, tasks, _, steps, _, _ = WORKLOADS[name]
        for tasks_, steps_ in itertools.product(
            [int(t) for t in _META_BATCH_SIZES.value] or [tasks],
            [int(s) for s in _INNER_STEPS.value] or [steps],
        ):
            yield {"workload": name, "algorithm": algorithm,
                   "order": order if order == "plain" else int(order),
                   "xla": xla.lower() == "true",
                   "task_loop": loop, "parallel_tasks": parallel,
                   "recompute": recompute.lower() == "true",
                   "fused_batch_norm": fused.lower() == "true", "policy": policy,
                   "normalization": normalization,
                   "meta_batch_size": tasks_, "inner_steps": steps_,
                   "steps_per_execution": _STEPS_PER_EXECUTION.value}


COLUMNS = ("workload", "algorithm", "order", "xla", "task_loop", "parallel_tasks", "recompute",
           "fused_batch_norm", "policy", "normalization",
           "meta_batch_size", "inner_steps", "steps_per_execution")


def plot_axis(settings_):
    """The one of meta-batch size and inner steps that `settings_` vary: the plot's x axis."""
    varied = [k for k in ("meta_batch_size", "inner_steps") if len({s[k] for s in settings_}) > 1]
    if len(varied) != 1:
        raise ValueError("--plot needs a run that varies exactly one of meta-batch size and "
                         f"inner steps; this one varies {varied or 'neither'}.")
    return varied[0]


def plot(results, x_key, path):
    """Meta-steps/s and peak RSS against `x_key` (meta-batch size or inner steps)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 3.8))
    curves = {}
    for r in results:
        label = ", ".join(f"{k}={r[k]}" for k in COLUMNS if k != x_key
                          and len({q[k] for q in results}) > 1) or r["workload"]
        curves.setdefault(label, []).append(r)
    for label, rows in curves.items():
        rows.sort(key=lambda r: r[x_key])
        xs = [r[x_key] for r in rows]
        speed.plot(xs, [r["steps_per_s_median"] for r in rows], marker="o", label=label)
        memory.plot(xs, [r["peak_rss_mb"] for r in rows], marker="o", label=label)
    for axis, ylabel in ((speed, "meta-steps/s (median)"), (memory, "peak RSS (MB)")):
        axis.set_xlabel(x_key.replace("_", " "))
        axis.set_ylabel(ylabel)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    speed.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    del argv
    if _SINGLE.value:
        print("RESULT " + json.dumps(run_single(json.loads(_SINGLE.value))), flush=True)
        return
    configurations = list(settings())
    x_key = plot_axis(configurations) if _PLOT.value else None  # before minutes of timing
    print("| " + " | ".join(COLUMNS) + " | meta-steps/s (median, min-max) | first step (s) "
          "| peak RSS (MB) |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = []
    for setting in configurations:
        flags_ = [f"--windows={_WINDOWS.value}", f"--window_sec={_WINDOW_SEC.value}",
                  f"--profile={_PROFILE.value}"]
        child = subprocess.run(
            [sys.executable, __file__, f"--single={json.dumps(setting)}", *flags_],
            capture_output=True, text=True, env=env,
        )
        cells = " | ".join(str(setting[k]) for k in COLUMNS)
        lines = [l for l in child.stdout.splitlines() if l.startswith("RESULT ")]
        if child.returncode or not lines:
            print(f"| {cells} | FAILED: {child.stderr.strip().splitlines()[-1:]} | | |", flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        results.append(result)
        print(f"| {cells} | {result['steps_per_s_median']} ({result['steps_per_s_min']}-"
              f"{result['steps_per_s_max']}) | {result['first_step_s']} "
              f"| {result['peak_rss_mb']} |", flush=True)
        if "env_steps_per_s_median" in result:
            print(f"  environment steps/s: {result['env_steps_per_s_median']}", flush=True)
        if "profile" in result:
            print(f"  profile: {json.dumps(result['profile'])}", flush=True)
        if _OUT.value:
            with open(_OUT.value, "a") as f:
                f.write(json.dumps(result) + "\n")
    if _PLOT.value and results:
        plot(results, x_key, _PLOT.value)


if __name__ == "__main__":
    app.run(main)
