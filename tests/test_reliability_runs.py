"""The reliability catalogue, run part: kills while files are written, divergence
of a whole run, config provenance and reports (docs/reliability.md).

Kills are real: the run is a subprocess that SIGKILLs itself in the middle of
writing the file at stake, after cutting that file short as a kill would.
"""

import json
import os
import signal

import keras
import ml_collections
import numpy as np
import pytest

import tf_maml
import tf_maml.runs.experiment
from tf_maml.runs import checkpoints

from helpers import (
    ROOT, SINUSOID_CONFIG, TINY, run_python, run_script, start_python, tiny_config, train,
)

# Runs scripts/train.py with `method` of keras.Model patched: its `count`-th
# call writes its file, cuts it to half its size and SIGKILLs the process.
_KILLER = """
import os, runpy, signal, sys
import keras
method, count, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.argv = sys.argv[3:]
original, calls = getattr(keras.Model, method), []

def dying(self, filepath, *args, **kwargs):
    original(self, filepath, *args, **kwargs)
    calls.append(filepath)
    if len(calls) == count:
        path = str(filepath)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

setattr(keras.Model, method, dying)
runpy.run_path(script, run_name="__main__")
"""


def train_killed_in(method, count, workdir, *extra):
    """Runs train.py until the `count`-th call of keras.Model.`method` is cut short by a kill."""
    run_python(["-c", _KILLER, method, count, os.path.join(ROOT, "scripts", "train.py"),
                SINUSOID_CONFIG, f"--workdir={workdir}", *TINY, *extra], returncode=-signal.SIGKILL)


def final_weights(workdir):
    return [w.numpy() for w in keras.models.load_model(workdir / "meta.keras").weights]


@pytest.fixture
def uninterrupted(tiny_run):
    """A run of the TINY config that nothing interrupted: the reference."""
    return tiny_run[0]


# ---------------------------------------------------------------------------
# 1. Nothing lost: kills while a backup, then meta.keras, are written.

def test_kills_while_a_backup_and_meta_keras_are_written_lose_nothing(tmp_path, uninterrupted):
    # TINY: 20 meta-steps in 2 epochs. The second backup is cut short by a kill...
    train_killed_in("save_weights", 2, tmp_path)
    assert checkpoints.latest_backup_epoch(tmp_path / "backup") == 1  # the first is intact
    history = tmp_path / "history.csv"
    assert len(history.read_text().splitlines()) == 3  # the second epoch's line came first
    history.write_text(history.read_text() + "1,0.5,0.")  # and a history row cut mid-write
    # ... the resumed run is killed while it writes meta.keras ...
    train_killed_in("save", 1, tmp_path)
    assert not (tmp_path / "meta.keras").exists()  # the half-written file never took its name
    assert checkpoints.latest_backup_epoch(tmp_path / "backup") == 2  # and the backup was kept
    # ... and the next run only writes meta.keras: the weights of an uninterrupted run.
    train(tmp_path)
    assert not (tmp_path / "backup").exists()
    for got, want in zip(final_weights(tmp_path), final_weights(uninterrupted)):
        np.testing.assert_array_equal(got, want)
    rows = history.read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]  # the cut row was dropped


