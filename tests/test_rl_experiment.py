"""A meta-reinforcement-learning run from configs/navigation.py, small: report, figures, reruns."""

import csv
import importlib.util
import json
import os

import keras
import numpy as np
import pytest

import tf_maml.rl.experiment
from tf_maml.runs import checkpoints
from tf_maml.runs.experiment import ConfigMismatchError

from helpers import run_script
from configs import navigation  # helpers put the repository on the path


def tiny_config():
    config = navigation.get_config()
    config.meta_steps, config.steps_per_epoch = 4, 2
    config.meta_batch_size, config.trajectories, config.outer_steps = 2, 3, 2
    config.env.horizon, config.policy.hidden = 8, (8,)
    config.eval_tasks, config.eval_max_steps, config.verbose = 3, 1, 0
    return config


# The same as command-line flags.
TINY_FLAGS = ["--config.meta_steps=4", "--config.steps_per_epoch=2", "--config.meta_batch_size=2",
              "--config.trajectories=3", "--config.outer_steps=2", "--config.env.horizon=8",
              "--config.policy.hidden=(8,)", "--config.eval_tasks=3",
              "--config.eval_max_steps=1", "--config.verbose=0"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("navigation"))
    return workdir, tf_maml.rl.experiment.run(tiny_config(), workdir)


