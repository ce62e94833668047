"""Figures of meta-reinforcement learning: 2D navigation paths, matches against an
opponent, episodes traced over time and learning curves."""

import collections

import matplotlib.colors
import matplotlib.ticker
import numpy as np
import tensorflow as tf

from tf_maml.rl import envs
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


def plot_learning_curves(iterations, series, path, ylabel="average return", title="",
                         xlabel="meta-iterations"):
    """Metrics against meta-iterations (integer ticks): `series` maps a label, which says
    training or validation tasks, to its values. Returns `figure_text` of the figure."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for label, values in series.items():
        axis.plot(iterations, values, marker="o", markersize=3, label=label)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel(xlabel)
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


# What an episode is drawn as: `values(trajectories, task) -> [K, H]` from one task's
# trajectories (`[K, H, ...]` arrays) and its task vector; `reference(task)` a level to
# reach, drawn dashed and named `reference_label`.
Trace = collections.namedtuple("Trace", "values ylabel reference reference_label")


def episode_trace(env):
    """The `Trace` that shows what `env`'s policy does in an episode, or None."""
    if isinstance(env, envs.HalfCheetahVelocity):
        return Trace(lambda t, task: t["observations"][..., _CHEETAH_VELOCITY], "forward "
                     "velocity at each step's start", lambda task: task[0], "goal velocity")
    if isinstance(env, envs.HalfCheetahDirection):  # task[0]: +1 forward, -1 backward
        return Trace(lambda t, task: task[0] * t["observations"][..., _CHEETAH_VELOCITY],
                     "velocity along the goal direction at each step's start", None, None)
    # Meta-World: the goal is the task vector's last 3 numbers (its `_target_pos`; push's
    # goal height is the object's, so push reads x-y only).
    if isinstance(env, envs.MetaWorldML1) and env.env_name == "reach-v3":
        return Trace(_gripper_to_goal, "gripper's distance to the goal (m)",
                     lambda task: 0.05, "success radius")
    if isinstance(env, envs.MetaWorldML1) and env.env_name == "push-v3":
        return Trace(_object_to_goal, "object's distance to the goal, x-y (m)",
                     lambda task: 0.05, "success radius")
    if isinstance(env, envs.HighwayTraffic):
        return Trace(lambda t, task: t["rewards"], "reward a decision", None, None)
    return None


# HalfCheetah-v5's observation 8: the torso's forward velocity (qvel[0]) at the start of
# each step (the reward's is the step's mean).
_CHEETAH_VELOCITY = 8

# Meta-World's tool centre point (between the fingers, where reach's success is measured)
# sits this far below the hand its observation 0:3 gives (to 5 mm as the arm moves).
_TOOL_BELOW_HAND = np.array([0.0, 0.0, -0.045])


def _gripper_to_goal(trajectories, task):
    tool = trajectories["observations"][..., 0:3] + _TOOL_BELOW_HAND
    return np.linalg.norm(tool - task[-3:], axis=-1)


def _object_to_goal(trajectories, task):
    """Meta-World's observation 4:7 is the object."""
    return np.linalg.norm(trajectories["observations"][..., 4:6] - task[-3:-1], axis=-1)


def episode_values(trajectories, task, trace):
    """`trace`'s values of one task's trajectories (`[K, H, ...]` arrays) and task
    vector: `[K, H]`, NaN after each episode's end."""
    trajectories = {name: np.asarray(value) for name, value in trajectories.items()}
    values = np.asarray(trace.values(trajectories, np.asarray(task)), np.float64)
    return np.where(trajectories["mask"] > 0, values, np.nan)


def running_mean(values):
    """The mean over episodes at each time step of `[K, H]` values (NaN after an episode's
    end) of the episodes still running then; NaN once none is."""
    counts = np.sum(~np.isnan(values), 0)
    return np.where(counts > 0, np.nansum(values, 0) / np.maximum(counts, 1), np.nan)


def plot_episodes(sampled, tasks, trace, path, task=0, steps=(0, 1), episodes=3, title=""):
    """Episodes of one held-out task traced over time (`trace`, see `episode_trace`),
    before and after inner steps: `episodes` of them thin, the mean over all of the
    task's episodes thick. Returns `figure_text` of the figure.

    Args:
        sampled: `MetaPolicyGradient.sample_by_step(...)`'s result (trajectories kept).
        tasks: the sampled tasks' vectors `[T, task_size]`.
        trace: a `Trace`.
        path: PNG file to write.
        task: which sampled task.
        steps: which numbers of inner steps to show (those sampled).
        episodes: episodes drawn one by one per number of steps.
        title: the figure's title (the run).
    """
    steps = [s for s in steps if s < len(sampled["trajectories"])]
    task_vector = np.asarray(tasks[task])
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    shown = episodes
    for colour, step in enumerate(steps):
        trajectories = {name: value[task] for name, value in sampled["trajectories"][step].items()}
        values = episode_values(trajectories, task_vector, trace)
        shown = min(episodes, len(values))
        for k in range(shown):
            axis.plot(values[k], color=f"C{colour}", alpha=0.35, linewidth=0.8)
        label = "before adaptation" if step == 0 else f"after {step} inner step(s)"
        axis.plot(running_mean(values), color=f"C{colour}", linewidth=2,
                  label=f"{label}: mean of its {len(values)} episodes (those running)")
    if trace.reference is not None:
        axis.axhline(float(trace.reference(task_vector)), color="black", linestyle="--",
                     label=trace.reference_label)
    axis.set_xlabel("time step")
    axis.set_ylabel(trace.ylabel)
    axis.legend(fontsize=8)
    axis.set_title(f"held-out task {task + 1}: {shown} episodes (thin) and the mean "
                   "(thick)", fontsize=9)
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
