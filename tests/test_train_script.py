"""scripts/train.py and tf_maml.experiment: outputs, configs, resumption."""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (the scripts' config system)

import tf_maml
import tf_maml.runs.experiment
from tf_maml.runs import checkpoints
from tf_maml.runs import reporting

from helpers import (
    OMNIGLOT_DIR, ROOT, SINUSOID_CONFIG, TINY, needs_omniglot, run_script, tiny_config,
)

def test_train_script_writes_model_logs_report_and_figures(tiny_run, tmp_path):
    workdir, stdout = tiny_run
    meta = keras.models.load_model(workdir / "meta.keras")
    assert isinstance(meta, tf_maml.MAML)
    assert int(meta.optimizer.iterations) == 20  # the command-line overrides took effect
    report = json.loads((workdir / "report.json").read_text())
    assert json.loads(stdout) == report  # the script prints the report
    assert len(report["loss_by_step"]) == 4 and report["tasks"] == 30
    for figure in ("loss_by_step.png", "sinusoid_fits.png"):
        assert (workdir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(workdir / "logs") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    assert not (workdir / "backup").exists()  # removed once training completed

    # Rerun on a finished workdir: no more training, same model, same report.
    shutil.copytree(workdir, tmp_path / "again")
    again = tf_maml.experiment.run(tiny_config(meta_steps=20), str(tmp_path / "again"))
    assert again == report
    meta_again = keras.models.load_model(tmp_path / "again" / "meta.keras")
    assert int(meta_again.optimizer.iterations) == 20
    for a, b in zip(meta_again.get_weights(), meta.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_config_flag_fails_with_a_message(tmp_path):
    result = run_script("train.py", f"--workdir={tmp_path}", returncode=1)
    assert "--config" in result.stderr


class InterruptAtSecondEpoch(keras.callbacks.TensorBoard):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        super().on_epoch_begin(epoch, logs)


def test_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch):
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


@needs_omniglot
def test_omniglot_run_then_evaluate_script_from_a_weights_file(tmp_path):
    from configs import omniglot  # noqa: PLC0415

    tiny = {
        "data_dir": OMNIGLOT_DIR, "meta_steps": 4, "steps_per_epoch": 2, "meta_batch_size": 2,
        "validation_batches": 1, "eval_tasks": 4, "eval_max_steps": 2, "model.filters": 8,
        "inner_steps": 1, "verbose": 0,
    }
    config = omniglot.get_config("20w1s")
    config.update_from_flattened_dict(tiny)
    report = tf_maml.experiment.run(config, str(tmp_path))
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["meta_steps"] == 4 and report["tasks"] == 4
    assert len(report["accuracy_by_step"]) == len(report["accuracy_confidence_95"]) == 3
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "accuracy", "val_accuracy", "wall_time"} <= set(header)

    # The meta-learner as saved evaluates to the report; so does a weights file
    # (as a run's backup holds), through the script's command line.
    expected = {k: v for k, v in report.items() if k != "training_seconds"}
    meta = checkpoints.load_model(str(tmp_path / "meta.keras"))
    evaluated = tf_maml.experiment.evaluate(meta, config)
    assert {k: evaluated[k] for k in expected} == expected
    meta.save_weights(tmp_path / "w.weights.h5")
    evaluate = run_script(
        "evaluate.py", f"--config={os.path.join(ROOT, 'configs', 'omniglot.py')}:20w1s",
        *(f"--config.{key}={value}" for key, value in tiny.items()),
        f"--weights={tmp_path / 'w.weights.h5'},{tmp_path / 'w.weights.h5'}",
        f"--out={tmp_path / 'eval.json'}",
    )
    # Two "seeds" (the same weights twice): each run's report, then their mean and spread.
    assert evaluate.stdout.count("accuracy after 2 steps on 4 tasks:") == 2
    assert "accuracy after 2 steps over 2 runs:" in evaluate.stdout
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["runs"] == [expected, expected]
    assert evaluated["accuracy_by_step_over_runs"] == expected["accuracy_by_step"]
    assert evaluated["served_accuracy_std_over_runs"] == [0.0] * 3


def test_unknown_omniglot_setting_is_rejected():
    from configs import omniglot  # noqa: PLC0415

    with pytest.raises(ValueError, match="Unknown Omniglot setting '7w1s'"):
        omniglot.get_config("7w1s")


@needs_omniglot
def test_pipeline_benchmark_script_runs(tmp_path):
    run_script(
        "pipeline_benchmark.py",
        f"--data_dir={OMNIGLOT_DIR}", "--batches=3", "--meta_steps=0", f"--out={tmp_path / 't.md'}",
    )
    rows = (tmp_path / "t.md").read_text().splitlines()
    assert rows[0].startswith("| workload | episode batches/s")
    workloads = [row for row in rows[2:] if row.startswith("| ")]
    assert [row.split(" | ")[0] for row in workloads] == [
        "| 5-way 1-shot, 1 query/class, meta-batch 32", "| 5-way 1-shot, 15 queries/class, meta-batch 32",
        "| 20-way 1-shot, 1 query/class, meta-batch 16",
        "| variable 5-20 ways, up to 100 shots, 5 queries/class, meta-batch 4",
    ]
    for row in workloads:  # measured pipeline rates; no meta-step timed (meta_steps=0)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3:] == ["-", "-"]


@pytest.mark.parametrize("algorithm",
                         ["meta_sgd", "anil", "boil", "imaml", "maml_plus_plus", "reptile"])
def test_experiment_builds_each_algorithm(algorithm):
    config = tiny_config(algorithm=algorithm)
    config.imaml.proximal_weight, config.imaml.cg_steps = 0.5, 3
    meta_learner = tf_maml.experiment.build_meta_learner(config)
    expected = {"meta_sgd": tf_maml.MetaSGD, "anil": tf_maml.ANIL, "boil": tf_maml.BOIL,
                "imaml": tf_maml.IMAML, "maml_plus_plus": tf_maml.MAMLPlusPlus,
                "reptile": tf_maml.Reptile}[algorithm]
    assert type(meta_learner) is expected and meta_learner.compiled
    if algorithm == "imaml":  # its own settings, from config.imaml
        assert (meta_learner.proximal_weight, meta_learner.cg_steps) == (0.5, 3)


def test_experiment_builds_proto_maml_from_the_variable_omniglot_config():
    """ProtoMAML's embedding is conv4 without its logits; its head has the config's 20."""
    from configs import omniglot  # noqa: PLC0415

    config = omniglot.get_config("variable")
    config.algorithm, config.proto_maml.head_only = "proto_maml", True
    config.model.filters = 4
    proto = tf_maml.experiment.build_meta_learner(config)
    assert type(proto) is tf_maml.ProtoMAML and proto.compiled
    assert proto.num_classes == 20 and proto.head_only
    assert proto.model.output.shape == (None, 20) and proto.inner_steps == config.inner_steps


def test_experiment_names_an_unknown_algorithm():
    with pytest.raises(ValueError, match="Unknown algorithm 'protonet'"):
        tf_maml.experiment.build_meta_learner(tiny_config(algorithm="protonet"))


def test_family_benchmark_script(tmp_path):
    run_script(
        "family_benchmark.py",
        SINUSOID_CONFIG, "--algorithms=fomaml,reptile",
        f"--workdir={tmp_path}", f"--out={tmp_path / 'table.md'}", *TINY,
        "--config.eval_max_steps=10",
    )
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[2].startswith("| fomaml | 20 |") and rows[3].startswith("| reptile | 20 |")


def test_seeds_benchmark_script(tmp_path):
    run_script(
        "seeds_benchmark.py", SINUSOID_CONFIG, "--seeds=0,1",
        f"--workdir={tmp_path}", f"--out={tmp_path / 'table.md'}", *TINY,
    )
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[2].startswith("| 0 | 20 |") and rows[3].startswith("| 1 | 20 |")
    losses = [json.loads((tmp_path / f"seed_{s}" / "report.json").read_text())["loss_by_step"][3]
              for s in (0, 1)]
    assert losses[0] != losses[1]  # two runs, two seeds
    assert rows[4].startswith(f"| mean over 2 seeds | | | {np.mean(losses):.3f} (standard "
                              f"deviation {np.std(losses, ddof=1):.3f})")
    # Both runs on one set of test tasks (--config.seed's), their seeds told apart.
    metas = ",".join(str(tmp_path / f"seed_{s}" / "meta.keras") for s in (0, 1))
    result = run_script("evaluate.py", SINUSOID_CONFIG, *TINY, f"--meta={metas}",
                        f"--out={tmp_path / 'eval.json'}")
    assert "loss after 3 steps over 2 runs:" in result.stdout
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["runs"][0] == {k: v for k, v in json.loads(
        (tmp_path / "seed_0" / "report.json").read_text()).items() if k != "training_seconds"}
    own = json.loads((tmp_path / "seed_1" / "report.json").read_text())["loss_by_step"]
    assert evaluated["runs"][1]["loss_by_step"] != own  # seed 1's model on seed 0's tasks


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
        "--orders=1", "--meta_batch_sizes=1,2", "--windows=1", "--window_sec=0.2",
        f"--out={tmp_path / 'results.jsonl'}", f"--plot={tmp_path / 'scaling.png'}",
    )
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["order"], r["meta_batch_size"]) for r in records] == [(1, 1), (1, 2)]
    assert all(0 < r["steps_per_s_min"] <= r["steps_per_s_median"] <= r["steps_per_s_max"]
               and r["peak_rss_mb"] > 0 and r["workload"] == "sinusoid" for r in records)
    assert result.stdout.count("| sinusoid |") == 2
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
    clock = tf_maml.experiment.WallTime(str(history))
    clock.on_train_begin()
    logs = {}
    clock.on_epoch_end(2, logs)
    assert 250.5 <= logs["wall_time"] < 260.0
    fresh = tf_maml.experiment.WallTime(str(tmp_path / "none.csv"))
    fresh.on_train_begin()
    fresh.on_epoch_end(0, logs)
    assert 0.0 <= logs["wall_time"] < 10.0


