"""A meta-training run from a config: data, model, fit, checkpoints, report.

`scripts/train.py` is a thin absl front end to the run of `config.task`
(`tf_maml.runs.tasks`); for supervised tasks that is `run(config, workdir)`.
The config's task gives the episodes, backbone, loss and figures; its
algorithm's recipe (`tf_maml.runs.members`) the meta-learner and optimizer.
"""

import csv
import math
import os
import shutil
import time

import keras
import numpy as np
from absl import logging

from tf_maml.runs import checkpoints, members, plots, pretrained_baseline, step_curves, tasks
# The config checks of a run, under the names this module has always offered.
from tf_maml.runs.config_checks import (  # noqa: F401
    ADDED_FIELDS, HARMLESS_FIELDS, TRAINING_FIELDS, ConfigMismatchError, check_config,
    config_differences, evaluation_config, file_differences, flat_config,
)
from tf_maml.runs.tasks import episodes
from tf_maml.runs.workdir_lock import run_lock


def build_backbone(config):
    """A fresh backbone network for `config.task` (`tf_maml.runs.tasks`)."""
    return tasks.task_of(config).backbone(config)


def loss_and_metrics(config):
    """The task loss and metrics of `config.task`, for `compile`."""
    return tasks.task_of(config).loss_and_metrics(config)


def build_meta_learner(config):
    """A compiled meta-learner of `config.algorithm` (default MAML) for `config`, made by
    the member's recipe (`tf_maml.runs.members`)."""
    task = tasks.task_of(config)
    task.check(config)
    loss, metrics = task.loss_and_metrics(config)
    recipe = members.recipe(config.get("algorithm", "maml"))
    meta_learner = recipe.build(
        task.backbone(config), config, eval_inner_steps=config.eval_inner_steps,
        transductive=config.get("transductive"))
    meta_learner.compile(
        optimizer=recipe.optimizer(config),
        loss=loss,
        metrics=metrics,
        jit_compile=config.jit_compile,
        steps_per_execution=steps_per_execution(config),
    )
    return meta_learner


def steps_per_execution(config):
    """`config.steps_per_execution`, lowered to divide `steps_per_epoch`: Keras runs whole
    executions, so 100 steps per execution made an epoch of 10 steps run 100."""
    steps = math.gcd(config.steps_per_execution, config.steps_per_epoch)
    if steps != config.steps_per_execution:
        logging.info("steps_per_execution %d -> %d, to divide steps_per_epoch (%d).",
                     config.steps_per_execution, steps, config.steps_per_epoch)
    return steps


class WallTime(keras.callbacks.Callback):
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


def num_epochs(config):
    if config.steps_per_epoch < 1 or config.meta_steps < 1:
        raise ValueError(
            f"meta_steps ({config.meta_steps}) and steps_per_epoch ({config.steps_per_epoch}) "
            "must be >= 1."
        )
    if config.meta_steps % config.steps_per_epoch:
        per_epoch = config.steps_per_epoch
        lower = config.meta_steps - config.meta_steps % per_epoch
        meta_steps = " or ".join(str(n) for n in sorted({lower, lower + per_epoch} - {0}))
        divisor = max(d for d in range(1, per_epoch + 1) if config.meta_steps % d == 0)
        raise ValueError(
            f"meta_steps ({config.meta_steps}) must be a multiple of steps_per_epoch "
            f"({per_epoch}): change --config.meta_steps (e.g. to {meta_steps}) or "
            f"--config.steps_per_epoch (e.g. to {divisor})."
        )
    return config.meta_steps // config.steps_per_epoch


def history_until(history_path, epochs):
    """Keeps the history's lines of the first `epochs` epochs, those the backup a resumed
    run starts from has trained: a kill can cut CSVLogger's last line, or come after it
    and before the backup (that epoch is trained again). With no epoch, no history."""
    if not os.path.exists(history_path):
        return
    if not epochs:
        os.remove(history_path)
        return
    with open(history_path, newline="") as f:
        content = f.read()
    lines = content[: content.rfind("\n") + 1].splitlines(keepends=True)
    try:
        rows = list(csv.reader(lines))
        column = rows[0].index("epoch") if rows else 0
        kept = lines[:1] + [line for line, row in zip(lines[1:], rows[1:])
                            if int(row[column]) < epochs]
    except (ValueError, IndexError) as error:  # no epoch column, a blank or odd line
        raise checkpoints.DamagedFileError(
            f"{history_path} is damaged ({error!r}); repair or remove it to resume (without "
            "it, the history and training_seconds start at the resumed epoch).") from error
    if "".join(kept) != content:
        with checkpoints.atomic_path(history_path) as partial:
            with open(partial, "w", newline="") as f:
                f.write("".join(kept))


