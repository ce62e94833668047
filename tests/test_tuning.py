"""keras-tuner search over meta-learners."""

import json
import os
import types

import keras_tuner
import pytest

import tf_maml
from tf_maml.runs.tuning import MetaLearnerHyperModel

from helpers import SINUSOID_CONFIG, conv_bn_pool_net, run_script


def episodes(seed, batches):
    return tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=4, seed=seed, num_batches=batches)


def hypermodel():
    return MetaLearnerHyperModel(lambda: tf_maml.nets.mlp(hidden=(8,)), loss="mse")


def test_build_covers_every_algorithm():
    model = hypermodel()
    for algorithm, cls in (("maml", tf_maml.MAML), ("meta_sgd", tf_maml.MetaSGD),
                           ("anil", tf_maml.ANIL), ("maml_plus_plus", tf_maml.MAMLPlusPlus),
                           ("reptile", tf_maml.Reptile)):
        hp = keras_tuner.HyperParameters()
        hp.Fixed("algorithm", algorithm)
        meta_learner = model.build(hp)
        assert type(meta_learner) is cls and meta_learner.compiled
        assert 1e-3 <= meta_learner.inner_lr <= 1.0


def test_a_trial_holds_only_the_hyperparameters_its_member_uses():
    """A MAML++ trial showed first_order (MAML's): each member's names are conditional."""
    model, hp = hypermodel(), keras_tuner.HyperParameters()
    for algorithm, active, inactive in (("maml", {"first_order", "outer_lr"}, {"epsilon"}),
                                        ("maml_plus_plus", {"outer_lr"}, {"first_order"}),
                                        ("reptile", {"epsilon"}, {"first_order", "outer_lr"})):
        hp.values["algorithm"] = algorithm
        model.build(hp)
        assert all(hp.is_active(name) for name in active), algorithm
        assert not any(hp.is_active(name) for name in inactive if name in hp), algorithm


def test_members_outside_the_default_search_are_tuned_when_named():
    """ProtoMAML (a classifier's backbone without its head), CAVIA (a TaskContext) and
    iMAML (its proximal weight)."""
    for algorithm, build_model, cls, own in (
            ("proto_maml", lambda: conv_bn_pool_net(classes=5), tf_maml.ProtoMAML,
             "first_order"),
            ("cavia", lambda: tf_maml.nets.mlp(hidden=(8,), context=2), tf_maml.CAVIA,
             "first_order"),
            ("imaml", lambda: tf_maml.nets.mlp(hidden=(8,)), tf_maml.IMAML,
             "proximal_weight")):
        assert algorithm not in tf_maml.tuning.ALGORITHMS
        model = MetaLearnerHyperModel(build_model, loss="mse", algorithms=[algorithm])
        hp = keras_tuner.HyperParameters()
        meta_learner = model.build(hp)
        assert type(meta_learner) is cls and hp.is_active(own)
        if cls is tf_maml.ProtoMAML:
            assert meta_learner.num_classes == 5
        if cls is tf_maml.IMAML:
            assert 0.1 <= meta_learner.proximal_weight <= 10.0


def test_objective_follows_the_metrics():
    assert hypermodel().objective().name == "val_loss"
    classifier = MetaLearnerHyperModel(lambda: tf_maml.nets.conv4(5), loss="mse", metrics=["accuracy"])
    assert classifier.objective().name == "val_accuracy"
    with pytest.raises(ValueError, match="`algorithms` must be drawn from"):
        MetaLearnerHyperModel(lambda: None, loss="mse", algorithms=["protonet"])


def test_search_resumes_and_returns_a_ready_meta_learner(tmp_path):
    def tuner(max_trials):
        model = hypermodel()
        return keras_tuner.RandomSearch(
            model, objective=model.objective(), max_trials=max_trials, directory=str(tmp_path),
            project_name="sinusoid", overwrite=False, seed=1,
        )

    search = dict(epochs=1, validation_data=episodes(1, 2), verbose=0)
    first = tuner(2)
    first.search(episodes(0, 3), **search)
    assert len(first.oracle.trials) == 2
    resumed = tuner(3)  # an interrupted search continues from its directory
    resumed.search(episodes(0, 3), **search)
    assert len(resumed.oracle.trials) == 3

    best = resumed.get_best_models(1)[0]
    assert isinstance(best, tf_maml.MAML)
    (support_x, support_y), (query_x, _) = next(iter(episodes(2, 1)))
    adapted = best.adapt(support_x[0], support_y[0])
    assert adapted.predict(query_x[0], verbose=0).shape == (10, 1)
    best.export_adaptive(str(tmp_path / "adaptive"))
    assert os.path.exists(tmp_path / "adaptive" / "saved_model.pb")


def test_tune_script_runs_two_trials(tmp_path):
    result = run_script(
        "tune.py", SINUSOID_CONFIG, "--max_trials=2", "--epochs=1",
        f"--directory={tmp_path}", "--config.steps_per_epoch=3", "--config.meta_batch_size=4",
        "--config.validation_batches=1", "--config.model.hidden=(8,)", "--config.verbose=0",
        "--config.steps_per_execution=1", "--config.eval_inner_steps=1",
    )
    best = json.loads((tmp_path / "sinusoid" / "best.json").read_text())
    printed = result.stdout[result.stdout.index('{\n  "best_hyperparameters"'):]
    assert json.loads(printed) == {"best_hyperparameters": best}
    trials = [json.loads(path.read_text()) for path in (tmp_path / "sinusoid").glob("trial_*/trial.json")]
    completed = [t for t in trials if t["status"] == "COMPLETED"]  # others diverged
    assert len(trials) == 2 and completed
    lowest = min(completed, key=lambda t: t["score"])  # the objective is the validation loss
    assert best == lowest["hyperparameters"]["values"]



def test_diverging_trial_is_reported_failed_never_best(tmp_path):
    """Issue 11, case 8: a NaN trial fails in keras-tuner's records."""
    model = hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("algorithm", "maml")
    hp.Fixed("inner_lr", 1e38)
    tuner = keras_tuner.RandomSearch(
        model, objective=model.objective(), max_trials=1, hyperparameters=hp,
        directory=str(tmp_path), project_name="diverging", max_consecutive_failed_trials=2,
    )
    tuner.search(episodes(0, 3), epochs=1, validation_data=episodes(1, 2), verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == keras_tuner.engine.trial.TrialStatus.FAILED
    assert "Meta-training diverged" in trial.message
    # One exception, and no backup that tuning does not keep (issue 27).
    assert trial.message.count("Traceback") == 1 and "backup" not in trial.message.lower()
    assert tf_maml.tuning.best_completed_trials(tuner) == []
    assert tuner.oracle.get_best_trials(1) == [trial]  # keras-tuner's own would name it


@pytest.mark.parametrize(
    "last, message",
    [
        ({"loss": 1.0, "val_loss": 1.5e10, "val_pre_adaptation_loss": 2.0}, "Adaptation explodes"),
        ({"loss": 1.0, "val_loss": float("nan"), "val_pre_adaptation_loss": 2.0}, "val_loss is nan"),
    ],
)
def test_exploding_or_nan_validation_fails_the_trial(last, message):
    class Finished:  # what model.fit returned: a history ending with `last`
        def fit(self, *args, **kwargs):
            return types.SimpleNamespace(history={k: [0.5, v] for k, v in last.items()})

    with pytest.raises(keras_tuner.errors.FailedTrialError, match=message):
        hypermodel().fit(keras_tuner.HyperParameters(), Finished())