def test_damaged_backups_are_named_and_the_older_one_is_used(tmp_path, caplog):
    episodes = tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=2, num_batches=2)

    def fit(epochs):
        maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(4,)), inner_lr=0.01)
        maml.compile(optimizer="adam", loss="mse")
        backup = checkpoints.AtomicBackupAndRestore(str(tmp_path), delete_checkpoint=False)
        return maml.fit(episodes, epochs=epochs, callbacks=[backup], verbose=0)

    fit(3)  # backups of epochs 3 (latest) and 2 (previous)
    latest, older = tmp_path / "latest.weights.h5", tmp_path / "previous.weights.h5"
    latest.write_bytes(latest.read_bytes()[:1000])  # as a disk fault would leave it
    assert checkpoints.latest_backup_epoch(str(tmp_path)) == 2
    assert fit(4).epoch == [2, 3]  # resumed from the older backup
    assert "Skipping damaged backup" in caplog.text and "latest.weights.h5" in caplog.text
    for path in (latest, older):
        path.write_bytes(b"")
    with pytest.raises(checkpoints.DamagedFileError, match="Every backup in .* is damaged"):
        fit(5)
    # A run's history outlives its damaged backups (repaired, they resume with it).
    run = tmp_path / "run"
    os.makedirs(run / "backup")
    for path in (latest, older):
        os.replace(path, run / "backup" / path.name)
    lines = "epoch,loss,wall_time\r\n0,1.0,1.0\r\n1,0.9,2.0\r\n"
    (run / "history.csv").write_bytes(lines.encode())
    config = ml_collections.ConfigDict({"meta_steps": 6, "steps_per_epoch": 2, "verbose": 0})
    maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(4,)), inner_lr=0.01)
    maml.compile(optimizer="adam", loss="mse")
    with pytest.raises(checkpoints.DamagedFileError, match="Every backup in .* is damaged"):
        checkpoints.latest_backup_epoch(str(run / "backup"))  # before any training
    with pytest.raises(checkpoints.DamagedFileError, match="Every backup in .* is damaged"):
        tf_maml.experiment.fit_resumably(maml, config, str(run), lambda _: episodes, None)
    assert (run / "history.csv").read_bytes().decode() == lines


def test_damaged_meta_keras_is_named_as_damaged(tmp_path, uninterrupted):
    damaged = tmp_path / "meta.keras"
    damaged.write_bytes((uninterrupted / "meta.keras").read_bytes()[:100])
    with pytest.raises(checkpoints.DamagedFileError, match="meta.keras is damaged: a .keras file is a zip"):
        checkpoints.load_model(str(damaged))
    result = run_script("evaluate.py", SINUSOID_CONFIG, *TINY, f"--meta={damaged}", returncode=1)
    assert "is damaged" in result.stderr
    assert "not found" not in result.stderr.lower()


# ---------------------------------------------------------------------------
# 2. A diverging run fails: non-zero exit, nothing saved as the result.

def test_diverging_run_exits_non_zero_and_saves_no_result(tmp_path):
    result = train(tmp_path, "--config.inner_lr=1e6", returncode=1)
    assert "TrainingDivergedError" in result.stderr and "inner_lr=1000000.0" in result.stderr
    assert not (tmp_path / "meta.keras").exists() and not (tmp_path / "report.json").exists()


def test_reports_are_strict_json(tmp_path):
    checkpoints.write_json(tmp_path / "r.json", {"a": [1.0, float("nan")], "b": float("inf")})
    strict = json.loads((tmp_path / "r.json").read_text(), parse_constant=pytest.fail)
    assert strict == {"a": [1.0, None], "b": None}


# ---------------------------------------------------------------------------
# 6. Config provenance; report provenance.

def test_resuming_with_another_config_is_refused_by_field_unless_allowed(tmp_path):
    tf_maml.experiment.run(tiny_config(meta_steps=10), str(tmp_path))
    (tmp_path / "backup").mkdir()  # as an interrupted run leaves its workdir
    with pytest.raises(tf_maml.experiment.ConfigMismatchError,
                       match="interrupted run trained with another config .*inner_lr: 0.01 -> 0.02"):
        tf_maml.experiment.run(tiny_config(meta_steps=10, inner_lr=0.02), str(tmp_path))
    report = tf_maml.experiment.run(tiny_config(meta_steps=10, inner_lr=0.02), str(tmp_path),
                                    allow_config_change=True)
    assert report["config"]["inner_lr"] == 0.02 and not (tmp_path / "backup").exists()
    assert json.loads((tmp_path / "config.json").read_text())["inner_lr"] == 0.02  # now in force


def test_fields_that_change_nothing_trained_may_differ():
    recorded = json.loads(json.dumps(tf_maml.experiment.flat_config(tiny_config())))  # as config.json
    config = tiny_config(eval_tasks=20, verbose=1, steps_per_execution=1, data_dir="elsewhere")
    assert tf_maml.experiment.config_differences(recorded, config) == []
    config = tiny_config(shots=5)
    config.model.hidden = (16,)
    assert tf_maml.experiment.config_differences(recorded, config) == ["model.hidden", "shots"]


