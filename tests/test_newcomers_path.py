"""The newcomer's path without traps (issue 27): what the README and docs promise works
from the first try."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import sparse_ce, tiny_config

import tf_maml
import tf_maml.experiment
from tf_maml.learners.adapted_model import AdaptedModel


class PlainNet(keras.Model):
    """A subclassed model as the Keras guide writes one: no get_config, no kwargs."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.drop = keras.layers.Dropout(0.2)
        self.logits = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.logits(self.drop(self.hidden(x), training=training))


def test_adapt_works_for_a_plain_subclassed_model(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 4)).astype(np.float32)
    y = (np.arange(6) % 3)[None].astype(np.int32)
    meta = tf_maml.MAML(PlainNet(), inner_lr=0.5)
    meta.compile(optimizer="adam", loss=sparse_ce())
    meta.fit(tf.data.Dataset.from_tensors(((x, y), (x, y))), verbose=0)
    original = [w.numpy().copy() for w in meta.model.weights]

    adapted = meta.adapt(x[0], y[0], steps=2)
    assert isinstance(adapted, AdaptedModel) and adapted.name.endswith("_adapted")
    meta.export_adaptive(str(tmp_path / "adaptive"), steps=2)
    served = tf.saved_model.load(str(tmp_path / "adaptive"))
    np.testing.assert_allclose(adapted.predict(x[0], verbose=0),
                               served.adapt_and_predict(x[0], y[0], x[0]), atol=1e-5)
    # Its weights are the adapted ones, its own: fitting it leaves the meta-learner's.
    assert not np.allclose(adapted.trainable_weights[0].numpy(), original[0])
    adapted.compile(optimizer="sgd", loss=sparse_ce())
    adapted.fit(x[0], y[0], epochs=2, verbose=0)
    for weight, before in zip(meta.model.weights, original):
        np.testing.assert_array_equal(weight.numpy(), before)
    # Exported, it holds only its own weights and serves as it predicts.
    adapted.export(str(tmp_path / "serving"), verbose=False)
    serving = tf.saved_model.load(str(tmp_path / "serving"))
    assert len(serving.variables) == len(adapted.weights)
    np.testing.assert_allclose(serving.serve(x[0]), adapted.predict(x[0], verbose=0), atol=1e-5)


def test_steps_per_execution_divides_the_epoch():
    """The sinusoid config's 100 steps per execution made a 10-step epoch run 100 steps
    (Keras runs whole executions): lowered to divide steps_per_epoch."""
    for per_execution, per_epoch, expected in ((100, 10, 10), (100, 1000, 100), (100, 250, 50)):
        config = tiny_config(steps_per_execution=per_execution, steps_per_epoch=per_epoch)
        assert tf_maml.experiment.steps_per_execution(config) == expected
    meta = tf_maml.experiment.build_meta_learner(tiny_config(steps_per_execution=100))
    assert meta.steps_per_execution == 10


def test_maml_takes_a_named_inner_optimizer_as_reptile_does(tmp_path):
    net = tf_maml.nets.mlp(hidden=(4,))
    meta = tf_maml.MAML(net, inner_optimizer="adam", inner_lr=0.01)
    assert tf_maml.rules.serialize(meta.inner_optimizer) == tf_maml.rules.serialize(
        tf_maml.rules.adam(0.01))
    assert tf_maml.rules.serialize(tf_maml.MAML(net, inner_optimizer="sgd").inner_optimizer) \
        == tf_maml.rules.serialize(tf_maml.rules.sgd(0.4))
    meta.compile(optimizer="adam", loss="mse")
    x = np.ones((1, 4, 1), np.float32)
    meta.fit(tf.data.Dataset.from_tensors(((x, x), (x, x))), verbose=0)
    meta.save(str(tmp_path / "meta.keras"))
    loaded = keras.models.load_model(str(tmp_path / "meta.keras"))
    assert tf_maml.rules.serialize(loaded.inner_optimizer) == tf_maml.rules.serialize(
        meta.inner_optimizer)
    with pytest.raises(TypeError, match=r"must be one of \['adam', 'sgd'\] or a tf_maml.rules "
                       r"rule.*received 'rmsprop'"):
        tf_maml.MAML(net, inner_optimizer="rmsprop")


def test_figures_say_what_they_show(tiny_run, tmp_path, monkeypatch):
    """Titles name the task, setting, meta-steps and test tasks; the bars are said to be
    95 % intervals; reported and served in one plot; axis labels everywhere."""
    from tf_maml.runs import checkpoints, plots  # noqa: PLC0415

    texts = {}
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: texts.setdefault(
        os.path.basename(path), save(figure, path)))
    meta = checkpoints.load_model(str(tiny_run[0] / "meta.keras"))
    tf_maml.experiment.evaluate(meta, tiny_config(eval_tasks=10), str(tmp_path))
    assert sorted(texts) == ["loss_by_step.png", "sinusoid_fits.png"]
    (by_step,) = texts["loss_by_step.png"]["panels"]
    assert by_step["title"] == ("sinusoid regression, 10-shot: MAML after 20 meta-steps, "
                                "10 test tasks")
    assert by_step["legend_title"] == "mean ± 95 % interval over tasks"
    assert by_step["legend"] == ["reported = served"]  # no BatchNorm: the two are one
    assert (by_step["xlabel"], by_step["ylabel"]) == ("number of gradient steps", "query MSE")
    fits = texts["sinusoid_fits.png"]
    assert fits["title"] == "sinusoid regression, 10-shot: MAML after 20 meta-steps"
    assert all(panel["xlabel"] == "x" and panel["ylabel"].startswith("y")
               for panel in fits["panels"])


def test_reported_and_served_share_one_plot(tmp_path):
    from tf_maml.runs import plots  # noqa: PLC0415

    text = plots.plot_by_step([0.2, 0.6], [0.01, 0.02], str(tmp_path / "a.png"), "accuracy",
                              label="as reported", others={"served": ([0.2, 0.5], [0.01, 0.02])},
                              title="Omniglot 5-way 1-shot: MAML after 200 meta-steps")
    (panel,) = text["panels"]
    assert panel["legend"] == ["as reported", "served"] and panel["xticks"] == [0.0, 1.0]
