"""Figures: the MAML paper's (sinusoid fits, results by inner step) and learning curves."""

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# Said on every figure with error bars: what the bars are.
INTERVAL = "mean ± 95 % interval over tasks"


def run_title(setting, meta_steps, algorithm, unit="meta-steps"):
    """A figure's title: the task's setting, the member and how long it was trained."""
    return f"{setting}: {algorithm} after {meta_steps:,} {unit}"


def figure_text(figure):
    """What a figure says: its title, and each panel's title, axis labels and legend
    (what tests read back, and readers need)."""
    panels = []
    for axis in figure.axes:
        legend = axis.get_legend()
        panels.append({
            "title": axis.get_title(), "xlabel": axis.get_xlabel(),
            "ylabel": axis.get_ylabel(),
            "legend_title": legend.get_title().get_text() if legend else "",
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            "xticks": [float(t) for t in axis.get_xticks()],
        })
    return {"title": figure.get_suptitle(), "panels": panels}


def save_figure(figure, path):
    """Writes `figure` as a PNG at `path` and frees it; returns `figure_text(figure)`."""
    text = figure_text(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return text


def plot_sinusoid_fits(meta_learner, episodes, path, num_tasks=3, steps=(1, 10), title=""):
    """Pre- and post-adaptation fits of a few sinusoids (MAML paper, figure 2).

    Args:
        meta_learner: a trained `tf_maml.MAML` on 1-D regression.
        episodes: a dataset of sinusoid episodes, built with
            `tf_maml.data.sinusoid_episodes(..., queries=Q)` for Q dense points.
        path: PNG file to write.
        num_tasks: tasks (panels) to show.
        steps: numbers of inner steps to show after adaptation.
        title: the figure's title (the run: setting and meta-steps).
    """
    (support_x, support_y), (query_x, query_y) = next(iter(episodes))
    figure, axes = plt.subplots(1, num_tasks, figsize=(4.5 * num_tasks, 3.8), squeeze=False)
    for task, axis in enumerate(axes[0]):
        order = np.argsort(query_x[task, :, 0])
        grid, truth = query_x[task].numpy()[order], query_y[task].numpy()[order]
        axis.plot(grid, truth, color="black", label="ground truth")
        pre_update = meta_learner.model(grid, training=False)
        axis.plot(grid, pre_update, ":", label="pre-update")
        for k in steps:
            adapted = meta_learner.adapt(support_x[task], support_y[task], steps=k)
            axis.plot(grid, adapted(grid, training=False), "--", label=f"{k} grad step(s)")
        axis.plot(support_x[task], support_y[task], "^", color="purple", label="support points")
        axis.set_title(f"test task {task + 1}")
        axis.set_xlabel("x")
        axis.set_ylabel("y = amplitude · sin(x - phase)")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_by_step(mean, confidence, path, ylabel, label="MAML", others=None, title=""):
    """A result against the number of inner gradient steps, with 95% intervals.

    `others`: more curves, `{label: (mean, confidence)}` (baselines, or the served
    figures beside the reported ones; a curve of one value, a method that takes no
    steps, is a dashed line with its interval shaded); `title`: the run (task, setting, meta-steps,
    test tasks). Returns `figure_text` of the figure.
    """
    series = {label: (mean, confidence), **(others or {})}
    steps = np.arange(len(mean))
    figure, axis = plt.subplots(figsize=(6, 4.6))
    for index, (name, (values, interval)) in enumerate(series.items()):
        color = f"C{index}"
        if len(values) == 1 and len(steps) > 1:
            axis.axhline(values[0], linestyle="--", color=color, label=name)
            axis.axhspan(values[0] - interval[0], values[0] + interval[0], color=color,
                         alpha=0.15)
        else:
            axis.errorbar(steps, values, yerr=interval, marker="o", capsize=3, color=color,
                          label=name)
    axis.set_xlabel("number of gradient steps")
    axis.set_ylabel(ylabel)
    axis.set_xticks(steps)
    # Below the axes: inside, it covered the top or bottom error bars.
    axis.legend(title=INTERVAL, fontsize=8, title_fontsize=8, loc="upper center",
                bbox_to_anchor=(0.5, -0.15), ncol=min(len(series), 3))
    axis.set_title(title, fontsize=9)
    return save_figure(figure, path)


def plot_learning_curve(steps, values, fits, project_to, path, ylabel, target=None):
    """A metric against meta-steps (log scale), with lines fitted in log10(meta-steps).

    `fits` maps the first meta-step of each fit to its (intercept, slope); each line is
    drawn from there to `project_to`.
    """
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(steps, values, marker="o", markersize=3, label="measured")
    for start, (intercept, slope) in fits.items():
        line_steps = np.geomspace(max(start, steps[0]), project_to, 50)
        axis.plot(line_steps, intercept + slope * np.log10(line_steps), linestyle="--",
                  label=f"trend from {start:,} meta-steps")
    if target is not None:
        axis.axhline(target, color="grey", linewidth=1, label=f"target {target:g}")
    axis.set_xscale("log")
    axis.set_xlabel("meta-steps")
    axis.set_ylabel(ylabel)
    axis.legend()
    save_figure(figure, path)