def test_a_run_recorded_before_a_field_existed_resumes_with_its_old_value():
    from configs import omniglot  # noqa: PLC0415

    config = omniglot.get_config("5w1s")
    recorded = json.loads(json.dumps(tf_maml.experiment.flat_config(config)))
    del recorded["model.normalization"]  # config.json of a run from before TaskNorm
    assert tf_maml.experiment.config_differences(recorded, config) == []
    config.model.normalization = "task"
    assert tf_maml.experiment.config_differences(recorded, config) == ["model.normalization"]
    from configs import highway  # noqa: PLC0415

    config = highway.get_config()  # a bridged env's workers: the same rollouts either way
    recorded = json.loads(json.dumps(tf_maml.experiment.flat_config(config)))
    del recorded["env.workers"]  # config.json of a run from before worker processes
    config.env.workers = 2
    assert tf_maml.experiment.config_differences(recorded, config) == []
    config.env.horizon = 10
    assert tf_maml.experiment.config_differences(recorded, config) == ["env.horizon"]


def test_finished_run_asked_for_more_steps_says_so(uninterrupted):
    with pytest.raises(tf_maml.experiment.ConfigMismatchError,
                       match="finished run of 20 meta-steps; the config asks for 40"):
        tf_maml.experiment.run(tiny_config(meta_steps=40), str(uninterrupted))


def test_report_names_algorithm_config_and_meta_steps(uninterrupted):
    report = json.loads((uninterrupted / "report.json").read_text())
    assert report["algorithm"] == "MAML" and report["meta_steps"] == 20
    assert report["config"]["inner_lr"] == 0.01 and report["config"]["model.hidden"] == [8]
    assert json.loads((uninterrupted / "config.json").read_text())["meta_steps"] == 20


def test_evaluate_follows_the_runs_budget_and_refuses_what_changes_the_evaluation(
        uninterrupted, tmp_path):
    """The README's road (issue 27): a run trained at another budget than the config
    file's is evaluated with the config file; its training fields follow config.json."""
    meta = f"--meta={uninterrupted / 'meta.keras'}"
    evaluation_flags = [flag for flag in TINY if flag.split("=")[0] in (
        "--config.eval_tasks", "--config.eval_max_steps", "--config.model.hidden",
        "--config.verbose")]
    run_script("evaluate.py", SINUSOID_CONFIG, *evaluation_flags, meta,
               f"--out={tmp_path / 'report.json'}")
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["config"]["meta_steps"], report["config"]["meta_batch_size"]) == (20, 5)
    assert report["meta_steps"] == 20
    recorded = json.loads((uninterrupted / "config.json").read_text())
    config, followed = tf_maml.experiment.evaluation_config(
        tiny_config(meta_steps=70000, outer_lr=0.5, inner_lr=0.5, shots=3), recorded)
    assert followed == ["meta_steps", "outer_lr"]
    assert tf_maml.experiment.config_differences(recorded, config) == ["inner_lr", "shots"]
    result = run_script("evaluate.py", SINUSOID_CONFIG, *TINY, meta, "--config.algorithm=reptile",
                        returncode=1)
    assert "algorithm: the config says 'reptile' (Reptile), the file holds MAML" in result.stderr
    recorded = json.loads((uninterrupted / "config.json").read_text())
    with pytest.raises(tf_maml.experiment.ConfigMismatchError,
                       match="inner_lr: trained with 0.01, config says 0.5"):
        tf_maml.experiment.check_meta_learner_matches(
            keras.models.load_model(uninterrupted / "meta.keras"),
            tiny_config(inner_lr=0.5), recorded,
        )


