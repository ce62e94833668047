"""A meta-training run from a config: data, model, fit, checkpoints, report.

`scripts/train.py` is a thin absl front end to `run(config, workdir)`; the
config files in `configs/` list every field read here.
"""

import csv
import json
import os
import time

import keras
import numpy as np
from absl import logging

from tf_maml import data, evaluation, nets, plots
from tf_maml.anil import ANIL
from tf_maml.maml_plus_plus import MAMLPlusPlus
from tf_maml.meta_learner import MAML
from tf_maml.meta_sgd import MetaSGD
from tf_maml.reptile import Reptile

_SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1, "test": 2, "plots": 3}


TASKS = ("sinusoid", "omniglot")


def _check_task(config):
    if config.task not in TASKS:
        raise ValueError(f"Unknown task {config.task!r}; known: {', '.join(TASKS)}.")


def episodes(config, split, num_batches=None, start_batch=0, queries=None):
    """The episode pipeline of `config.task` for `split`."""
    _check_task(config)
    common = dict(
        queries=queries or config.queries,
        meta_batch_size=config.meta_batch_size,
        seed=config.seed * 10 + _SPLIT_SEED_OFFSETS[split],
        num_batches=num_batches,
        start_batch=start_batch,
    )
    if config.task == "sinusoid":
        return data.sinusoid_episodes(shots=config.shots, **common)
    return data.omniglot_episodes(
        "test" if split == "plots" else split,
        ways=config.ways,
        shots=config.shots,
        data_dir=config.data_dir or None,
        protocol=config.protocol,
        rotation=config.rotation or None,
        **common,
    )


def build_backbone(config):
    """A fresh backbone network for `config.task`."""
    _check_task(config)
    if config.task == "sinusoid":
        return nets.mlp(inputs=1, hidden=tuple(config.model.hidden), outputs=1)
    return nets.conv4(config.ways, filters=config.model.filters, downsample=config.model.downsample)


def loss_and_metrics(config):
    """The task loss and metrics of `config.task`, for `compile`."""
    _check_task(config)
    if config.task == "sinusoid":
        return "mse", []
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]


ALGORITHMS = {
    "maml": MAML,
    "meta_sgd": MetaSGD,
    "anil": ANIL,
    "maml_plus_plus": MAMLPlusPlus,
    "reptile": Reptile,
}


def build_meta_learner(config):
    """A compiled meta-learner of `config.algorithm` (default MAML) for `config`."""
    loss, metrics = loss_and_metrics(config)
    algorithm = config.get("algorithm", "maml")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}.")
    common = dict(eval_inner_steps=config.eval_inner_steps)
    if algorithm == "reptile":
        # Reptile: its own inner loop; epsilon annealed linearly to 0 (Nichol et al.).
        meta_learner = Reptile(
            build_backbone(config), inner_lr=config.reptile.inner_lr,
            inner_steps=config.reptile.inner_steps,
            inner_optimizer=config.reptile.inner_optimizer, **common,
        )
        epsilon = keras.optimizers.schedules.PolynomialDecay(
            config.reptile.epsilon, config.meta_steps, end_learning_rate=0.0
        )
        optimizer = keras.optimizers.SGD(epsilon)
    else:
        options = dict(inner_lr=config.inner_lr, inner_steps=config.inner_steps, **common)
        if algorithm != "maml_plus_plus":
            options["first_order"] = config.first_order
        meta_learner = ALGORITHMS[algorithm](build_backbone(config), **options)
        optimizer = keras.optimizers.Adam(config.outer_lr)
    meta_learner.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    return meta_learner


class _WallTime(keras.callbacks.Callback):
    """Adds `wall_time` (seconds of training so far, resumed runs included) to epoch logs."""

    def __init__(self, history_path):
        super().__init__()
        self.history_path = history_path

    def on_train_begin(self, logs=None):
        # A resumed run goes on from the wall time its history ends with.
        earlier = 0.0
        if os.path.exists(self.history_path):
            with open(self.history_path) as f:
                rows = list(csv.DictReader(f))
            if rows and rows[-1].get("wall_time"):
                earlier = float(rows[-1]["wall_time"])
        self.start = time.time() - earlier

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["wall_time"] = time.time() - self.start


def _epochs(config):
    if config.meta_steps % config.steps_per_epoch:
        raise ValueError(
            f"meta_steps ({config.meta_steps}) must be a multiple of steps_per_epoch "
            f"({config.steps_per_epoch})."
        )
    return config.meta_steps // config.steps_per_epoch


