"""Result tables (printed, written where asked, the machine named) and learning-curve trends."""

import csv
import os
import platform

import numpy as np


def machine():
    """A short description of this machine for result tables."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def publish_table(lines, out=None):
    """Prints a Markdown table (a list of lines) and writes it to `out` if given."""
    table = "\n".join(lines)
    print(table)
    if out:
        with open(out, "w") as f:
            f.write(table + "\n")


def cell(report, name, step):
    """`mean ± 95% interval` of `report[name + "_by_step"]` after `step` steps."""
    return f"{report[name + '_by_step'][step]:.3f} ± {report[name + '_confidence_95'][step]:.3f}"


def read_curve(path, metric, steps_per_epoch):
    """Meta-steps at the end of each epoch (epochs count from 0) and the metric there."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or metric not in rows[0]:
        columns = sorted(rows[0]) if rows else []
        raise ValueError(f"{path} has no column {metric!r}; columns: {columns}")
    steps = np.array([(int(row["epoch"]) + 1) * steps_per_epoch for row in rows], float)
    return steps, np.array([float(row[metric]) for row in rows])


def log_linear_fit(steps, values, fit_from):
    """(intercept, slope per tenfold) of values against log10(steps), from `fit_from` on."""
    chosen = steps >= fit_from
    if chosen.sum() < 2:
        raise ValueError(
            f"fit_from={fit_from} leaves {chosen.sum()} epoch(s) of the history "
            f"(last at {steps[-1]:.0f} meta-steps); a line needs two.")
    slope, intercept = np.polyfit(np.log10(steps[chosen]), values[chosen], 1)
    return intercept, slope


def over_runs(reports, name):
    """Mean and sample standard deviation over runs (training seeds) of each step's mean.

    `reports` are evaluation reports of runs that differ only in their
    training seed; their per-run 95% intervals measure the spread of test
    tasks, this the spread of runs.

    Returns:
        `{"<name>_by_step_over_runs": [...], "<name>_std_over_runs": [...]}`.
    """
    if len(reports) < 2:
        raise ValueError(f"A spread over runs needs at least 2 runs; received {len(reports)}.")
    values = np.array([report[f"{name}_by_step"] for report in reports], np.float64)
    return {
        f"{name}_by_step_over_runs": [round(float(v), 4) for v in values.mean(axis=0)],
        f"{name}_std_over_runs": [round(float(v), 4) for v in values.std(axis=0, ddof=1)],
    }