def test_a_resumed_history_keeps_the_epochs_its_backup_trained(tmp_path):
    """A kill after an epoch's line and before its backup, or while a line was written:
    the resumed run writes those epochs again, once. As CSVLogger writes: CRLF lines."""
    history = tmp_path / "history.csv"
    header, rows = "loss,epoch,wall_time\r\n", ["1.0,0,100.0\r\n", "0.9,1,250.5\r\n"]

    def kept(content, epochs):
        history.write_bytes(content.encode())
        tf_maml.experiment.history_until(str(history), epochs)
        return history.read_bytes().decode() if history.exists() else None

    assert kept(header + "".join(rows) + "0.8,2,400.0\r\n0.7,3,4", 2) == header + "".join(rows)
    assert kept(header + "".join(rows) + "0.8,2,40\r", 2) == header + "".join(rows)
    assert kept(header + "".join(rows), 2) == header + "".join(rows)  # nothing to drop
    assert kept(header + rows[0], 2) == header + rows[0]
    assert kept(header, 2) == header and kept("", 2) == "" and kept("loss,ep", 2) == ""
    assert kept(header + "".join(rows), 0) is None  # no backup: training starts afresh
    for damaged in (header + "\r\n" + rows[0], "loss,wall_time\r\n1.0,100.0\r\n",
                    header + "1.0,zero,100.0\r\n"):
        with pytest.raises(checkpoints.DamagedFileError, match="history.csv is damaged"):
            kept(damaged, 2)
        assert history.read_bytes().decode() == damaged  # left as it was


