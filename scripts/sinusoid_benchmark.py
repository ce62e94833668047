"""Sinusoid benchmark: MSE after 1 and 10 steps for K = 5, 10, 20 (MAML paper protocol).

Meta-trains one meta-learner per K with configs/sinusoid.py (70,000 meta-steps
by default), evaluates each on 600 fresh tasks, and writes a Markdown table.
Each run lives in its own workdir, so an interrupted benchmark resumes.

  python scripts/sinusoid_benchmark.py --workdir=runs/sinusoid_benchmark \
      --out=runs/sinusoid_benchmark/table.md
  python scripts/sinusoid_benchmark.py --shots=5 --config.meta_steps=2000 ...   # quicker
"""

import os

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
from tf_maml.runs.reporting import machine, publish_table

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "sinusoid.py"),
    "Base config; shots and queries are set per run.",
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/sinusoid_benchmark", "Parent of the runs.")
_SHOTS = flags.DEFINE_list("shots", ["5", "10", "20"], "Support points per task (K).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here too.")


def main(argv):
    del argv
    rows = [
        "| K | meta-steps | MSE, 0 steps | MSE, 1 step | MSE, 10 steps | median MSE, 1 / 10 steps "
        "| training time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for shots in map(int, _SHOTS.value):
        config = _CONFIG.value.copy_and_resolve_references()
        config.shots = config.queries = shots
        report = tf_maml.experiment.run(config, os.path.join(_WORKDIR.value, f"k{shots}"))
        mse, ci = report["loss_by_step"], report["loss_confidence_95"]
        median = report["loss_median_by_step"]
        rows.append(
            f"| {shots} | {report['meta_steps']} | {mse[0]:.3f} ± {ci[0]:.3f} "
            f"| {mse[1]:.3f} ± {ci[1]:.3f} | {mse[10]:.3f} ± {ci[10]:.3f} "
            f"| {median[1]:.3f} / {median[10]:.3f} | {report['training_seconds']} |"
        )
    footer = (
        f"{config.eval_tasks} test tasks, {config.eval_queries} query points each, "
        f"± is the 95% confidence interval. Machine: {machine()}."
    )
    publish_table(rows + ["", footer], _OUT.value)


if __name__ == "__main__":
    app.run(main)
