"""scripts/train.py and tf_maml.experiment: outputs, configs, resumption."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (the scripts' config system)

import tf_maml
import tf_maml.experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.meta_steps=20",
    "--config.steps_per_epoch=10",
    "--config.steps_per_execution=5",
    "--config.meta_batch_size=5",
    "--config.validation_batches=2",
    "--config.eval_tasks=30",
    "--config.eval_max_steps=3",
    "--config.model.hidden=(8,)",
    "--config.verbose=0",
]


def tiny_config(**overrides):
    from configs import sinusoid  # noqa: PLC0415

    config = sinusoid.get_config()
    config.update(
        {
            "meta_steps": 30, "steps_per_epoch": 10, "steps_per_execution": 5,
            "meta_batch_size": 5, "validation_batches": 2, "eval_tasks": 30,
            "eval_max_steps": 3, "verbose": 0, **overrides,
        }
    )
    config.model.hidden = (8,)
    return config


def run_script(name, *args, check=True, timeout=None):
    """Runs scripts/`name` with `args` from the repository root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", name), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def train(workdir, *extra, check=True):
    return run_script("train.py", f"--config={os.path.join(ROOT, 'configs', 'sinusoid.py')}",
                      f"--workdir={workdir}", *TINY, *extra, check=check)


def test_train_script_writes_model_logs_report_and_figures(tmp_path):
    train(tmp_path, "--config.inner_steps=2")
    meta = keras.models.load_model(tmp_path / "meta.keras")
    assert isinstance(meta, tf_maml.MAML)
    assert meta.inner_steps == 2  # the command-line override took effect
    assert int(meta.optimizer.iterations) == 20
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["loss_by_step"]) == 4 and report["tasks"] == 30
    for figure in ("loss_by_step.png", "sinusoid_fits.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(tmp_path / "logs") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    assert not (tmp_path / "backup").exists()  # removed once training completed

    # Rerun on a finished workdir: no more training, same model.
    train(tmp_path, "--config.inner_steps=2")
    again = keras.models.load_model(tmp_path / "meta.keras")
    assert int(again.optimizer.iterations) == 20


def test_missing_config_flag_fails_with_a_message(tmp_path):
    result = run_script("train.py", f"--workdir={tmp_path}", check=False)
    assert result.returncode != 0 and "--config" in result.stderr


class InterruptAtSecondEpoch(keras.callbacks.TensorBoard):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        super().on_epoch_begin(epoch, logs)


def test_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    tf_maml.experiment.run(tiny_config(), str(tmp_path / "uninterrupted"))
    expected = keras.models.load_model(tmp_path / "uninterrupted" / "meta.keras").get_weights()

    with monkeypatch.context() as patch:
        patch.setattr(tf_maml.experiment.keras.callbacks, "TensorBoard", InterruptAtSecondEpoch)
        with pytest.raises(KeyboardInterrupt):
            tf_maml.experiment.run(tiny_config(), str(tmp_path / "resumed"))
    assert (tmp_path / "resumed" / "backup").exists()
    report = tf_maml.experiment.run(tiny_config(), str(tmp_path / "resumed"))
    assert report["meta_steps"] == 30
    resumed = keras.models.load_model(tmp_path / "resumed" / "meta.keras").get_weights()
    for a, b in zip(resumed, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The learning curve's wall time goes on across the interruption.
    with open(tmp_path / "resumed" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    wall = [float(r["wall_time"]) for r in rows]
    assert wall[0] < wall[1] < wall[2]


def test_meta_steps_must_fill_whole_epochs(tmp_path):
    with pytest.raises(ValueError, match="multiple of steps_per_epoch"):
        tf_maml.experiment.run(tiny_config(meta_steps=25), str(tmp_path))


OMNIGLOT_DIR = os.path.join(ROOT, "..", "shared", "data", "omniglot")


@pytest.mark.skipif(not os.path.isdir(OMNIGLOT_DIR), reason="Omniglot zips not found")
def test_omniglot_train_then_evaluate_script(tmp_path):
    config = f"--config={os.path.join(ROOT, 'configs', 'omniglot.py')}:20w1s"
    tiny = [
        f"--config.data_dir={OMNIGLOT_DIR}", "--config.meta_steps=4", "--config.steps_per_epoch=2",
        "--config.meta_batch_size=2", "--config.validation_batches=1", "--config.eval_tasks=4",
        "--config.eval_max_steps=2", "--config.model.filters=8", "--config.inner_steps=1",
        "--config.verbose=0",
    ]
    run_script("train.py", config, f"--workdir={tmp_path}", *tiny)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["accuracy_by_step"]) == 3
    assert all(0.0 <= a <= 1.0 for a in report["accuracy_by_step"])
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "accuracy", "val_accuracy", "wall_time"} <= set(header)

    evaluate = run_script(
        "evaluate.py", config, *tiny,
        f"--meta={tmp_path / 'meta.keras'}", f"--out={tmp_path / 'eval.json'}",
    )
    assert "accuracy after 2 steps on 4 tasks:" in evaluate.stdout
    expected = {k: v for k, v in report.items() if k != "training_seconds"}
    assert json.loads((tmp_path / "eval.json").read_text()) == expected

    # A weights file (as a run's backup holds) evaluates the same.
    keras.models.load_model(tmp_path / "meta.keras").save_weights(tmp_path / "w.weights.h5")
    run_script(
        "evaluate.py", config, *tiny,
        f"--weights={tmp_path / 'w.weights.h5'}", f"--out={tmp_path / 'eval2.json'}",
    )
    assert json.loads((tmp_path / "eval2.json").read_text()) == expected


def test_unknown_omniglot_setting_is_rejected():
    sys.path.insert(0, ROOT)
    from configs import omniglot  # noqa: PLC0415

    with pytest.raises(ValueError, match="Unknown Omniglot setting '7w1s'"):
        omniglot.get_config("7w1s")


@pytest.mark.skipif(not os.path.isdir(OMNIGLOT_DIR), reason="Omniglot zips not found")
def test_pipeline_benchmark_script_runs(tmp_path):
    run_script(
        "pipeline_benchmark.py",
        f"--data_dir={OMNIGLOT_DIR}", "--batches=3", "--meta_steps=0", f"--out={tmp_path / 't.md'}",
    )
    rows = (tmp_path / "t.md").read_text().splitlines()
    assert rows[0].startswith("| workload | episode batches/s") and len(rows) >= 5


@pytest.mark.parametrize("algorithm", ["meta_sgd", "anil", "maml_plus_plus", "reptile"])
def test_experiment_builds_each_algorithm(algorithm, tmp_path):
    meta_learner = tf_maml.experiment.build_meta_learner(tiny_config(algorithm=algorithm))
    expected = {"meta_sgd": tf_maml.MetaSGD, "anil": tf_maml.ANIL,
                "maml_plus_plus": tf_maml.MAMLPlusPlus, "reptile": tf_maml.Reptile}[algorithm]
    assert type(meta_learner) is expected and meta_learner.compiled
    with pytest.raises(ValueError, match="Unknown algorithm 'protonet'"):
        tf_maml.experiment.build_meta_learner(tiny_config(algorithm="protonet"))


def test_family_benchmark_script(tmp_path):
    run_script(
        "family_benchmark.py",
        f"--config={os.path.join(ROOT, 'configs', 'sinusoid.py')}", "--algorithms=fomaml,reptile",
        f"--workdir={tmp_path}", f"--out={tmp_path / 'table.md'}", *TINY,
        "--config.eval_max_steps=10",
    )
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[2].startswith("| fomaml | 20 |") and rows[3].startswith("| reptile | 20 |")


def test_sinusoid_benchmark_script(tmp_path):
    run_script(
        "sinusoid_benchmark.py", "--shots=5",
        f"--workdir={tmp_path}", f"--out={tmp_path / 'table.md'}", *TINY,
        "--config.eval_max_steps=10",
    )
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[0].startswith("| K | meta-steps |") and rows[2].startswith("| 5 | 20 |")
    assert "600" not in rows[-1] and "30 test tasks" in rows[-1]


def test_speed_benchmark_script_reports_each_configuration(tmp_path):
    result = run_script(
        "benchmark.py", "--workloads=sinusoid",
        "--orders=1,plain", "--meta_batch_sizes=1,2", "--windows=1", "--window_sec=0.2",
        f"--out={tmp_path / 'results.jsonl'}", f"--plot={tmp_path / 'scaling.png'}",
    )
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["order"], r["meta_batch_size"]) for r in records] == [
        (1, 1), (1, 2), ("plain", 1), ("plain", 2)
    ]
    assert all(r["steps_per_s_median"] > 0 and r["peak_rss_mb"] > 0 for r in records)
    assert result.stdout.count("| sinusoid |") == 4
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_multi_worker_example_trains_identically_on_two_local_workers(tmp_path):
    run_script(
        "multi_worker.py", "--launch=2", f"--workdir={tmp_path}", "--steps=3", timeout=600,
    )
    workers = [json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2)]
    assert all(w["workers"] == 2 for w in workers)
    assert workers[0]["weights_checksum"] == workers[1]["weights_checksum"]
    assert workers[0]["loss"] == workers[1]["loss"]