def test_config_dtype_policy_trains_in_mixed_precision(tmp_path):
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
        timeout=120, returncode=1,
    )
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
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_learning_curve_names_a_missing_column_and_too_short_a_fit(tmp_path):
    history = tmp_path / "history.csv"
    _write_history(history, [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="has no column 'val_loss'; columns: .'accuracy'"):
        reporting.read_curve(history, "val_loss", 10)
    steps, values = reporting.read_curve(history, "val_accuracy", 10)
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_allclose(values, [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="fit_from=30 leaves 1 epoch.s. .* a line needs two"):
        reporting.log_linear_fit(steps, values, 30)


def test_compare_curves_tables_each_run_s_best_and_last_epoch(tmp_path):
    peaked, steady = tmp_path / "peaked.csv", tmp_path / "steady.csv"
    _write_history(peaked, [0.2, 0.8, 0.5])
    _write_history(steady, [0.2, 0.6, 0.7])
    plot = tmp_path / "curves.png"
    result = run_script("compare_curves.py", "--metric=val_accuracy", "--steps_per_epoch=25",
                        f"--runs=peaked={peaked}", f"--runs=steady={steady}",
                        "--plot_from=50", f"--plot={plot}")
    assert "| peaked | 0.8 (50) | 0.5 |" in result.stdout
    assert "| steady | 0.7 (75) | 0.7 |" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    short = tmp_path / "short.csv"
    _write_history(short, [0.9, 0.1])
    refused = run_script("compare_curves.py", "--metric=val_accuracy", "--steps_per_epoch=25",
                         f"--runs=a={peaked}", f"--runs=a={steady}", returncode=1)
    assert "Two runs are labelled 'a'" in refused.stderr
    lowest = run_script("compare_curves.py", "--metric=val_accuracy", "--steps_per_epoch=25",
                        f"--runs=short={short}", "--lower_is_better")
    assert "| short | 0.1 (50) | 0.1 |" in lowest.stdout


def test_serving_benchmark_script_times_adapt_and_the_evaluation(tmp_path):
    result = run_script("serving_benchmark.py", "--tasks=3", "--ways=2", "--steps=1",
                        "--meta_batch_size=2", f"--out={tmp_path / 'r.jsonl'}")
    (record,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert record["evaluated"] == ["accuracy", "loss", "served_accuracy", "served_loss"]
    assert record["adapt_per_task_s"] > 0 and record["evaluation_s"] > 0
    assert "| 3 (2-way 1-shot, 1 steps) |" in result.stdout
    refused = run_script("serving_benchmark.py", "--tasks=1", returncode=1)
    assert "flag --tasks=1: 1 is not integer >= 2" in refused.stderr  # before any work


@needs_omniglot
def test_normalization_benchmark_script_reports_both_figures(tmp_path):
    tiny = {
        "data_dir": OMNIGLOT_DIR, "meta_steps": 2, "steps_per_epoch": 2, "meta_batch_size": 2,
        "validation_batches": 1, "eval_tasks": 4, "eval_max_steps": 1, "model.filters": 4,
        "verbose": 0,
    }
    run_script(
        "normalization_benchmark.py", f"--config={os.path.join(ROOT, 'configs', 'omniglot.py')}",
        *(f"--config.{key}={value}" for key, value in tiny.items()),
        "--variants=task", f"--workdir={tmp_path}", f"--out={tmp_path / 'table.md'}",
    )
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[2].startswith("| task | False |") and len(rows) == 5
    report = json.loads((tmp_path / "task" / "report.json").read_text())
    assert report["transductive"] is False and report["config"]["model.normalization"] == "task"
    assert len(report["served_accuracy_by_step"]) == 2
    assert report["accuracy_by_step"] == report["served_accuracy_by_step"]


def test_cavia_runs_from_the_sinusoid_config_with_a_context(tmp_path):
    """Issue 28: --config.algorithm=cavia --config.model.context=2 meta-trains and reports."""
    config = tiny_config(algorithm="cavia", inner_lr=1.0, meta_steps=10, steps_per_epoch=5,
                         eval_tasks=10)
    config.model.context = 2
    report = tf_maml.experiment.run(config, str(tmp_path))
    assert report["algorithm"] == "CAVIA" and report["meta_steps"] == 10
    # The context adapts (10 meta-steps teach the network little about reading it).
    assert np.isfinite(report["loss_by_step"]).all()
    assert report["loss_by_step"][1] != report["loss_by_step"][0]
    meta = keras.models.load_model(tmp_path / "meta.keras")
    np.testing.assert_array_equal(meta.model.layers[0].context.numpy(), [0.0, 0.0])
    with pytest.raises(ValueError, match="CAVIA adapts only tf_maml.layers.TaskContext"):
        tf_maml.experiment.build_meta_learner(tiny_config(algorithm="cavia"))


def test_pipeline_benchmark_times_a_configs_own_episodes(tmp_path):
    run_script("pipeline_benchmark.py", SINUSOID_CONFIG, "--batches=3", "--meta_steps=0",
               f"--out={tmp_path / 't.md'}")
    rows = (tmp_path / "t.md").read_text().splitlines()
    assert rows[2].startswith("| sinusoid regression, 10-shot, meta-batch 25 | ")
    assert float(rows[2].split(" | ")[1]) > 0  # batches per second