def test_meta_steps_not_a_multiple_names_the_flag_to_change(tmp_path):
    with pytest.raises(ValueError, match=r"change --config.meta_steps \(e.g. to 20 or 30\) or "
                       r"--config.steps_per_epoch \(e.g. to 5\)"):
        tf_maml.experiment.run(tiny_config(meta_steps=25), str(tmp_path))
    # Fewer meta-steps than an epoch: one suggestion each, not "500 or 500" (issue 27).
    with pytest.raises(ValueError, match=r"\(e.g. to 500\) or --config.steps_per_epoch "
                       r"\(e.g. to 200\)"):
        tf_maml.experiment.num_epochs(tiny_config(meta_steps=200, steps_per_epoch=500))


def test_a_workdir_takes_one_run_at_a_time(tmp_path):
    """A second run in a workdir in use is refused naming the holder's process id, before
    any compute; the lock is released when the run ends, and a killed holder's lock is
    taken by the next run."""
    from tf_maml.runs.workdir_lock import LOCK_FILE, WorkdirLockedError, run_lock

    holder = start_python(["-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from tf_maml.runs.workdir_lock import run_lock\n"
        "with run_lock(sys.argv[2]):\n"
        "    print('held', flush=True); time.sleep(600)"), ROOT, tmp_path])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLockedError, match=f"process {holder.pid}\\); one workdir"):
            tf_maml.experiment.run(tiny_config(), str(tmp_path))
        assert not os.path.exists(tmp_path / "config.json")  # refused before any work
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_FILE).read_text() == str(holder.pid)  # killed: left behind
    with run_lock(str(tmp_path)):  # the OS released it: taken
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
        with pytest.raises(WorkdirLockedError):  # a second holder in this process too
            with run_lock(str(tmp_path)):
                pass
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released on exit


# ---------------------------------------------------------------------------
# 7. Issue 26: every input named where it enters; a failed save in one line.

def test_a_copied_meta_keras_is_checked_against_the_config_it_is_evaluated_under(
        tmp_path, uninterrupted):
    copied = tmp_path / "meta.keras"  # no config.json beside it
    copied.write_bytes((uninterrupted / "meta.keras").read_bytes())
    meta = checkpoints.load_model(str(copied))
    tf_maml.experiment.check_meta_learner_matches(meta, tiny_config())
    with pytest.raises(tf_maml.experiment.ConfigMismatchError,
                       match="inner_lr: the file holds 0.01, the config gives 0.5"):
        tf_maml.experiment.check_meta_learner_matches(meta, tiny_config(inner_lr=0.5))
    with pytest.raises(tf_maml.experiment.ConfigMismatchError,
                       match=r"model: the file's has 4 weights, the config's 6; weight 0 .*"
                             r"is \(1, 8\) in the file, \(1, 16\) for the config"):
        wider = tiny_config()
        wider.model.hidden = (16, 16)
        tf_maml.experiment.check_meta_learner_matches(meta, wider)


def test_an_unknown_config_field_is_named_with_the_closest(tmp_path):
    result = run_script("train.py", SINUSOID_CONFIG, "--config.inner_step=1",
                        f"--workdir={tmp_path}", returncode=1)
    assert ("train.py: --config.inner_step: " in result.stderr and "has no field 'inner_step'; "
            "did you mean inner_steps" in result.stderr)
    assert "Traceback" not in result.stderr and not os.listdir(tmp_path)


@pytest.fixture
def full_disk():
    """The process' files limited to 2 KiB, as a full disk: a longer write fails (EFBIG)."""
    import resource  # noqa: PLC0415

    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_during_a_save_names_the_file_and_keeps_the_good_one(tmp_path, full_disk):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64)])
    path = tmp_path / "meta.keras"
    path.write_bytes(b"the good file")
    with pytest.raises(checkpoints.SaveError, match=rf"^Could not write {path}: File too "
                       r"large \(OSError\); the previous file is kept unchanged\."):
        checkpoints.save_model(model, str(path))
    report = tmp_path / "report.json"
    with pytest.raises(checkpoints.SaveError, match=rf"^Could not write {report}: .*none existed"):
        checkpoints.write_json(report, {"values": list(range(2000))})
    assert path.read_bytes() == b"the good file" and sorted(os.listdir(tmp_path)) == ["meta.keras"]