def _resumed_epoch(backup_dir):
    """The epoch an interrupted run stopped at (BackupAndRestore's record)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f).get("epoch", 0))


def run(config, workdir):
    """Meta-trains as `config` says, resuming from `workdir`; returns the report.

    Writes `workdir/meta.keras` (the meta-learner), TensorBoard logs in
    `workdir/logs`, a backup for resumption in `workdir/backup` (removed when
    training completes), `report.json`, and the PNG figures. Run again with
    the same `workdir`, it resumes an interrupted run, or only re-evaluates a
    finished one.
    """
    os.makedirs(workdir, exist_ok=True)
    meta_path = os.path.join(workdir, "meta.keras")
    backup_dir = os.path.join(workdir, "backup")
    epochs = _epochs(config)
    report_path = os.path.join(workdir, "report.json")
    if os.path.exists(meta_path) and not os.path.exists(backup_dir):
        logging.info("%s exists: training finished earlier; evaluating only.", meta_path)
        meta_learner = keras.models.load_model(meta_path)
        training_seconds = None
        if os.path.exists(report_path):
            with open(report_path) as f:
                training_seconds = json.load(f).get("training_seconds")
    else:
        keras.utils.set_random_seed(config.seed)
        # Layers built from here on compute in the policy's dtype; variables,
        # inner and outer losses stay float32.
        keras.mixed_precision.set_global_policy(config.get("dtype_policy", "float32"))
        meta_learner = build_meta_learner(config)
        # Continue the episode stream where the interrupted run stopped, so
        # a resumed run sees the same tasks as an uninterrupted one.
        start_batch = _resumed_epoch(backup_dir) * config.steps_per_epoch
        history_path = os.path.join(workdir, "history.csv")
        start = time.time()
        meta_learner.fit(
            episodes(config, "train", start_batch=start_batch),
            epochs=epochs,
            steps_per_epoch=config.steps_per_epoch,
            validation_data=episodes(config, "validation", num_batches=config.validation_batches),
            callbacks=[
                keras.callbacks.BackupAndRestore(backup_dir),
                keras.callbacks.TensorBoard(os.path.join(workdir, "logs")),
                _WallTime(history_path),  # before CSVLogger, which writes the logs it sees
                keras.callbacks.CSVLogger(history_path, append=True),
            ],
            verbose=config.verbose,
        )
        # Wall time of this run's fit (a resumed run counts its own part only).
        training_seconds = round(time.time() - start, 1)
        meta_learner.save(meta_path)
    report = evaluate(meta_learner, config, workdir)
    report.update(
        meta_steps=int(meta_learner.optimizer.iterations.numpy()),
        training_seconds=training_seconds,
    )
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def evaluate(meta_learner, config, workdir=None):
    """Query results after 0..`eval_max_steps` steps on `eval_tasks` test tasks.

    Returns a report with the mean and 95% confidence half-width of the loss
    (and accuracy, for classification) after each number of steps; with a
    `workdir`, also writes the figures there.
    """
    test = episodes(config, "test", queries=config.eval_queries)
    results = evaluation.query_results_by_step(
        meta_learner, test, config.eval_tasks, config.eval_max_steps
    )
    report = {"tasks": config.eval_tasks, "eval_queries": config.eval_queries}
    ylabels = {"loss": "query MSE" if config.task == "sinusoid" else "query loss",
               "accuracy": "query accuracy"}
    for name, values in results.items():
        mean, confidence = evaluation.mean_and_confidence(values)
        report[f"{name}_by_step"] = [round(float(m), 4) for m in mean]
        report[f"{name}_confidence_95"] = [round(float(c), 4) for c in confidence]
        # Plain SGD can diverge on a rare task; the median shows the typical one.
        report[f"{name}_median_by_step"] = [round(float(m), 4) for m in np.median(values, axis=0)]
        if workdir is not None:
            plots.plot_by_step(
                mean, confidence, os.path.join(workdir, f"{name}_by_step.png"), ylabels[name]
            )
    if workdir is not None and config.task == "sinusoid":
        plots.plot_sinusoid_fits(
            meta_learner,
            episodes(config, "plots", num_batches=1, queries=100),
            os.path.join(workdir, "sinusoid_fits.png"),
        )
    logging.info("query results by step: %s", {k: v for k, v in report.items() if "by_step" in k})
    return report
