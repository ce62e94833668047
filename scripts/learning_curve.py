"""Validation accuracy against meta-steps from a training history, with its log-linear trend.

  python scripts/learning_curve.py --history=docs/data/omniglot_20w1s_history.csv \
      --steps_per_epoch=100 --fit_from=400,1000 --project_to=60000 --target=0.958 \
      --plot=docs/images/omniglot_20w1s_curve.png

Fits accuracy = a + b log10(meta-steps) by least squares to the epochs from each
`fit_from` meta-steps on, and reports b in points per tenfold, the accuracy the line
gives at `project_to` meta-steps, and the meta-steps where it reaches `target`. A trend
to read with care, not a prediction: learning curves bend, and the fit depends on where
it starts (hence several starts).
"""

import numpy as np
from absl import app, flags

from tf_maml.runs import plots

from tf_maml.runs import reporting

_HISTORY = flags.DEFINE_string("history", None, "history.csv of scripts/train.py.", required=True)
_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Meta-steps per epoch of that run.", required=True)
_METRIC = flags.DEFINE_string("metric", "val_accuracy", "Column to fit.")
_FIT_FROM = flags.DEFINE_list("fit_from", ["0"], "Fit the epochs from these meta-steps on.")
_PROJECT_TO = flags.DEFINE_integer("project_to", 60_000, "Meta-steps to read the line at.")
_TARGET = flags.DEFINE_float("target", None, "Accuracy whose meta-steps to report.")
_PLOT = flags.DEFINE_string("plot", None, "Write the curve and the fitted lines here (PNG).")
_OUT = flags.DEFINE_string("out", None, "Also write the table here.")


def main(argv):
    del argv
    steps, values = reporting.read_curve(_HISTORY.value, _METRIC.value, _STEPS_PER_EPOCH.value)
    fits = {int(start): reporting.log_linear_fit(steps, values, int(start))
            for start in _FIT_FROM.value}
    header = f"| fit from (meta-steps) | epochs fitted | points per tenfold | at {_PROJECT_TO.value:,} |"
    rule = "|---|---|---|---|"
    if _TARGET.value is not None:
        header += f" reaches {100 * _TARGET.value:.1f} % at |"
        rule += "---|"
    lines = [f"{_HISTORY.value}, {_METRIC.value}, last epoch {steps[-1]:,.0f} meta-steps: "
             f"{100 * values[-1]:.1f} %", "", header, rule]
    for start, (intercept, slope) in fits.items():
        line = (f"| {start:,} | {(steps >= start).sum()} | {100 * slope:.1f} | "
                f"{100 * (intercept + slope * np.log10(_PROJECT_TO.value)):.1f} % |")
        if _TARGET.value is not None:
            reached = 10 ** ((_TARGET.value - intercept) / slope) if slope > 0 else float("inf")
            line += f" {reached:,.0f} |"
        lines.append(line)
    reporting.publish_table(lines, _OUT.value)
    if _PLOT.value:
        plots.plot_learning_curve(steps, values, fits, _PROJECT_TO.value, _PLOT.value,
                                  ylabel=_METRIC.value.replace("_", " "), target=_TARGET.value)


if __name__ == "__main__":
    app.run(main)
