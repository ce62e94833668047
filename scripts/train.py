"""Meta-trains a tf_maml meta-learner from a config file.

Example:
  python scripts/train.py --config=configs/sinusoid.py --workdir=runs/sinusoid
  python scripts/train.py --config=configs/sinusoid.py --config.inner_steps=5 --workdir=runs/k5
  python scripts/train.py --config=configs/navigation.py --workdir=runs/navigation

The workdir receives meta.keras, TensorBoard logs, report.json and figures;
rerun with the same workdir to resume an interrupted run.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
import tf_maml.rl.experiment  # registers the meta-RL tasks
from tf_maml.runs import checkpoints, config_checks, tasks
from tf_maml.runs.workdir_lock import WorkdirLockedError
from tf_maml.learners import guards

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume or re-evaluate a workdir although the config differs from its config.json.")
flags.mark_flags_as_required(["config", "workdir"])

# Failures with a message that says it all: no traceback, exit code 1.
CLEAR_FAILURES = (
    guards.TrainingDivergedError, guards.EpisodeError, checkpoints.DamagedFileError,
    checkpoints.SaveError, tf_maml.experiment.ConfigMismatchError, WorkdirLockedError,
)


def main(argv):
    del argv
    try:
        config = _CONFIG.value
        report = tasks.task_of(config).run(config, _WORKDIR.value,
                                           allow_config_change=_ALLOW_CONFIG_CHANGE.value)
    except CLEAR_FAILURES as error:
        sys.exit(f"train.py: {type(error).__name__}: {error}")
    print(json.dumps(report, indent=2, allow_nan=False))


if __name__ == "__main__":
    app.run(main, flags_parser=config_checks.parse_flags)