def fit_resumably(meta_learner, config, workdir, train_data, validation_data):
    """`fit` for `config.meta_steps` steps, resuming a backup in `workdir`; saves meta.keras.

    `train_data(start_batch)` gives the training stream from batch
    `start_batch`, so that a resumed run sees the same batches as an
    uninterrupted one. The backup is kept until `workdir/meta.keras` is
    safely written. Returns the seconds of training, from the start of
    `fit`'s first epoch, those of the processes a resumed run ran in before
    included (as the history's `wall_time`; the time of an epoch a kill cut
    short is not counted).
    """
    backup_dir = os.path.join(workdir, "backup")
    start_epoch = checkpoints.latest_backup_epoch(backup_dir)  # every one damaged: raises
    start_batch = start_epoch * config.steps_per_epoch
    history_path = os.path.join(workdir, "history.csv")
    history_until(history_path, start_epoch)
    wall_time = WallTime(history_path)
    meta_learner.fit(
        train_data(start_batch),
        epochs=num_epochs(config),
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_data,
        # At an epoch's end: its history line first, then its backup (a kill between
        # them leaves a line history_until drops when resuming).
        callbacks=[
            wall_time,  # before CSVLogger, which writes the logs it sees
            keras.callbacks.CSVLogger(history_path, append=True),
            checkpoints.AtomicBackupAndRestore(backup_dir, delete_checkpoint=False),
            keras.callbacks.TensorBoard(os.path.join(workdir, "logs")),
        ],
        verbose=config.verbose,
    )
    training_seconds = round(time.time() - wall_time.start, 1)
    checkpoints.save_model(meta_learner, os.path.join(workdir, "meta.keras"))
    shutil.rmtree(backup_dir, ignore_errors=True)
    return training_seconds


def trained_meta_learner(config, workdir, build, train_data, validation_data,
                         allow_config_change=False):
    """`(meta_learner, training_seconds)`: trained in `workdir` as `config` says, resumed
    there if interrupted, or loaded from `workdir/meta.keras` if finished.

    `build(config)` makes the meta-learner; `train_data(start_batch)` and
    `validation_data()` the streams (see `fit_resumably`). A config that
    differs from the one `workdir` was trained with is refused
    (`check_config`). `training_seconds` of a finished run: its report's.
    """
    num_epochs(config)  # refuses bad step counts before any compute
    os.makedirs(workdir, exist_ok=True)
    meta_path = os.path.join(workdir, "meta.keras")
    report_path = os.path.join(workdir, "report.json")
    finished = os.path.exists(meta_path) and not os.path.exists(os.path.join(workdir, "backup"))
    check_config(config, workdir, finished, allow_config_change)
    if finished:
        logging.info("%s exists: training finished earlier; evaluating only.", meta_path)
        training_seconds = None
        if os.path.exists(report_path):
            training_seconds = checkpoints.read_json(report_path).get("training_seconds")
        return checkpoints.load_model(meta_path), training_seconds
    keras.utils.set_random_seed(config.seed)
    # Layers built from here on compute in the policy's dtype; variables,
    # inner and outer losses stay float32.
    keras.mixed_precision.set_global_policy(config.get("dtype_policy", "float32"))
    meta_learner = build(config)
    return meta_learner, fit_resumably(meta_learner, config, workdir, train_data,
                                       validation_data())


def run(config, workdir, allow_config_change=False):
    """Meta-trains as `config` says, resuming from `workdir`; returns the report.

    Writes `workdir/meta.keras` (the meta-learner), `config.json` (the config
    it was trained with), TensorBoard logs in `workdir/logs`, a backup for
    resumption in `workdir/backup` (removed once meta.keras is in place),
    `report.json`, and the PNG figures; every file for later is written
    atomically. Run again with the same `workdir`, it resumes an interrupted
    run, or only re-evaluates a finished one; a config that differs in a
    field that matters (not in `HARMLESS_FIELDS`) is refused unless
    `allow_config_change`. One run at a time per workdir (`run_lock`).
    """
    tasks.task_of(config).check(config)  # before the workdir records anything
    if config.get("pretrained"):
        pretrained_baseline.check_settings(config)
    check_test_split(config)
    with run_lock(workdir):
        meta_learner, training_seconds = trained_meta_learner(
            config, workdir, build_meta_learner,
            lambda start_batch: episodes(config, "train", start_batch=start_batch),
            lambda: episodes(config, "validation", num_batches=config.validation_batches),
            allow_config_change)
        report = evaluate(meta_learner, config, workdir)
        report.update(training_seconds=training_seconds)
        checkpoints.write_json(os.path.join(workdir, "report.json"), report)
    return checkpoints.finite_or_none(report)


def check_test_split(config):
    """Builds the test episodes before any training: a test split too small for shots +
    eval_queries (e.g. too few held-out speakers) is refused now, not after the run."""
    episodes(config, "test", num_batches=1, queries=config.eval_queries)


def run_variants(base, workdir, variants):
    """Runs `base` changed by each of `variants`, each in `workdir/<name>`.

    `variants` maps a name to a function that changes a copy of the config in
    place. Yields `(name, config, report)` per run; each run resumes on its own.
    """
    for name, change in variants.items():
        config = base.copy_and_resolve_references()
        change(config)
        yield name, config, run(config, os.path.join(workdir, name))


