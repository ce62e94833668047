"""Searches meta-learning hyper-parameters with keras-tuner and prints the best.

Each trial meta-trains a meta-learner built by
`tf_maml.tuning.MetaLearnerHyperModel` on the config's training episodes and
scores it on post-adaptation validation results. Rerun with the same
--directory to resume an interrupted search.

Example:
  python scripts/tune.py --config=configs/sinusoid.py --tuner=random --max_trials=20 \
      --epochs=4 --config.steps_per_epoch=500 --directory=runs/tuning
"""

import json
import os
import sys

import keras
import keras_tuner
from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
import tf_maml.runs.tuning
from tf_maml.runs import checkpoints, config_checks

_CONFIG = config_flags.DEFINE_config_file("config", None, "Task config (data, backbone).")
_TUNER = flags.DEFINE_enum("tuner", "random", ["random", "hyperband", "bayesian"], "Search.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 10, "Trials (random, bayesian).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per trial (hyperband: the maximum).")
_ALGORITHMS = flags.DEFINE_list("algorithms", list(tf_maml.tuning.ALGORITHMS), "Algorithms.")
_DIRECTORY = flags.DEFINE_string("directory", "runs/tuning", "Where trials are stored.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the search.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    keras.utils.set_random_seed(_SEED.value)  # the trials' initial weights too: reruns agree
    config = _CONFIG.value
    loss, metrics = tf_maml.experiment.loss_and_metrics(config)
    hypermodel = tf_maml.tuning.MetaLearnerHyperModel(
        lambda: tf_maml.experiment.build_backbone(config), loss=loss, metrics=metrics,
        algorithms=_ALGORITHMS.value, eval_inner_steps=config.eval_inner_steps,
    )
    common = dict(objective=hypermodel.objective(), directory=_DIRECTORY.value,
                  project_name=config.task, overwrite=False, seed=_SEED.value)
    if _TUNER.value == "hyperband":
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=_EPOCHS.value, **common)
    elif _TUNER.value == "bayesian":
        tuner = keras_tuner.BayesianOptimization(hypermodel, max_trials=_MAX_TRIALS.value, **common)
    else:
        tuner = keras_tuner.RandomSearch(hypermodel, max_trials=_MAX_TRIALS.value, **common)
    try:
        tuner.search(
            tf_maml.experiment.episodes(config, "train"),
            steps_per_epoch=config.steps_per_epoch,
            epochs=_EPOCHS.value,
            validation_data=tf_maml.experiment.episodes(
                config, "validation", num_batches=config.validation_batches
            ),
            verbose=config.verbose,
        )
    except RuntimeError as error:  # keras-tuner's, with the last trial's traceback
        if "consecutive failures" not in str(error):
            raise
        last = [line for line in str(error).splitlines() if line.strip()][-1]
        sys.exit(f"tune.py: trials failed {tuner.oracle.max_consecutive_failed_trials} times "
                 f"in a row (narrow the search space, e.g. smaller inner_lr); the last: "
                 f"{last.split(': ', 1)[-1]}")
    best = tf_maml.tuning.best_completed_trials(tuner, 1)
    if not best:
        sys.exit(f"tune.py: no trial completed ({len(tuner.oracle.trials)} failed or diverged); "
                 "narrow the search space (e.g. smaller inner_lr).")
    best = best[0].hyperparameters.values
    print(json.dumps({"best_hyperparameters": best}, indent=2))
    checkpoints.write_json(os.path.join(_DIRECTORY.value, config.task, "best.json"), best)


if __name__ == "__main__":
    app.run(main, flags_parser=config_checks.parse_flags)