def test_wall_time_of_a_resumed_run_goes_on_from_its_history(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,wall_time\n0,1.0,100.0\n1,0.9,250.5\n")
    clock = tf_maml.experiment._WallTime(str(history))
    clock.on_train_begin()
    logs = {}
    clock.on_epoch_end(2, logs)
    assert 250.5 <= logs["wall_time"] < 260.0
    fresh = tf_maml.experiment._WallTime(str(tmp_path / "none.csv"))
    fresh.on_train_begin()
    fresh.on_epoch_end(0, logs)
    assert 0.0 <= logs["wall_time"] < 10.0


def test_config_dtype_policy_trains_in_mixed_precision(tmp_path):
    sys.path.insert(0, ROOT)
    try:
        report = tf_maml.experiment.run(tiny_config(dtype_policy="mixed_bfloat16"), str(tmp_path))
        meta = keras.models.load_model(tmp_path / "meta.keras")
        assert meta.model.layers[0].compute_dtype == "bfloat16"
        assert meta.model.layers[0].kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert report["meta_steps"] == 30 and np.isfinite(report["loss_by_step"]).all()


def test_speed_benchmark_rejects_a_plot_without_one_varied_axis_before_timing(tmp_path):
    result = run_script(
        "benchmark.py", "--workloads=sinusoid", "--orders=2", f"--plot={tmp_path / 'scaling.png'}",
        timeout=120, check=False,
    )
    assert result.returncode != 0
    assert "varies exactly one of meta-batch size and inner steps" in result.stderr
    assert "| sinusoid |" not in result.stdout  # nothing was timed


def test_import_memory_script_reports_the_peak_after_importing():
    result = run_script("import_memory.py", "json", "csv")
    assert result.stdout.startswith("peak RSS after importing json, csv: ")
    assert int(result.stdout.split(": ")[1].split()[0]) > 0


def _write_history(path, accuracies):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "accuracy", "val_accuracy", "wall_time"])
        for epoch, value in enumerate(accuracies):
            writer.writerow([epoch, value - 0.01, value, 10.0 * (epoch + 1)])


