"""Meta-trains a tf_maml meta-learner from a config file.

Example:
  python scripts/train.py --config=configs/sinusoid.py --workdir=runs/sinusoid
  python scripts/train.py --config=configs/sinusoid.py --config.inner_steps=5 --workdir=runs/k5

The workdir receives meta.keras, TensorBoard logs, report.json and figures;
rerun with the same workdir to resume an interrupted run.
"""

import json

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    report = tf_maml.experiment.run(_CONFIG.value, _WORKDIR.value)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
