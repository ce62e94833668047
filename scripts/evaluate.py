"""Evaluates a meta-learner on fresh test tasks: the papers' protocol.

Adapts to each of `--config.eval_tasks` test tasks (600 by default) with up to
`--config.eval_max_steps` inner steps (10) and reports the query accuracy (or
loss) after each number of steps, mean ± 1.96 std / sqrt(tasks).

Example:
  python scripts/evaluate.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=../shared/data/omniglot --meta=runs/omniglot_5w1s/meta.keras

A run's budget and other training fields (tf_maml.experiment.TRAINING_FIELDS:
meta_steps, steps_per_epoch, outer_lr, ...) are read from the config.json beside
meta.keras; a field that changes what is evaluated (model, ways, shots, inner_lr, ...)
must match it, or the evaluation is refused naming it.

A run still in progress has no meta.keras yet; evaluate its last backup with
  --weights=runs/omniglot_5w1s/backup/latest.weights.h5
(the meta-learner is rebuilt from the config, then its weights are loaded).

Several runs of the config that differ only in their training seed, all on the
test tasks of --config.seed: each run's mean ± interval (the test tasks' spread),
then the mean and standard deviation over the runs (the training seeds' spread),
as papers report them:
  python scripts/evaluate.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=../shared/data/omniglot \
      --meta=runs/seeds/seed_0/meta.keras,runs/seeds/seed_1/meta.keras,runs/seeds/seed_2/meta.keras
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import tf_maml.experiment
from tf_maml.runs import checkpoints, config_checks
from tf_maml.runs.reporting import over_runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the meta-learner was trained with.")
_META = flags.DEFINE_list(
    "meta", None, "meta.keras files, as scripts/train.py writes them: one, or one per "
    "training seed (comma-separated) for the mean and spread over seeds.")
_WEIGHTS = flags.DEFINE_list(
    "weights", None, "Or: weights files of the config's meta-learner (e.g. a run's backup).")
_OUT = flags.DEFINE_string("out", None, "Also write the report as JSON here.")
flags.mark_flags_as_required(["config"])
flags.mark_flags_as_mutual_exclusive(["meta", "weights"], required=True)


def main(argv):
    del argv
    paths = _META.value or _WEIGHTS.value
    try:
        for path in paths:  # every file exists before minutes of evaluation
            if not os.path.exists(path):
                raise FileNotFoundError(f"No such file: {path}")
        reports = [_evaluate(path) for path in paths]
    except (checkpoints.DamagedFileError, checkpoints.SaveError,
            tf_maml.experiment.ConfigMismatchError,
            FileNotFoundError) as error:
        sys.exit(f"evaluate.py: {type(error).__name__}: {error}")
    steps = _CONFIG.value.eval_max_steps
    name = "accuracy" if "accuracy_by_step" in reports[0] else "loss"
    for path, report in zip(paths, reports):
        mean, confidence = report[f"{name}_by_step"][steps], report[f"{name}_confidence_95"][steps]
        served = (report[f"served_{name}_by_step"][steps],
                  report[f"served_{name}_confidence_95"][steps])
        print(f"{path}: {report['algorithm']} at {report['meta_steps']} meta-steps, {name} "
              f"after {steps} steps on {report['tasks']} tasks: {mean:.4f} ± {confidence:.4f} "
              f"(served, each query on its own: {served[0]:.4f} ± {served[1]:.4f})")
    result = reports[0]
    if len(reports) > 1:
        result = {"runs": reports}
        for figure in (name, f"served_{name}"):
            spread = over_runs(reports, figure)
            result.update(spread)
            print(f"{figure} after {steps} steps over {len(reports)} runs: "
                  f"{spread[f'{figure}_by_step_over_runs'][steps]:.4f} (standard deviation "
                  f"{spread[f'{figure}_std_over_runs'][steps]:.4f} over runs)")
    if _OUT.value:
        checkpoints.write_json(_OUT.value, result)


def _evaluate(path):
    config = _CONFIG.value
    if _META.value:
        meta_learner = checkpoints.load_model(path)
        recorded = os.path.join(os.path.dirname(path), "config.json")
        recorded = checkpoints.read_json(recorded) if os.path.exists(recorded) else None
        if recorded is not None:
            # The run's budget and other training fields follow its config.json; runs of
            # several training seeds are each evaluated on --config.seed's test tasks.
            if len(_META.value) > 1:
                recorded["seed"] = config.seed
            config, followed = tf_maml.experiment.evaluation_config(config, recorded)
            if followed:
                logging.info("%s: as trained (its config.json), whatever the config says: %s",
                             path, ", ".join(f"{k}={recorded[k]!r}" for k in followed))
        tf_maml.experiment.check_meta_learner_matches(meta_learner, config, recorded)
    else:
        meta_learner = tf_maml.experiment.build_meta_learner(config)
        meta_learner.build((None,) + meta_learner.example_shape)
        meta_learner.optimizer.build(meta_learner.trainable_variables)
        meta_learner.load_weights(path)
    return tf_maml.experiment.evaluate(meta_learner, config)


if __name__ == "__main__":
    app.run(main, flags_parser=config_checks.parse_flags)
