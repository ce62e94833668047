"""adapt(), SavedModel export, serving the adaptation, saving and resuming."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.runs.step_curves import query_results_by_step

from helpers import (
    as_float32, assert_export_serves_like_adapt, classification_episode, conv_bn_pool_net,
    run_in_fresh_process, sparse_ce,
)


@pytest.fixture
def trained():
    """A conv+BN meta-learner after two meta-steps, and a task."""
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=4))
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, inner_steps=1, eval_inner_steps=3)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    maml.fit(*episode, batch_size=2, verbose=0)
    (support_x, support_y), (query_x, _) = episode
    return maml, episode, (support_x[0], support_y[0], query_x[0])


def test_adapt_returns_a_standalone_model_with_adapted_weights(trained):
    maml, _, (support_x, support_y, query_x) = trained
    meta_weights = maml.get_weights()
    adapted = maml.adapt(support_x, support_y, steps=3)
    assert isinstance(adapted, keras.Model) and adapted is not maml.model
    assert [v.shape for v in adapted.weights] == [v.shape for v in maml.model.weights]
    changed = [np.abs(a - b).max() for a, b in zip(adapted.get_weights(), maml.model.get_weights())]
    assert max(changed) > 1e-4
    for a, b in zip(meta_weights, maml.get_weights()):
        np.testing.assert_array_equal(a, b)  # the meta-learner is untouched
    # Adapted predictions beat the meta-initialization on the support set.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = loss(support_y, maml.model(support_x, training=True))
    after = loss(support_y, adapted(support_x))
    assert float(after) < float(before)


def test_adapt_matches_non_transductive_predict(trained):
    maml, episode, (support_x, support_y, query_x) = trained
    maml.transductive = False
    adapted = maml.adapt(support_x, support_y)
    (sx, sy), (qx, _) = episode
    predictions = maml.predict(((sx, sy), qx), batch_size=4, verbose=0)
    np.testing.assert_allclose(adapted.predict(query_x, verbose=0), predictions[0], atol=1e-5)


def test_adapt_rejects_a_task_axis(trained):
    maml, episode, _ = trained
    (sx, sy), _ = episode
    with pytest.raises(ValueError, match="one task, shape \\[examples"):
        maml.adapt(sx, sy)


def test_adapted_model_and_the_adaptation_serve_in_a_fresh_process(trained, tmp_path):
    """The adapted model's SavedModel and export_adaptive's, loaded without tf_maml."""
    maml, _, (support_x, support_y, query_x) = trained
    adapted = maml.adapt(support_x, support_y)
    expected = adapted.predict(query_x, verbose=0)
    adapted.save(tmp_path / "adapted.keras")
    reloaded = keras.models.load_model(tmp_path / "adapted.keras")
    np.testing.assert_allclose(reloaded.predict(query_x, verbose=0), expected, atol=1e-6)
    adapted.export(str(tmp_path / "serving"), verbose=False)
    maml.export_adaptive(str(tmp_path / "adaptive"))
    np.savez(tmp_path / "task.npz", support_x=support_x, support_y=support_y, query_x=query_x)
    served = run_in_fresh_process(
        """
        import sys
        import numpy as np, tensorflow as tf
        task = np.load("task.npz")
        serving = tf.saved_model.load("serving")  # held: its function needs its variables
        adapted = serving.serve(task["query_x"]).numpy()
        served = tf.saved_model.load("adaptive")
        signature = served.signatures["serving_default"]
        by_signature = list(signature(**{k: tf.constant(task[k]) for k in task.files}).values())[0]
        by_function = served.adapt_and_predict(task["support_x"], task["support_y"], task["query_x"])
        np.testing.assert_allclose(by_signature.numpy(), by_function.numpy(), atol=1e-6)
        assert "tf_maml" not in sys.modules
        np.save("out.npy", np.stack([adapted, by_function.numpy()]))
        """,
        tmp_path,
    )
    np.testing.assert_allclose(served[0], expected, atol=1e-6)
    np.testing.assert_allclose(served[1], expected, atol=1e-5)


def test_meta_learner_saves_and_loads_with_optimizer_state(trained, tmp_path):
    maml, episode, _ = trained
    maml.save(tmp_path / "meta.keras")
    loaded = keras.models.load_model(tmp_path / "meta.keras")
    assert isinstance(loaded, tf_maml.MAML)
    hyper_parameters = ("inner_lr", "inner_steps", "first_order", "eval_inner_steps", "transductive")
    for key in hyper_parameters:
        assert loaded.get_config()[key] == maml.get_config()[key]
    assert type(loaded.model) is type(maml.model)
    assert loaded.eval_inner_steps == 3 and loaded.inner_lr == 0.4
    assert int(loaded.optimizer.iterations) == int(maml.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, maml.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(loaded.get_weights(), maml.get_weights()):
        np.testing.assert_array_equal(a, b)
    expected = maml.evaluate(*episode, batch_size=2, return_dict=True, verbose=0)
    assert loaded.evaluate(*episode, batch_size=2, return_dict=True, verbose=0) == expected
    # The label format travels with the file, so serving needs no data.
    (support_x, support_y), (query_x, _) = episode
    task = (support_x[1], support_y[1], query_x[1])
    assert_export_serves_like_adapt(loaded, maml, tmp_path / "adaptive", task, atol=1e-5)


class InterruptAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    episodes = tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=4, num_batches=3)

    def new_meta_learner():
        keras.utils.set_random_seed(0)
        maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.05, inner_steps=2)
        maml.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        return maml

    uninterrupted = new_meta_learner()
    uninterrupted.fit(episodes, epochs=4, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        new_meta_learner().fit(episodes, epochs=4, callbacks=[backup, InterruptAtEpoch(2)], verbose=0)
    resumed = new_meta_learner()
    history = resumed.fit(episodes, epochs=4, callbacks=[backup], verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    assert int(resumed.optimizer.iterations) == 12
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_served_curve_is_what_adapt_serves_one_query_at_a_time(trained):
    maml, episode, _ = trained  # transductive BatchNorm, as the papers report
    episodes = tf.data.Dataset.from_tensors(episode)
    curve = query_results_by_step(maml, episodes, num_tasks=4, max_steps=2)
    (support_x, support_y), (query_x, query_y) = episode
    loss = sparse_ce()
    for t in range(4):
        adapted = maml.adapt(support_x[t], support_y[t], steps=2)
        alone = np.concatenate([adapted(query_x[t][i:i + 1], training=False).numpy()
                                for i in range(len(query_x[t]))])
        np.testing.assert_allclose(
            curve["served_loss"][t, 2], float(loss(query_y[t], alone)), rtol=1e-5
        )
        accuracy = np.mean(np.argmax(alone, -1) == query_y[t])
        np.testing.assert_allclose(curve["served_accuracy"][t, 2], accuracy, atol=1e-12)
    # The reported figures normalize queries with their own batch: not what is served.
    assert np.abs(curve["loss"] - curve["served_loss"]).max() > 1e-4
    maml.transductive = False  # then the two are one
    curve = query_results_by_step(maml, episodes, num_tasks=4, max_steps=2)
    np.testing.assert_array_equal(curve["loss"], curve["served_loss"])
    np.testing.assert_array_equal(curve["accuracy"], curve["served_accuracy"])


def test_keras_evaluate_logs_the_served_figures_beside_the_reported(trained, tmp_path):
    maml, episode, _ = trained  # transductive BatchNorm, eval_inner_steps=3
    (support_x, support_y), (query_x, query_y) = episode
    logs = maml.evaluate(*episode, batch_size=2, verbose=0, return_dict=True)
    served = [maml.adapt(support_x[t], support_y[t]).predict(query_x[t], verbose=0)
              for t in range(4)]
    loss = sparse_ce()
    np.testing.assert_allclose(
        logs["served_loss"], np.mean([float(loss(query_y[t], served[t])) for t in range(4)]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        logs["served_accuracy"], np.mean(np.argmax(served, -1) == query_y), atol=1e-6
    )
    assert abs(logs["served_loss"] - logs["loss"]) > 1e-4  # two different figures
    # fit's validation logs them too; a reloaded meta-learner and a new compile as well.
    history = maml.fit(*episode, batch_size=2, validation_data=episode, verbose=0)
    assert {"val_served_loss", "val_served_accuracy"} <= set(history.history)
    maml.save(tmp_path / "maml.keras")
    loaded = keras.models.load_model(tmp_path / "maml.keras")
    assert "served_accuracy" in loaded.evaluate(*episode, verbose=0, return_dict=True)
    maml.compile(optimizer="adam", loss=sparse_ce(),
                 metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    logs = maml.evaluate(*episode, batch_size=2, verbose=0, return_dict=True)
    assert {"served_loss", "served_top2"} <= set(logs) and "served_accuracy" not in logs
    # Not transductive: the reported figures are the served ones, logged once.
    maml.transductive = False
    logs = maml.evaluate(*episode, batch_size=2, verbose=0, return_dict=True)
    assert not [name for name in logs if name.startswith("served_")]


def test_adapt_traces_once_per_steps_and_follows_training_and_compile():
    (support_x, support_y), (query_x, _) = tf_maml.data.sinusoid_episodes(
        shots=5, meta_batch_size=3, num_batches=1, seed=2
    ).get_single_element()
    maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.1, eval_inner_steps=2)
    maml.compile(optimizer="adam", loss="mse")
    first = maml.adapt(support_x[0], support_y[0]).get_weights()
    for t in (1, 2):
        maml.adapt(support_x[t], support_y[t])
    maml.adapt(support_x[0, :3], support_y[0, :3])  # another support size
    maml.adapt(support_x[0], support_y[0], steps=1)
    traces = {steps: function.experimental_get_tracing_count()
              for steps, (_, function) in maml._traced_adaptation._functions.items()}
    assert traces == {2: 2, 1: 1}  # per number of steps; a new size retraces once, then generalizes
    # The traced adaptation reads the weights as they are now...
    maml.fit(tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=3, num_batches=2), verbose=0)
    moved = maml.adapt(support_x[0], support_y[0]).get_weights()
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(moved, first))
    # ... and the loss as compiled now: the same as a meta-learner compiled so from the start.
    maml.compile(optimizer="adam", loss="mae")
    fresh = tf_maml.MAML(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.1, eval_inner_steps=2)
    fresh.compile(optimizer="adam", loss="mae")
    fresh.build((None, 1))
    fresh.set_weights(maml.get_weights())
    for a, b in zip(maml.adapt(support_x[0], support_y[0]).get_weights(),
                    fresh.adapt(support_x[0], support_y[0]).get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    adapted = maml.adapt(support_x[0], support_y[0])
    assert adapted.predict(query_x[0], verbose=0).shape == tuple(query_x[0].shape)


def test_a_frozen_batchnorm_keeps_its_moving_statistics_when_served():
    """Keras runs a BatchNormalization with trainable=False in inference mode: served
    (each query with the support set's statistics) it keeps its moving statistics, as
    the query-batch figure does. It was given zero statistics, and served garbage."""
    rng = np.random.default_rng(0)
    model = conv_bn_pool_net()
    for layer in model.layers[:-1]:  # a frozen, pretrained-like body
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
        layer.trainable = False
    episode = as_float32(classification_episode(rng, tasks=1))
    (support_x, support_y), (query_x, _) = episode
    anil = tf_maml.ANIL(model, inner_lr=0.4, eval_inner_steps=2)
    with pytest.raises(ValueError, match="compile it first"):  # was: 'NoneType' not callable
        anil.adapt(support_x[0], support_y[0])
    anil.compile(loss=sparse_ce())
    adapted = anil.adapt(support_x[0], support_y[0])
    for original, served in zip(model.non_trainable_weights, adapted.non_trainable_weights):
        np.testing.assert_array_equal(served.numpy(), original.numpy())
    batch = anil.predict(tf.data.Dataset.from_tensors(episode), verbose=0)[0]  # query batch
    np.testing.assert_allclose(adapted.predict(query_x[0], verbose=0), batch, atol=1e-5)
