"""One config meta-trained with several training seeds: each run's result and their spread.

Each seed's run lives in `workdir/seed_<seed>` (an interrupted benchmark
resumes) and is evaluated on test tasks drawn from its seed, as a run of
scripts/train.py with that seed is. The table gives each run's mean ± 95%
interval (the spread of its test tasks) and the mean and standard deviation
over the runs (the spread of whole runs: training seed and test tasks), as
papers report them.

  python scripts/seeds_benchmark.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=../shared/data/omniglot --config.meta_steps=600 \
      --config.steps_per_epoch=100 --seeds=0,1,2 --workdir=runs/seeds_5w1s \
      --out=runs/seeds_5w1s/table.md
"""

from absl import app, flags
from ml_collections import config_flags

import tf_maml.experiment
from tf_maml.runs.reporting import cell, machine, over_runs, publish_table

_CONFIG = config_flags.DEFINE_config_file("config", None, "The config (task, budget).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (config.seed).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/seeds", "Parent of the runs.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here too.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    base = _CONFIG.value
    seeds = [int(seed) for seed in _SEEDS.value]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise app.UsageError(f"--seeds must list at least 2 distinct seeds; received {seeds}.")
    name = "accuracy" if base.task != "sinusoid" else "loss"
    steps = base.eval_max_steps
    rows = [f"| training seed | meta-steps | {name}, 1 step | {name}, {steps} steps "
            f"| served {name}, {steps} steps | training time (s) |", "|---|---|---|---|---|---|"]

    def with_seed(seed):
        def change(config):
            config.seed = seed
        return change

    variants = {f"seed_{seed}": with_seed(seed) for seed in seeds}
    reports = []
    for (_, _, report), seed in zip(
            tf_maml.experiment.run_variants(base, _WORKDIR.value, variants), seeds):
        reports.append(report)
        rows.append(f"| {seed} | {report['meta_steps']} | {cell(report, name, 1)} "
                    f"| {cell(report, name, steps)} | {cell(report, f'served_{name}', steps)} "
                    f"| {report['training_seconds']} |")
    summary = []
    for figure in (name, f"served_{name}"):
        spread = over_runs(reports, figure)
        summary.append(f"{spread[f'{figure}_by_step_over_runs'][steps]:.3f} (standard "
                       f"deviation {spread[f'{figure}_std_over_runs'][steps]:.3f})")
    rows.append(f"| mean over {len(seeds)} seeds | | | {summary[0]} | {summary[1]} | |")
    footer = (f"{base.eval_tasks} test tasks per run, drawn from its seed; ± is each run's 95% "
              f"confidence interval over its test tasks; served: each query predicted on its own, as adapt() serves "
              f"it. Machine: {machine()}.")
    publish_table(rows + ["", footer], _OUT.value)


if __name__ == "__main__":
    app.run(main)
