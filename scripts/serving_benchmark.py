"""Serving speed: `adapt()` and the adaptive SavedModel task by task, and the batched
evaluation, on Omniglot-shaped tasks.

Random 28x28 tasks through the papers' conv4 (speed does not depend on the pixels):
`adapt()` once per task, as a process serving one request at a time would (the first
call, which traces, timed apart); the `export_adaptive` SavedModel's `adapt_and_predict`
called once per task the same way; then `evaluation.query_results_by_step`, which gives
every task's accuracy after 0..steps steps, as reported and as served, in one compiled
evaluation over meta-batches (what scripts/evaluate.py runs).

  python scripts/serving_benchmark.py --tasks=600 --ways=5 --shots=1 --steps=10
  python scripts/serving_benchmark.py --tasks=200 --steps=1 --noevaluation   # the checks' cost
"""

import json
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_maml
from tf_maml.runs.step_curves import query_results_by_step
from tf_maml.runs.reporting import machine, publish_table

_TASKS = flags.DEFINE_integer(
    "tasks", 600, "Tasks to adapt to and to evaluate (the first adapt() is timed apart).",
    lower_bound=2)
_WAYS = flags.DEFINE_integer("ways", 5, "Classes per task.", lower_bound=1)
_SHOTS = flags.DEFINE_integer("shots", 1, "Support examples per class.", lower_bound=1)
_QUERIES = flags.DEFINE_integer(
    "queries", 1, "Query examples per class (evaluation).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 10, "Inner steps of 0.4.", lower_bound=0)
_META_BATCH = flags.DEFINE_integer(
    "meta_batch_size", 25, "Tasks per evaluation batch.", lower_bound=1)
_EVALUATION = flags.DEFINE_bool("evaluation", True, "Also time the batched evaluation.")
_LABEL = flags.DEFINE_string("label", "", "A name for this run in the JSON line (e.g. a commit).")
_OUT = flags.DEFINE_string("out", None, "Append the results as a JSON line here.")


def main(argv):
    del argv
    tasks, ways, steps = _TASKS.value, _WAYS.value, _STEPS.value
    maml = tf_maml.MAML(tf_maml.nets.conv4(ways), inner_lr=0.4, eval_inner_steps=steps)
    maml.compile(optimizer="adam", metrics=["accuracy"],
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    maml.build((None, 28, 28, 1))
    rng = np.random.default_rng(0)

    def draw(per_class):
        x = rng.standard_normal((tasks, ways * per_class, 28, 28, 1)).astype(np.float32)
        y = np.tile(np.repeat(np.arange(ways, dtype=np.int32), per_class), (tasks, 1))
        return x, y

    (support_x, support_y), (query_x, query_y) = draw(_SHOTS.value), draw(_QUERIES.value)

    start = time.perf_counter()
    maml.adapt(support_x[0], support_y[0]).predict(query_x[0], verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(1, tasks):
        maml.adapt(support_x[t], support_y[t])
    per_task = (time.perf_counter() - start) / (tasks - 1)

    with tempfile.TemporaryDirectory() as directory:
        maml.fit(tf.data.Dataset.from_tensors(  # export_adaptive reads the episodes' format
            ((support_x[:1], support_y[:1]), (query_x[:1], query_y[:1]))), verbose=0)
        maml.export_adaptive(directory)
        served = tf.saved_model.load(directory)
        start = time.perf_counter()
        served.adapt_and_predict(support_x[0], support_y[0], query_x[0])
        served_first = time.perf_counter() - start
        start = time.perf_counter()
        for t in range(1, tasks):
            served.adapt_and_predict(support_x[t], support_y[t], query_x[t]).numpy()
        served_per_task = (time.perf_counter() - start) / (tasks - 1)

    evaluation, results = None, {}
    if _EVALUATION.value:
        episodes = tf.data.Dataset.from_tensor_slices(
            ((support_x, support_y), (query_x, query_y))
        ).batch(_META_BATCH.value)
        start = time.perf_counter()
        results = query_results_by_step(maml, episodes, tasks, steps)
        evaluation = time.perf_counter() - start

    record = {
        "label": _LABEL.value, "tasks": tasks, "ways": ways, "shots": _SHOTS.value,
        "steps": steps, "adapt_first_s": round(first, 3), "adapt_per_task_s": round(per_task, 4),
        "served_first_s": round(served_first, 3),
        "served_per_task_s": round(served_per_task, 4),
        "evaluation_s": evaluation and round(evaluation, 2), "evaluated": sorted(results),
        "machine": machine(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    publish_table([
        "| tasks | adapt(), first call (s) | adapt() per task (s) | served, first call (s) "
        "| served per task (s) | batched evaluation (s) |",
        "|---|---|---|---|---|---|",
        f"| {tasks} ({ways}-way {_SHOTS.value}-shot, {steps} steps) | {first:.2f} | "
        f"{per_task:.4f} | {served_first:.2f} | {served_per_task:.4f} | "
        f"{'-' if evaluation is None else f'{evaluation:.1f}'} |",
        "", f"Evaluated: {', '.join(sorted(results)) or '-'}. Machine: {machine()}.",
    ])
    if _OUT.value:
        with open(_OUT.value, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    app.run(main)
