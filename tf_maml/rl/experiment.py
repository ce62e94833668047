"""A meta-reinforcement-learning run from a config: train, train the baseline, evaluate.

`scripts/train.py --config=configs/navigation.py` runs `run(config,
workdir)`: it meta-trains `MetaPolicyGradient` in `workdir`, trains a
policy on all tasks jointly (`inner_steps=0`, the paper's "pretrained"
baseline) for as many iterations in `workdir/pretrained`, and evaluates
both, and a random initialization, on held-out tasks after 0..3 inner steps,
as the MAML paper reports (section 5.3).
"""

import csv
import os

import keras
import numpy as np
from absl import logging

from tf_maml.runs import checkpoints, experiment, plots, step_curves
from tf_maml.runs import tasks as tasks_registry
from tf_maml.runs.workdir_lock import run_lock
from tf_maml.rl import envs, policies
from tf_maml.rl import plots as rl_plots
from tf_maml.rl.meta_policy_gradient import MetaPolicyGradient
from tf_maml.rl.tasks import task_batches

# Environments a config can name (config.env.name), with their settings as arguments.
ENVIRONMENTS = {"navigation2d": envs.Navigation2D, "cartpole": envs.CartPole,
                "half_cheetah_velocity": envs.HalfCheetahVelocity,
                "half_cheetah_direction": envs.HalfCheetahDirection,
                "matrix_game_opponents": envs.MatrixGameOpponents,
                "metaworld_ml1": envs.MetaWorldML1, "highway_traffic": envs.HighwayTraffic}
TASKS = ("navigation", "cartpole", "half_cheetah_velocity", "half_cheetah_direction", "opponents",
         "metaworld", "highway")


class ReinforcementTask:
    """A meta-RL task of `tf_maml.runs.tasks`: its config names an environment
    (`config.env`), and `run` below meta-trains and evaluates it."""

    def __init__(self, name):
        self.name = name

    def run(self, config, workdir, allow_config_change=False):
        return run(config, workdir, allow_config_change)


for _name in TASKS:
    tasks_registry.register_task(ReinforcementTask(_name))
_STREAM_OFFSETS = {"train": 0, "validation": 1, "test": 2}


def build_env(config):
    settings = dict(config.env)
    name = settings.pop("name")
    if name not in ENVIRONMENTS:
        raise ValueError(f"Unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}.")
    return ENVIRONMENTS[name](**settings)


def tasks(config, env, stream, num_batches=None, start_batch=0, meta_batch_size=None):
    """Task batches of `stream` ("train", "validation", "test"): disjoint seeds."""
    return task_batches(env, meta_batch_size or config.meta_batch_size,
                        seed=config.seed * 10 + _STREAM_OFFSETS[stream],
                        num_batches=num_batches, start_batch=start_batch)


def build_meta_learner(config, inner_steps=None):
    """The config's `MetaPolicyGradient`, compiled; `inner_steps=0` gives the joint baseline."""
    env = build_env(config)
    policy = policies.mlp(env, hidden=tuple(config.policy.hidden),
                          init_log_std=config.policy.init_log_std)
    meta = MetaPolicyGradient(
        policy, env, inner_lr=config.inner_lr,
        inner_steps=config.inner_steps if inner_steps is None else inner_steps,
        trajectories=config.trajectories, first_order=config.first_order,
        eval_inner_steps=config.eval_max_steps, estimator=config.estimator,
        outer_steps=config.outer_steps, clip_ratio=config.clip_ratio, discount=config.discount,
        gae_lambda=config.gae_lambda, outer_update=config.get("outer_update", "ppo"),
        max_kl=config.get("max_kl", 0.01))
    meta.compile(optimizer=keras.optimizers.Adam(config.outer_lr),
                 jit_compile=config.jit_compile if env.pure else False)
    return meta


def _train(config, workdir, inner_steps, allow_config_change):
    env = build_env(config)
    return experiment.trained_meta_learner(
        config, workdir, lambda config: build_meta_learner(config, inner_steps),
        lambda start_batch: tasks(config, env, "train", start_batch=start_batch),
        lambda: tasks(config, env, "validation", num_batches=config.validation_batches),
        allow_config_change)


