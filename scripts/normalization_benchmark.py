"""Normalization for few-shot classification: the accuracy reported and the accuracy served.

Meta-trains the same config three ways and evaluates each on the same test
tasks, with both figures (docs/concepts.md, "Normalization"):
- `batch_transductive`: BatchNorm, queries normalized with their own batch's
  statistics (the papers' protocol; `adapt()` serves support-set statistics);
- `batch_support`: BatchNorm meta-trained with the support set's statistics;
- `task`: TaskNorm-I (`tf_maml.layers.TaskNormalization`).
Each run lives in its own workdir, so an interrupted benchmark resumes.

  python scripts/normalization_benchmark.py --config=configs/omniglot.py:5w1s \\
      --config.data_dir=DIR --config.meta_steps=600 --workdir=runs/normalization_5w1s
"""

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
from tf_maml.runs.reporting import cell, machine, publish_table

# name: (conv4 normalization, transductive)
VARIANTS = {
    "batch_transductive": ("batch", True),
    "batch_support": ("batch", False),
    "task": ("task", False),
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config (Omniglot setting, budget).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/normalization", "Parent of the runs.")
_VARIANTS = flags.DEFINE_multi_enum("variants", list(VARIANTS), list(VARIANTS), "Variants to run.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here too.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    base = _CONFIG.value
    if base.task == "sinusoid":
        raise app.UsageError("Normalization variants are for the conv4 classification tasks.")
    steps = base.eval_max_steps
    rows = [
        f"| normalization | meta-trained transductive | accuracy reported, {steps} steps "
        f"| accuracy served, {steps} steps | served, 0 steps | training time (s) |",
        "|---|---|---|---|---|---|",
    ]

    def variant(name):
        def change(config):
            config.model.normalization, config.transductive = VARIANTS[name]
        return change

    variants = {name: variant(name) for name in _VARIANTS.value}
    for _, config, report in tf_maml.experiment.run_variants(base, _WORKDIR.value, variants):
        rows.append(
            f"| {config.model.normalization} | {report['transductive']} "
            f"| {cell(report, 'accuracy', steps)} | {cell(report, 'served_accuracy', steps)} "
            f"| {cell(report, 'served_accuracy', 0)} | {report['training_seconds']} |"
        )
    footer = (f"{base.eval_tasks} test tasks after {base.meta_steps} meta-steps; ± is the 95% "
              "confidence interval; served: each query predicted on its own with the support "
              f"set's statistics, as adapt() and export_adaptive() serve it. Machine: {machine()}.")
    publish_table(rows + ["", footer], _OUT.value)


if __name__ == "__main__":
    app.run(main)