def test_learning_curve_script_fits_the_trend_in_log_meta_steps(tmp_path):
    # 0.5 + 0.05 log10(meta-steps) from 100 meta-steps on, a slower start before it.
    steps = 10 * np.arange(1, 101)
    accuracies = np.where(steps >= 100, 0.5 + 0.05 * np.log10(steps), 0.2)
    history = tmp_path / "history.csv"
    _write_history(history, accuracies)
    plot = tmp_path / "curve.png"
    result = run_script(
        "learning_curve.py", f"--history={history}", "--steps_per_epoch=10",
        "--fit_from=100,0", "--project_to=10000", "--target=0.65", f"--plot={plot}",
    )
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    by_start = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows[1:]}
    # From 100 on: 91 epochs, 5 points per tenfold, 70 % at 10,000, 65 % at 1,000 steps.
    assert by_start["100"] == ["91", "5.0", "70.0 %", "1,000"]
    # From 0 on, the slow start tilts the line: a steeper trend.
    assert float(by_start["0"][1]) > 5.0
    assert plot.stat().st_size > 0


def test_learning_curve_script_names_a_missing_column_and_too_short_a_fit(tmp_path):
    history = tmp_path / "history.csv"
    _write_history(history, [0.5, 0.6, 0.7])
    result = run_script("learning_curve.py", f"--history={history}", "--steps_per_epoch=10",
                        "--metric=val_loss", check=False)
    assert result.returncode != 0 and "no column 'val_loss'" in result.stderr
    result = run_script("learning_curve.py", f"--history={history}", "--steps_per_epoch=10",
                        "--fit_from=30", check=False)
    assert result.returncode != 0 and "fit_from=30 leaves 1 epoch(s)" in result.stderr