def run(config, workdir, allow_config_change=False):
    """Meta-trains, trains the joint baseline, evaluates; returns the report.

    Writes as `tf_maml.experiment.run` does (meta.keras, config.json, logs,
    history.csv, report.json, figures), and the baseline's files in
    `workdir/pretrained` (with `config.pretrained`). Interrupted, it resumes
    where it stopped, in either part.
    """
    if config.task not in TASKS:
        raise ValueError(f"{config.task!r} is not a meta-RL task; known: {', '.join(TASKS)}.")
    with run_lock(workdir):
        logging.info("Meta-training %s (%d meta-iterations) in %s.", config.task,
                     config.meta_steps, workdir)
        meta, training_seconds = _train(config, workdir, None, allow_config_change)
        pretrained = None
        if config.pretrained:
            logging.info("Training the pretrained baseline: the same policy on all tasks "
                         "jointly (no inner step), %d iterations, in %s/pretrained.",
                         config.meta_steps, workdir)
            pretrained, _ = _train(config, os.path.join(workdir, "pretrained"), 0,
                                   allow_config_change)
        try:
            report = evaluate(meta, config, workdir, pretrained)
        finally:  # a bridge's worker processes end with the run
            for learner in (meta, pretrained):
                if learner is not None:
                    learner.env.close()
        report.update(training_seconds=training_seconds)
        checkpoints.write_json(os.path.join(workdir, "report.json"), report)
    return checkpoints.finite_or_none(report)


def _by_step(report, prefix, values, measure="return"):
    mean, confidence = step_curves.mean_and_confidence(values)
    report[f"{prefix}{measure}_by_step"] = [round(float(m), 3) for m in mean]
    report[f"{prefix}{measure}_confidence_95"] = [round(float(c), 3) for c in confidence]
    return mean, confidence


