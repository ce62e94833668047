"""Figures of meta-reinforcement learning: 2D navigation paths, matches against an
opponent and learning curves."""

import matplotlib.colors
import matplotlib.ticker
import numpy as np
import tensorflow as tf

from tf_maml.runs.plots import plt, save_figure


def adapted_by_step(meta, sampled, task, step):
    """`(params, state)` of the policy after `step` inner steps on task `task`, as the
    evaluation adapted it: each step from the trajectories `sampled` after the one before
    (`MetaPolicyGradient.sample_by_step`'s result)."""
    params, state = meta.inner_loop.current_values()
    rule_state = None
    for k in range(step):
        trajectories = {name: value[task] for name, value in sampled["trajectories"][k].items()}
        params, state, rule_state = meta._adapt(params, state, trajectories, True, rule_state, k)
    return params, state


def mean_action_path(meta, params, state, goal):
    """Positions of a point that follows the policy's mean action from the start, until it
    reaches the goal or the horizon (the MAML paper draws these)."""
    env, goals = meta.env, tf.constant([goal], tf.float32)
    env_state, observation = env.reset(goals, tf.zeros([1, 2], tf.int32))
    points = [observation.numpy()[0]]
    for _ in range(env.horizon):
        outputs = meta.inner_loop.forward(params, state, observation, training=False)[0]
        mean, _ = meta.distribution.split(outputs)
        env_state, observation, _, done = env.step(goals, env_state, mean)
        points.append(observation.numpy()[0])
        if bool(done[0]):
            break
    return np.array(points)


def plot_navigation_paths(meta, sampled, tasks, path, num_tasks=2, steps=(0, 1, 3), title=""):
    """Mean-action paths of the policy before and after inner steps, goal marked (the MAML
    paper's figure 5): one path per number of steps, from the policy the evaluation
    adapted to that task. Returns `figure_text` of the figure.

    Args:
        meta: the `MetaPolicyGradient` that sampled `sampled`.
        sampled: `meta.sample_by_step(...)`'s result (trajectories kept).
        tasks: `[T, 2]` goals of the sampled tasks.
        path: PNG file to write.
        num_tasks: tasks (panels) to show.
        steps: which numbers of inner steps to draw (those sampled).
        title: the figure's title (the run).
    """
    figure, axes = plt.subplots(1, num_tasks, figsize=(4.2 * num_tasks, 4.4), squeeze=False)
    labels = {0: "pre-update"}
    for task, axis in enumerate(axes[0]):
        goal = np.asarray(tasks[task], np.float32)
        for step in steps:
            if step >= len(sampled["trajectories"]):
                continue
            points = mean_action_path(meta, *adapted_by_step(meta, sampled, task, step), goal)
            axis.plot(points[:, 0], points[:, 1], ":" if step == 0 else "-", marker=".",
                      markersize=3, label=labels.get(step, f"{step} grad step(s)"))
        axis.plot(goal[0], goal[1], "*", color="black", markersize=12, label="goal")
        axis.plot(0, 0, "o", color="grey", label="start")
        axis.set_xlim(-0.6, 0.6)
        axis.set_ylim(-0.6, 0.6)
        axis.set_aspect("equal")
        axis.set_xlabel("x")
        axis.set_ylabel("y")
        axis.set_title(f"held-out task {task + 1}: the mean action's path", fontsize=9)
    axes[0][0].legend(fontsize=8, loc="lower left")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def plot_learning_curves(iterations, series, path, ylabel="average return", title=""):
    """Metrics against meta-iterations (integer ticks): `series` maps a label, which says
    training or validation tasks, to its values. Returns `figure_text` of the figure."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for label, values in series.items():
        axis.plot(iterations, values, marker="o", markersize=3, label=label)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("meta-iterations")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    return save_figure(figure, path)


def plot_matches(sampled, path, task=0, matches=3, steps=(0, 1), move_names="RPS", title=""):
    """Matches of rock-paper-scissors (`MatrixGameOpponents`, a game whose rounds are won
    +1, tied 0 or lost -1) against one held-out opponent, before and after inner steps: a
    row of rounds per match, each round the agent's move coloured by its payoff (green won,
    grey tied, red lost), the match's score at the end. Returns `figure_text` of the figure.

    Args:
        sampled: `MetaPolicyGradient.sample_by_step(...)`'s result (trajectories kept).
        path: PNG file to write.
        task: which sampled opponent.
        matches: matches (trajectories) to show per number of steps.
        steps: which numbers of inner steps to show (those sampled).
        move_names: a letter per action.
        title: the figure's title (the run).
    """
    steps = [s for s in steps if s < len(sampled["trajectories"])]
    figure, axes = plt.subplots(len(steps), 1, figsize=(9, 0.5 + 0.45 * matches * len(steps)),
                                squeeze=False)
    colours = matplotlib.colors.ListedColormap(["#d9534f", "#cccccc", "#5cb85c"])
    for axis, step in zip(axes[:, 0], steps):
        trajectories = sampled["trajectories"][step]
        actions = np.asarray(trajectories["actions"][task][:matches])
        rewards = np.asarray(trajectories["rewards"][task][:matches])
        axis.imshow(np.sign(rewards), cmap=colours, vmin=-1, vmax=1, aspect="auto")
        for (match, round_), action in np.ndenumerate(actions):
            axis.text(round_, match, move_names[action], ha="center", va="center", fontsize=8)
        average = float(np.mean(np.sum(trajectories["rewards"][task], -1)))
        axis.set_yticks(range(len(actions)), [f"score {s:+.0f}" for s in rewards.sum(-1)],
                        fontsize=8)
        axis.set_xticks(range(actions.shape[1]), range(1, actions.shape[1] + 1), fontsize=7)
        label = "before adaptation" if step == 0 else f"after {step} inner step(s)"
        axis.set_title(f"{label}: the agent's moves by round (mean score of all "
                       f"{len(trajectories['rewards'][task])} matches {average:+.1f})", fontsize=9)
    axes[-1, 0].set_xlabel("round (green: won, grey: tied, red: lost)")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
