"""The MAML family on one budget: MSE (or accuracy) after 1 and 10 steps.

Meta-trains each algorithm with the same config and number of meta-steps,
evaluates each on the same test tasks, and writes a Markdown table. Each run
lives in its own workdir, so an interrupted benchmark resumes.

  python scripts/family_benchmark.py --config=configs/sinusoid.py --config.meta_steps=10000 \
      --workdir=runs/family_sinusoid --out=runs/family_sinusoid/table.md
"""

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
from tf_maml.runs.reporting import cell, machine, publish_table

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config (task, budget).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/family", "Parent of the runs.")
_ALGORITHMS = flags.DEFINE_list(
    "algorithms", ["maml", "fomaml", "meta_sgd", "anil", "maml_plus_plus", "reptile"],
    "Algorithms; fomaml is maml with first_order=True.",
)
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here too.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    base = _CONFIG.value
    name = "accuracy" if base.task != "sinusoid" else "loss"
    rows = [
        f"| algorithm | meta-steps | {name}, 0 steps | {name}, 1 step | {name}, 10 steps "
        f"| served {name}, 10 steps | training time (s) |",
        "|---|---|---|---|---|---|---|",
    ]

    def as_algorithm(algorithm):
        def change(config):
            config.algorithm = "maml" if algorithm == "fomaml" else algorithm
            config.first_order = algorithm == "fomaml"
        return change

    variants = {algorithm: as_algorithm(algorithm) for algorithm in _ALGORITHMS.value}
    for algorithm, _, report in tf_maml.experiment.run_variants(base, _WORKDIR.value, variants):
        cells = " | ".join(
            [cell(report, name, k) for k in (0, 1, 10)] + [cell(report, f"served_{name}", 10)]
        )
        rows.append(f"| {algorithm} | {report['meta_steps']} | {cells} | {report['training_seconds']} |")
    footer = (f"{base.eval_tasks} test tasks; ± is the 95% confidence interval; served: each "
              f"query predicted on its own, as adapt() serves it. Machine: {machine()}.")
    publish_table(rows + ["", footer], _OUT.value)


if __name__ == "__main__":
    app.run(main)
