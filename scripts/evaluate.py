"""Evaluates a meta-learner on fresh test tasks: the papers' protocol.

Adapts to each of `--config.eval_tasks` test tasks (600 by default) with up to
`--config.eval_max_steps` inner steps (10) and reports the query accuracy (or
loss) after each number of steps, mean ± 1.96 std / sqrt(tasks).

Example:
  python scripts/evaluate.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=../shared/data/omniglot --meta=runs/omniglot_5w1s/meta.keras

A run still in progress has no meta.keras yet; evaluate its last backup with
  --weights=runs/omniglot_5w1s/backup/latest.weights.h5
(the meta-learner is rebuilt from the config, then its weights are loaded).
"""

import json

import keras
from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the meta-learner was trained with.")
_META = flags.DEFINE_string("meta", None, "A meta.keras file, as scripts/train.py writes it.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "Or: a weights file of the config's meta-learner (e.g. a run's backup)."
)
_OUT = flags.DEFINE_string("out", None, "Also write the report as JSON here.")
flags.mark_flags_as_required(["config"])
flags.mark_flags_as_mutual_exclusive(["meta", "weights"], required=True)


def main(argv):
    del argv
    if _META.value:
        meta_learner = keras.models.load_model(_META.value)
    else:
        meta_learner = tf_maml.experiment.build_meta_learner(_CONFIG.value)
        meta_learner.build((None,) + meta_learner.example_shape)
        meta_learner.optimizer.build(meta_learner.trainable_variables)
        meta_learner.load_weights(_WEIGHTS.value)
    report = tf_maml.experiment.evaluate(meta_learner, _CONFIG.value)
    steps = _CONFIG.value.eval_max_steps
    name = "accuracy" if "accuracy_by_step" in report else "loss"
    mean, confidence = report[f"{name}_by_step"][steps], report[f"{name}_confidence_95"][steps]
    print(f"{name} after {steps} steps on {report['tasks']} tasks: {mean:.4f} ± {confidence:.4f}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    app.run(main)
