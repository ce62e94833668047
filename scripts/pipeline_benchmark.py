"""Episode pipeline speed: episode batches per second, against meta-steps.

The input pipeline must never be the bottleneck. For each workload this times
the tf.data pipeline alone (batches per second, after warm-up) and, unless
--meta_steps=0, the second-order meta-step of the papers' conv4 on the same
batches, and reports the ratio. The workloads are Omniglot's, or with --config
a config's own training episodes and meta-learner (e.g. spoken words, whose
episodes read WAV folders and whose model computes log-mels):

  python scripts/pipeline_benchmark.py --data_dir=../shared/data/omniglot
  python scripts/pipeline_benchmark.py --config=configs/spoken_words.py:5w1s \
      --config.data_dir=DIR
"""

import time

import keras
from absl import app, flags
from ml_collections import config_flags

import tf_maml
import tf_maml.experiment
from tf_maml.runs import tasks
from tf_maml.runs.reporting import machine, publish_table

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory with the Omniglot zips.")
_BATCHES = flags.DEFINE_integer("batches", 300, "Pipeline batches to time.")
_META_STEPS = flags.DEFINE_integer("meta_steps", 6, "Meta-steps to time (0: skip).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here too.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Time this config's training episodes and meta-learner instead.")

# name: (ways, shots, queries per class, meta-batch size, inner lr, inner steps);
# ways None: Meta-Dataset's variable sampler as configs/omniglot.py:variable has it
# (5 to 20 ways, up to 100 support examples, 5 queries per class, padded).
WORKLOADS = {
    "5-way 1-shot, 1 query/class": (5, 1, 1, 32, 0.4, 1),
    "5-way 1-shot, 15 queries/class": (5, 1, 15, 32, 0.4, 1),
    "20-way 1-shot, 1 query/class": (20, 1, 1, 16, 0.1, 5),
    "variable 5-20 ways, up to 100 shots, 5 queries/class": (None, None, 5, 4, 0.1, 5),
}
VARIABLE = dict(min_ways=5, max_ways=20, max_support=100)


def train_episodes(ways, shots, queries, tasks):
    if ways is not None:
        return tf_maml.data.omniglot_episodes(
            "train", ways, shots, queries, tasks, data_dir=_DATA_DIR.value)
    pool, characters = tf_maml.data.load_omniglot(_DATA_DIR.value)
    return tf_maml.data.variable_episodes(
        tf_maml.data.omniglot_split(pool, characters, "train"), queries=queries,
        meta_batch_size=tasks, **VARIABLE)


def batches_per_second(episodes, count):
    iterator = iter(episodes)
    for _ in range(5):  # warm-up: tracing, first prefetches
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


def meta_steps_per_second(maml, episodes, count):
    maml.fit(episodes, steps_per_epoch=2, verbose=0)  # trace and warm up
    start = time.perf_counter()
    maml.fit(episodes, steps_per_epoch=count, verbose=0)
    return count / (time.perf_counter() - start)


def conv4_maml(ways, lr, steps):
    maml = tf_maml.MAML(tf_maml.nets.conv4(ways), inner_lr=lr, inner_steps=steps)
    maml.compile(optimizer="adam", metrics=["accuracy"],
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return maml


def row(name, episodes, tasks_per_batch, build):
    """A table row: the pipeline's rate alone and, unless --meta_steps=0, the meta-step's
    of `build()` on the same batches."""
    rate = batches_per_second(episodes, _BATCHES.value)
    meta_cells = "- | -"
    if _META_STEPS.value:
        meta = meta_steps_per_second(build(), episodes, _META_STEPS.value)
        meta_cells = f"{meta:.2f} | {rate / meta:.0f}x"
    return f"| {name}, meta-batch {tasks_per_batch} | {rate:.1f} | {rate * tasks_per_batch:.0f} | {meta_cells} |"


def main(argv):
    del argv
    rows = ["| workload | episode batches/s | tasks/s | meta-steps/s | ratio |", "|---|---|---|---|---|"]
    config = _CONFIG.value
    if config is not None:
        rows.append(row(tasks.task_of(config).setting(config),
                        tasks.episodes(config, "train"), config.meta_batch_size,
                        lambda: tf_maml.experiment.build_meta_learner(config)))
    else:
        for name, (ways, shots, queries, tasks_per_batch, lr, steps) in WORKLOADS.items():
            rows.append(row(name, train_episodes(ways, shots, queries, tasks_per_batch),
                            tasks_per_batch,
                            lambda: conv4_maml(ways or VARIABLE["max_ways"], lr, steps)))
    publish_table(rows + ["", f"Machine: {machine()}."], _OUT.value)


if __name__ == "__main__":
    app.run(main)