def _plot_results_by_step(curves, config, task, report, workdir):
    """`loss_by_step.png` (and `accuracy_by_step.png`): the figures as reported and, where
    they differ, as served (each query on its own, as `adapt()`), in one plot, with the
    transfer baselines' where the run has them."""
    ylabels = {"loss": task.loss_label, "accuracy": "query accuracy"}
    title = (f"{plots.run_title(task.setting(config), report['meta_steps'], report['algorithm'])}"
             f", {config.eval_tasks} test tasks")
    for name in ("loss", "accuracy"):
        if name not in curves:
            continue
        served = curves.get(f"served_{name}")
        if served is not None and not np.allclose(served[0], curves[name][0]):
            label, others = "as reported (query batch statistics)", {
                "served (each query on its own, as adapt())": served}
        else:
            label, others = "reported = served", {}
        # The transfer baselines, as the meta-learner's first curve (pretrained_baseline).
        for prefix, baseline in (("pretrained_", "pretrained, fine-tuned"),
                                 ("prototype_", "pretrained, nearest prototype (no steps)")):
            if prefix + name in curves:
                others[f"{baseline} ({label.split(' (')[0]})"] = curves[prefix + name]
        plots.plot_by_step(*curves[name], os.path.join(workdir, f"{name}_by_step.png"),
                           ylabels[name], label=label, others=others, title=title)


def check_meta_learner_matches(meta_learner, config, recorded=None):
    """Refuses evaluating `meta_learner` under a config it was not trained with.

    Compares the meta-learner's algorithm with `config`, and the `recorded`
    config of its workdir (config.json) field by field; a file without its
    workdir's record (`recorded` None) with the meta-learner the config builds
    (hyper-parameters and the model's weights' shapes).
    """
    algorithm = config.get("algorithm", "maml")
    expected = members.RECIPES[algorithm].member if algorithm in members.RECIPES else None
    problems = []
    if expected is not None and type(meta_learner) is not expected:
        problems.append(
            f"algorithm: the config says {algorithm!r} ({expected.__name__}), the file holds "
            f"{type(meta_learner).__name__}"
        )
    if recorded is None and not problems:
        problems += file_differences(meta_learner, build_meta_learner(config))
    if recorded is not None:
        current = flat_config(config)
        problems += [
            f"{key}: trained with {recorded.get(key)!r}, config says {current.get(key)!r}"
            for key in config_differences(recorded, config)
        ]
    if problems:
        raise ConfigMismatchError(
            "The meta-learner does not match the config: " + "; ".join(problems)
            + ". Pass the config it was trained with (its workdir's config.json lists it)."
        )


def evaluate(meta_learner, config, workdir=None):
    """Query results after 0..`eval_max_steps` steps on `eval_tasks` test tasks.

    Returns a report with the mean and 95% confidence half-width of the loss
    (and accuracy, for classification) after each number of steps, as the
    meta-learner computes them and as served (`served_*`, see
    `evaluation.query_results_by_step`); with a `workdir`, also writes the
    figures there.
    """
    logging.info("Evaluating on %d test tasks, after 0..%d inner steps (the first batch "
                 "reads the test episodes and traces the evaluation: a minute on Omniglot).",
                 config.eval_tasks, config.eval_max_steps)
    test = episodes(config, "test", queries=config.eval_queries)
    results = step_curves.query_results_by_step(
        meta_learner, test, config.eval_tasks, config.eval_max_steps, verbose=config.verbose
    )
    report = {
        "algorithm": type(meta_learner).__name__,
        "meta_steps": int(meta_learner.optimizer.iterations.numpy()),
        "config": flat_config(config),
        "tasks": config.eval_tasks,
        "eval_queries": config.eval_queries,
        # What accuracy_by_step means: query-batch statistics (True) or the support set's.
        "transductive": bool(meta_learner.transductive),
    }
    task = tasks.task_of(config)
    curves = _add_results(report, "", results)
    if workdir is not None and config.get("pretrained"):
        # The transfer baseline on the same test tasks (it keeps its network in workdir).
        for name, baseline in pretrained_baseline.evaluate(config, workdir).items():
            curves.update(_add_results(report, f"{name}_", baseline))
    if workdir is not None:
        logging.info("Drawing the figures in %s.", workdir)
        _plot_results_by_step(curves, config, task, report, workdir)
        task.figures(meta_learner, config, workdir)
    logging.info("query results by step: %s", {k: v for k, v in report.items() if "by_step" in k})
    return report


def _add_results(report, prefix, results):
    """Adds each figure's mean, 95% interval and median by step to `report` under
    `prefix`; returns `{prefix + name: (mean, interval)}`."""
    curves = {}
    for name, values in results.items():
        key = prefix + name
        curves[key] = step_curves.mean_and_confidence(values)
        report[f"{key}_by_step"] = [round(float(m), 4) for m in curves[key][0]]
        report[f"{key}_confidence_95"] = [round(float(c), 4) for c in curves[key][1]]
        # Plain SGD can diverge on a rare task; the median shows the typical one.
        report[f"{key}_median_by_step"] = [round(float(m), 4) for m in np.median(values, axis=0)]
    return curves
