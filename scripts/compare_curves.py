"""One metric of several runs' training histories on one figure, and a table of each run's
best epoch and last epoch.

  python scripts/compare_curves.py --metric=return --steps_per_epoch=25 \
      --runs="5 Adam steps of 1e-3=docs/data/rl/navigation_history.csv" \
      --runs="1 step of 1e-3=docs/data/rl/navigation_ppo_outer_steps_1_history.csv" \
      --plot=docs/images/navigation_ppo_drift.png

Each `--runs` is `label=history.csv` (of `scripts/train.py`); the runs must share their
epochs. Higher is better (`--lower_is_better` for losses).
"""

import numpy as np
from absl import app, flags

from tf_maml.rl import plots as rl_plots
from tf_maml.runs import reporting

_RUNS = flags.DEFINE_multi_string("runs", None, "label=history.csv, once per run.",
                                  required=True)
_METRIC = flags.DEFINE_string("metric", "return", "Column to compare.")
_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Meta-steps (meta-iterations) per epoch of those runs.",
    required=True)
_LOWER_IS_BETTER = flags.DEFINE_bool("lower_is_better", False, "The metric is a loss.")
_PLOT = flags.DEFINE_string("plot", None, "Write the figure here (PNG).")
_TITLE = flags.DEFINE_string("title", "", "The figure's title.")
_XLABEL = flags.DEFINE_string("xlabel", "meta-iterations",
                              "The x axis' name (meta-steps for supervised runs).")
_PLOT_FROM = flags.DEFINE_integer("plot_from", 0, "Draw the epochs from these meta-steps on "
                                  "(the first epochs can hide the differences that matter).")


def parse_run(text):
    label, separator, path = text.partition("=")
    if not separator or not label or not path:
        raise app.UsageError(f"--runs takes label=history.csv; received {text!r}.")
    return label, path


def main(argv):
    del argv
    steps, series = None, {}
    for label, path in map(parse_run, _RUNS.value):
        run_steps, values = reporting.read_curve(path, _METRIC.value, _STEPS_PER_EPOCH.value)
        if steps is not None and not np.array_equal(steps, run_steps):
            raise app.UsageError(f"{path} has other epochs than the runs before it: "
                                 "compare runs of one schedule.")
        if label in series:
            raise app.UsageError(f"Two runs are labelled {label!r}: give each its own label.")
        steps, series[label] = run_steps, values
    best = np.argmin if _LOWER_IS_BETTER.value else np.argmax
    print(f"| run | best {_METRIC.value} (meta-steps) | last ({steps[-1]:,.0f}) |")
    print("|---|---|---|")
    for label, values in series.items():
        i = best(values)
        print(f"| {label} | {values[i]:.1f} ({steps[i]:,.0f}) | {values[-1]:.1f} |")
    if _PLOT.value:
        shown = steps >= _PLOT_FROM.value
        if not shown.any():
            raise app.UsageError(f"--plot_from={_PLOT_FROM.value} is past the last epoch "
                                 f"({steps[-1]:,.0f} meta-steps).")
        rl_plots.plot_learning_curves(steps[shown], {k: v[shown] for k, v in series.items()},
                                      _PLOT.value,
                                      ylabel=_METRIC.value, title=_TITLE.value,
                                      xlabel=_XLABEL.value)
        print(f"Wrote {_PLOT.value}.")


if __name__ == "__main__":
    app.run(main)