def evaluate(meta, config, workdir=None, pretrained=None):
    """Average returns on `config.eval_tasks` held-out tasks after 0..`eval_max_steps` steps.

    The report holds `return_by_step` and `return_confidence_95` (mean over
    tasks and its 95% half-width) for the meta-learned policy,
    `pretrained_return_by_step` (the policy trained on all tasks jointly,
    adapted with the same inner step) and `random_return_by_step` (a
    random initialization, adapted alike). Every policy meets the same
    tasks and seeds, so `maml_minus_pretrained_return_by_step` (and its
    interval) is the paired difference, task by task. For an environment
    that knows its best response to each task (`best_response_returns`),
    `best_response_return` and its interval too; for one that reports
    success (Meta-World), `success_by_step` (the fraction of episodes that
    succeeded, mean over tasks) and its interval for each policy alike.
    With a `workdir`, writes the figures.
    """
    env = meta.env
    logging.info("Evaluating on %d held-out tasks after 0..%d inner steps: MAML, a random "
                 "initialization%s.", config.eval_tasks, config.eval_max_steps,
                 " and the pretrained baseline" if pretrained is not None else "")
    held_out = next(iter(tasks(config, env, "test", num_batches=1,
                               meta_batch_size=config.eval_tasks)))
    steps = config.eval_max_steps
    sampled = meta.sample_by_step(held_out, steps)
    report = {"meta_iterations": meta.meta_iterations,
              "config": experiment.flat_config(config), "tasks": config.eval_tasks,
              "trajectories": meta.trajectories}
    curves, successes = {}, {}
    maml_returns = sampled["returns"].numpy()
    mean, confidence = _by_step(report, "", maml_returns)
    if "success" in sampled:
        successes["MAML"] = _by_step(report, "", sampled["success"].numpy(), "success")
    keras.utils.set_random_seed(config.seed)
    baselines = {"random": build_meta_learner(config)}
    if pretrained is not None:
        baselines["pretrained"] = pretrained
    for name, baseline in baselines.items():
        measured = baseline.sample_by_step(held_out, steps, keep=False)
        if name == "random":
            baseline.env.close()  # built here
        curves[name] = _by_step(report, f"{name}_", measured["returns"].numpy())
        if name == "pretrained":  # paired over the same tasks: the spread between them cancels
            _by_step(report, "maml_minus_pretrained_",
                     maml_returns - measured["returns"].numpy())
        if "success" in measured:
            successes[name] = _by_step(report, f"{name}_", measured["success"].numpy(),
                                       "success")
    if hasattr(env, "best_response_returns"):
        best = env.best_response_returns(held_out["tasks"].numpy())
        curves["best_response"] = _by_step(report, "best_response_", best[:, None])
        report["best_response_return"] = report.pop("best_response_return_by_step")[0]
        report["best_response_return_confidence_95"] = report.pop(
            "best_response_return_confidence_95")[0]
    logging.info("returns by step: %s", {k: v for k, v in report.items() if "return" in k})
    if workdir is not None:
        labels = {"pretrained": "pretrained", "random": "random initialization",
                  "best_response": "best response to each task (exact)"}
        title = plots.run_title(_SETTINGS.get(config.task, config.task),
                                report["meta_iterations"], "MAML", "meta-iterations")
        plots.plot_by_step(mean, confidence, os.path.join(workdir, "return_by_step.png"),
                           "average return", label="MAML",
                           others={labels[k]: v for k, v in curves.items()},
                           title=f"{title}, {config.eval_tasks} held-out tasks")
        if successes:
            plots.plot_by_step(*successes.pop("MAML"),
                               os.path.join(workdir, "success_by_step.png"),
                               "episodes that succeeded (fraction)", label="MAML",
                               others={labels[k]: v for k, v in successes.items()},
                               title=f"{title}, {config.eval_tasks} held-out tasks")
        if isinstance(env, envs.Navigation2D):
            rl_plots.plot_navigation_paths(meta, sampled, held_out["tasks"],
                                           os.path.join(workdir, "navigation_paths.png"),
                                           steps=tuple(range(min(steps, 3) + 1)), title=title)
        # Its colours read a round's payoff as won, tied or lost: rock-paper-scissors.
        if isinstance(env, envs.MatrixGameOpponents) and np.array_equal(
                env.payoff, envs.matrix_game.ROCK_PAPER_SCISSORS):
            rl_plots.plot_matches(sampled, os.path.join(workdir, "matches.png"),
                                  title=f"{title}, held-out opponent 1")
        trace = rl_plots.episode_trace(env)
        if trace is not None:
            rl_plots.plot_episodes(sampled, held_out["tasks"], trace,
                                   os.path.join(workdir, "episodes.png"), title=title)
        _plot_learning_curves(workdir, config, title, meta, pretrained)
    return report


# Tasks as figure titles name them.
_SETTINGS = {"navigation": "2D navigation", "cartpole": "CartPole, varied dynamics",
             "half_cheetah_velocity": "half-cheetah, goal velocities",
             "half_cheetah_direction": "half-cheetah, forward or backward",
             "opponents": "rock-paper-scissors opponents", "metaworld": "Meta-World ML1",
             "highway": "highway traffic"}


def _steps(count):
    return f"{count} step" + ("" if count == 1 else "s")


def _plot_learning_curves(workdir, config, title, meta, pretrained=None):
    series = {}
    # Training returns are after the meta-training steps, validation returns after
    # test_step's (eval_inner_steps): the learners' own, whatever a later config says.
    pretrained = pretrained or meta  # (built alike)
    for label, part, column in (
            (f"MAML after {_steps(meta.inner_steps)}, training tasks", "", "return"),
            (f"MAML after {_steps(meta.eval_inner_steps)}, validation tasks", "",
             "val_return"),
            ("MAML before adaptation, validation tasks", "", "val_pre_adaptation_return"),
            (f"pretrained after {_steps(pretrained.eval_inner_steps)}, validation tasks",
             "pretrained", "val_return")):
        path = os.path.join(workdir, part, "history.csv")
        if os.path.exists(path):
            with open(path) as f:
                rows = list(csv.DictReader(f))
            if rows and column in rows[0]:
                series[label] = [float(row[column]) for row in rows]
    if series:
        length = min(len(v) for v in series.values())
        iterations = config.steps_per_epoch * (np.arange(length) + 1)
        rl_plots.plot_learning_curves(iterations, {k: v[:length] for k, v in series.items()},
                                      os.path.join(workdir, "learning_curves.png"),
                                      title=title)
