"""Figures of meta-reinforcement learning: 2D navigation paths before and after adaptation."""

import numpy as np

from tf_maml.runs.plots import plt, save_figure


def plot_navigation_paths(sampled, tasks, path, num_tasks=2, steps=(0, 1, 3)):
    """Paths of the policy before and after inner steps, goal marked (the MAML paper's figure 5).

    Args:
        sampled: `MetaPolicyGradient.sample_by_step(...)`'s result.
        tasks: `[T, 2]` goals of the sampled tasks.
        path: PNG file to write.
        num_tasks: tasks (panels) to show.
        steps: which numbers of inner steps to draw (those sampled).
    """
    figure, axes = plt.subplots(1, num_tasks, figsize=(4.2 * num_tasks, 4), squeeze=False)
    labels = {0: "pre-update"}
    for task, axis in enumerate(axes[0]):
        for step in steps:
            if step >= len(sampled["trajectories"]):
                continue
            trajectories = sampled["trajectories"][step]
            observations = trajectories["observations"][task, 0].numpy()
            # Positions before each step taken, and after the last one where there is one.
            taken = int(trajectories["mask"][task, 0].numpy().sum())
            points = observations[: taken + 1]
            axis.plot(points[:, 0], points[:, 1], ":" if step == 0 else "-", marker=".",
                      markersize=3, label=labels.get(step, f"{step} grad step(s)"))
        goal = np.asarray(tasks[task])
        axis.plot(goal[0], goal[1], "*", color="black", markersize=12, label="goal")
        axis.plot(0, 0, "o", color="grey", label="start")
        axis.set_xlim(-0.6, 0.6)
        axis.set_ylim(-0.6, 0.6)
        axis.set_aspect("equal")
        axis.set_title(f"task {task}")
    axes[0][0].legend(fontsize=8, loc="lower left")
    save_figure(figure, path)


def plot_learning_curves(iterations, series, path, ylabel="average return"):
    """Metrics against meta-iterations: `series` maps a label to its values."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, values in series.items():
        axis.plot(iterations, values, marker="o", markersize=3, label=label)
    axis.set_xlabel("meta-iterations")
    axis.set_ylabel(ylabel)
    axis.legend()
    save_figure(figure, path)