def test_navigation_run_reports_returns_by_step_against_baselines(uninterrupted, caplog):
    workdir, report = uninterrupted
    for prefix in ("", "pretrained_", "random_"):
        assert len(report[f"{prefix}return_by_step"]) == 2  # after 0 and 1 inner steps
        assert len(report[f"{prefix}return_confidence_95"]) == 2
        assert all(-8.0 <= r < 0 for r in report[f"{prefix}return_by_step"])
    assert report["meta_iterations"] == 4 and report["tasks"] == 3
    assert len(report["maml_minus_pretrained_return_by_step"]) == 2
    for name in ("return_by_step.png", "navigation_paths.png", "learning_curves.png",
                 "meta.keras", "pretrained/meta.keras", "report.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert not os.path.exists(os.path.join(workdir, "backup"))
    # Run again: evaluates only, the same tasks and seeds give the same report.
    with caplog.at_level("INFO", logger="absl"):
        again = tf_maml.rl.experiment.run(tiny_config(), workdir)
    # Each part announced (issue 27: the baseline's epochs looked like a second run).
    for announced in ("Meta-training navigation", "Training the pretrained baseline",
                      "Evaluating on 3 held-out tasks"):
        assert announced in caplog.text, announced
    assert again["return_by_step"] == report["return_by_step"]
    assert again["pretrained_return_by_step"] == report["pretrained_return_by_step"]
    assert again["training_seconds"] == report["training_seconds"]
    changed = tiny_config()
    changed.inner_lr = 0.5
    with pytest.raises(ConfigMismatchError, match="inner_lr"):
        tf_maml.rl.experiment.run(changed, workdir)


def test_the_difference_to_the_pretrained_policy_is_paired_task_by_task(monkeypatch):
    config = tiny_config()
    meta, pretrained = (tf_maml.rl.experiment.build_meta_learner(config) for _ in range(2))

    def returns(offsets):  # goals far apart make returns far apart; the offsets by step
        def sample_by_step(data, steps, keep=True):
            spread = 100.0 * data["tasks"].numpy()[:, :1]
            return {"returns": keras.ops.convert_to_tensor(spread + np.asarray(offsets))}
        return sample_by_step

    monkeypatch.setattr(meta, "sample_by_step", returns([0.0, 5.0]))
    monkeypatch.setattr(pretrained, "sample_by_step", returns([-2.0, 2.0]))
    report = tf_maml.rl.experiment.evaluate(meta, config, pretrained=pretrained)
    # Each policy's interval holds the spread between goals; the paired one none of it.
    assert min(report["return_confidence_95"]) > 10
    assert report["maml_minus_pretrained_return_by_step"] == pytest.approx([2.0, 3.0])
    assert report["maml_minus_pretrained_return_confidence_95"] == pytest.approx([0.0, 0.0],
                                                                                 abs=1e-3)


def _weights(path):
    return [w.numpy() for w in keras.models.load_model(path).weights]


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted,
                                                            monkeypatch):
    original = keras.callbacks.CSVLogger.on_epoch_end

    def interrupted(self, epoch, logs=None):  # the second epoch: its line, not its backup
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tf_maml.rl.experiment.run(tiny_config(), str(tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "backup").exists() and not (tmp_path / "meta.keras").exists()
    history = tmp_path / "history.csv"
    assert [row["epoch"] for row in csv.DictReader(history.open())] == ["0", "1"]
    assert checkpoints.latest_backup_epoch(str(tmp_path / "backup")) == 1  # line first
    # Resumed by scripts/train.py, which runs navigation configs through tf_maml.rl.
    run_script("train.py", "--config=configs/navigation.py", f"--workdir={tmp_path}",
               *TINY_FLAGS)
    report = json.loads((tmp_path / "report.json").read_text())
    reference, reference_report = uninterrupted
    for part in ("meta.keras", "pretrained/meta.keras"):
        for got, want in zip(_weights(tmp_path / part), _weights(os.path.join(reference, part))):
            np.testing.assert_array_equal(got, want)
    assert report["return_by_step"] == reference_report["return_by_step"]
    # The second epoch trained again: its line once, after the first's; the training time
    # counts both processes' epochs (not the one cut short), as the history's wall time.
    rows = list(csv.DictReader(history.open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    wall_times = [float(row["wall_time"]) for row in rows]
    assert 0 < wall_times[0] < wall_times[1]
    assert wall_times[1] - 0.1 <= report["training_seconds"] < wall_times[1] + 5  # rounded


def test_unknown_environment_is_refused():
    config = tiny_config()
    config.env.name = "lunar_lander"
    with pytest.raises(ValueError, match="Unknown environment 'lunar_lander'"):
        tf_maml.rl.experiment.build_env(config)


def test_speed_benchmark_reports_meta_iterations_and_environment_steps(tmp_path):
    result = run_script("benchmark.py", "--workloads=navigation_outer1", "--orders=1",
                        "--meta_batch_sizes=1", "--windows=1", "--window_sec=0.2",
                        f"--out={tmp_path / 'results.jsonl'}")
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["workload"] == "navigation_outer1" and record["meta_batch_size"] == 1
    # 1 task x 20 trajectories x 100 steps, before and after the inner step.
    assert record["env_steps_per_s_median"] == round(record["steps_per_s_median"] * 4000)
    assert "environment steps/s" in result.stdout


def test_sampling_benchmark_compares_the_graph_with_a_python_loop(tmp_path):
    bridged = ["half_cheetah_velocity"] if importlib.util.find_spec("mujoco") else []
    result = run_script("rl_sampling_benchmark.py", "--tasks=2", "--trajectories=2",
                        "--horizon=5", "--repeats=1", f"--out={tmp_path / 'sampling.jsonl'}",
                        "--workers=0,1", "--environments=" + ",".join(
                            ["navigation2d", "matrix_game_opponents"] + bridged))
    records = [json.loads(line) for line in
               (tmp_path / "sampling.jsonl").read_text().splitlines()]
    expected = [("navigation2d", "graph"), ("navigation2d", "python loop"),
                ("matrix_game_opponents", "graph")]
    if bridged:
        expected += [("half_cheetah_velocity", "graph, through the bridge"),
                     ("half_cheetah_velocity", "graph, through the bridge, workers=1"),
                     ("half_cheetah_velocity", "gymnasium alone, random actions")]
    assert [(r["environment"], r["sampling"]) for r in records] == expected
    # 2 tasks x 2 trajectories x 5 steps: no episode of these ends early.
    assert all(r["env_steps_per_s"] > 0 and r["steps"] == 20 for r in records)
    assert "| navigation2d | 5 | python loop |" in result.stdout


def test_navigation_figures_say_what_they_show(uninterrupted, tmp_path, monkeypatch):
    """Issue 27: mean-action paths as the paper draws them, from the policy the evaluation
    adapted; curves labelled training or validation on integer ticks; titles."""
    from tf_maml.rl import plots as rl_plots  # noqa: PLC0415
    from tf_maml.runs import plots  # noqa: PLC0415

    workdir, _ = uninterrupted
    texts = {}
    save = plots.save_figure
    monkeypatch.setattr(rl_plots, "save_figure", lambda figure, path: texts.setdefault(
        os.path.basename(path), save(figure, path)))
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: texts.setdefault(
        os.path.basename(path), save(figure, path)))
    for name in ("meta.keras", "history.csv", "pretrained"):
        os.symlink(os.path.join(workdir, name), tmp_path / name)
    meta = keras.models.load_model(os.path.join(workdir, "meta.keras"))
    config = tiny_config()
    config.inner_steps = 2  # the curves name the learner's steps, not a later config's
    meta.eval_inner_steps = 3  # (as trained with eval_max_steps=3; evaluate takes config's)
    tf_maml.rl.experiment.evaluate(meta, config, str(tmp_path))
    title = "2D navigation: MAML after 4 meta-iterations"
    assert texts["return_by_step.png"]["panels"][0]["title"] == f"{title}, 3 held-out tasks"
    assert texts["navigation_paths.png"]["title"] == title
    paths = texts["navigation_paths.png"]["panels"][0]
    assert paths["legend"] == ["pre-update", "1 grad step(s)", "goal", "start"]
    curves = texts["learning_curves.png"]["panels"][0]
    # Training returns after the meta-training steps, validation ones after eval_max_steps.
    assert curves["legend"] == ["MAML after 1 step, training tasks",
                                "MAML after 3 steps, validation tasks",
                                "MAML before adaptation, validation tasks",
                                "pretrained after 3 steps, validation tasks"]
    assert all(tick == int(tick) for tick in curves["xticks"])


def test_the_drawn_policy_is_the_one_the_evaluation_adapted():
    """A path after one step follows the policy adapt() gives on the same trajectories."""
    from tf_maml.rl import plots as rl_plots  # noqa: PLC0415

    meta = tf_maml.rl.experiment.build_meta_learner(tiny_config())
    held_out = next(iter(tf_maml.rl.task_batches(meta.env, 2, seed=3, num_batches=1)))
    sampled = meta.sample_by_step(held_out, 1)
    params, state = rl_plots.adapted_by_step(meta, sampled, 1, 1)
    first = {k: v[1] for k, v in sampled["trajectories"][0].items()}
    adapted = meta.adapt(first["observations"], first["actions"], first["rewards"],
                         first["mask"])
    for got, want in zip(params, adapted.trainable_variables):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    goal = held_out["tasks"][1].numpy()
    points = rl_plots.mean_action_path(meta, params, state, goal)
    assert np.allclose(points[0], 0.0) and len(points) <= meta.env.horizon + 1
    assert np.abs(np.diff(points, axis=0)).max() <= 0.1 + 1e-6  # actions clipped as the env


def test_episode_figure_traces_each_episode_until_it_ends(tmp_path):
    from tf_maml.rl import plots as rl_plots  # noqa: PLC0415

    # One task, two episodes of 4 steps before and after a step; the second episode of
    # each ends after 2 steps.
    mask = np.array([[[1.0, 1, 1, 1], [1, 1, 0, 0]]])
    before = {"observations": np.arange(8.0).reshape(1, 2, 4, 1), "mask": mask}
    after = {"observations": np.full((1, 2, 4, 1), 5.0), "mask": mask}
    trace = rl_plots.Trace(lambda t, task: t["observations"][..., 0] - task[0], "height",
                           lambda task: 2 * task[0], "target")
    values = rl_plots.episode_values({k: v[0] for k, v in before.items()}, [1.0], trace)
    np.testing.assert_array_equal(values[0], [-1, 0, 1, 2])
    np.testing.assert_array_equal(values[1], [3, 4, np.nan, np.nan])
    # The mean of the episodes still running; NaN once none is.
    np.testing.assert_array_equal(rl_plots.running_mean(values), [1, 2, 1, 2])
    np.testing.assert_array_equal(rl_plots.running_mean(values[1:]), [3, 4, np.nan, np.nan])
    text = rl_plots.plot_episodes({"trajectories": [before, after]}, np.array([[1.0]]), trace,
                                  tmp_path / "e.png", episodes=1, title="run")
    panel = text["panels"][0]
    assert panel["legend"] == [
        "before adaptation: mean of its 2 episodes (those running)",
        "after 1 inner step(s): mean of its 2 episodes (those running)", "target"]
    assert panel["title"].startswith("held-out task 1: 1 episodes")
    assert (panel["ylabel"], text["title"]) == ("height", "run")
    assert os.path.getsize(tmp_path / "e.png") > 0
