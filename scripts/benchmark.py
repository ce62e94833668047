"""Meta-step speed and memory of tf_maml on the peers' workloads (random inputs).

Each configuration runs in a fresh process (so peak memory is its own): the
first step (tracing and compiling) is timed on its own, then `--windows`
windows of about `--window_sec` seconds each; meta-steps/s is reported as
median, min and max over windows, with the process's peak RSS.

Workloads (as ../shared/bench/peers): Omniglot-shaped conv4 5-way 1-shot,
meta-batch 32, 1 or 15 queries per class, 1 inner step of 0.4; 20-way 1-shot,
meta-batch 16, 5 inner steps of 0.1; sinusoid MLP 40-40, meta-batch 25.

  python scripts/benchmark.py --workloads=5w1s_q1,5w1s_q15 --orders=2,1 --xla=false,true
  python scripts/benchmark.py --workloads=5w1s_q1 --meta_batch_sizes=1,8,32,64 --inner_steps=1,5,10
"""

import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

# name: (ways, shots, queries per class, meta-batch, inner lr, inner steps, image or None)
WORKLOADS = {
    "5w1s_q1": (5, 1, 1, 32, 0.4, 1, (28, 28, 1)),
    "5w1s_q15": (5, 1, 15, 32, 0.4, 1, (28, 28, 1)),
    "20w1s": (20, 1, 1, 16, 0.1, 5, (28, 28, 1)),
    "sinusoid": (1, 10, 10, 25, 0.01, 1, None),
}

_WORKLOADS = flags.DEFINE_list("workloads", ["5w1s_q1", "5w1s_q15", "20w1s", "sinusoid"], "Workloads.")
_ORDERS = flags.DEFINE_list("orders", ["2", "1"], "Meta-gradient orders.")
_XLA = flags.DEFINE_list("xla", ["false"], "jit_compile values.")
_META_BATCH_SIZES = flags.DEFINE_list("meta_batch_sizes", [], "Override the meta-batch sizes.")
_INNER_STEPS = flags.DEFINE_list("inner_steps", [], "Override the inner steps.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows.")
_WINDOW_SEC = flags.DEFINE_float("window_sec", 3.0, "Seconds per window (about).")
_OUT = flags.DEFINE_string("out", None, "Append JSON lines here.")
_SINGLE = flags.DEFINE_string("single", None, "Internal: run one configuration (JSON).")


def run_single(setting):
    """Times one configuration in this process; returns a result dict."""
    import keras  # noqa: PLC0415  (imported in the child only)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415

    ways, shots, queries, _, lr, _, image = WORKLOADS[setting["workload"]]
    tasks, steps = setting["meta_batch_size"], setting["inner_steps"]
    rng = np.random.default_rng(0)
    if image is None:
        net, loss = tf_maml.nets.mlp(hidden=(40, 40)), "mse"
        shape_s, shape_q = (tasks, shots, 1), (tasks, queries, 1)
        labels = lambda shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    else:
        net = tf_maml.nets.conv4(ways)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        shape_s, shape_q = (tasks, ways * shots) + image, (tasks, ways * queries) + image
        labels = lambda shape: np.tile(np.arange(ways), (tasks, shape[1] // ways)).astype(np.int32)  # noqa: E731
    episode = (
        (rng.standard_normal(shape_s).astype(np.float32), labels(shape_s)),
        (rng.standard_normal(shape_q).astype(np.float32), labels(shape_q)),
    )
    episodes = tf.data.Dataset.from_tensors(episode).repeat()
    maml = tf_maml.MAML(net, inner_lr=lr, inner_steps=steps, first_order=setting["order"] == 1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=setting["xla"])

    start = time.perf_counter()
    maml.fit(episodes, steps_per_epoch=1, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    maml.fit(episodes, steps_per_epoch=2, verbose=0)
    per_step = (time.perf_counter() - start) / 2
    count = max(1, round(_WINDOW_SEC.value / per_step))
    rates = []
    for _ in range(_WINDOWS.value):
        start = time.perf_counter()
        maml.fit(episodes, steps_per_epoch=count, verbose=0)
        rates.append(count / (time.perf_counter() - start))
    return {
        **setting,
        "first_step_s": round(first, 2),
        "steps_per_s_median": round(statistics.median(rates), 3),
        "steps_per_s_min": round(min(rates), 3),
        "steps_per_s_max": round(max(rates), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def settings():
    for name, order, xla in itertools.product(_WORKLOADS.value, _ORDERS.value, _XLA.value):
        _, _, _, tasks, _, steps, _ = WORKLOADS[name]
        for tasks_, steps_ in itertools.product(
            [int(t) for t in _META_BATCH_SIZES.value] or [tasks],
            [int(s) for s in _INNER_STEPS.value] or [steps],
        ):
            yield {"workload": name, "order": int(order), "xla": xla.lower() == "true",
                   "meta_batch_size": tasks_, "inner_steps": steps_}


def main(argv):
    del argv
    if _SINGLE.value:
        print("RESULT " + json.dumps(run_single(json.loads(_SINGLE.value))), flush=True)
        return
    print("| workload | order | XLA | meta-batch | inner steps | meta-steps/s (median, min-max) "
          "| first step (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for setting in settings():
        flags_ = [f"--windows={_WINDOWS.value}", f"--window_sec={_WINDOW_SEC.value}"]
        child = subprocess.run(
            [sys.executable, __file__, f"--single={json.dumps(setting)}", *flags_],
            capture_output=True, text=True, env=env,
        )
        lines = [l for l in child.stdout.splitlines() if l.startswith("RESULT ")]
        if child.returncode or not lines:
            print(f"| {setting['workload']} | {setting['order']} | {setting['xla']} | FAILED: "
                  f"{child.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        print(f"| {result['workload']} | {result['order']} | {result['xla']} "
              f"| {result['meta_batch_size']} | {result['inner_steps']} "
              f"| {result['steps_per_s_median']} ({result['steps_per_s_min']}-"
              f"{result['steps_per_s_max']}) | {result['first_step_s']} "
              f"| {result['peak_rss_mb']} |", flush=True)
        if _OUT.value:
            with open(_OUT.value, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    app.run(main)
