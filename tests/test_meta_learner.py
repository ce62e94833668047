"""MAML through fit/evaluate/predict, for Sequential, functional and subclassed models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml

from helpers import (
    as_float32,
    classification_episode,
    conv_bn_pool_net,
    regression_episode,
    sparse_ce,
)


def sinusoid_maml(inner_lr=0.01, **kwargs):
    maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(16, 16)), inner_lr=inner_lr, **kwargs)
    maml.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", metrics=["mae"])
    return maml


def functional_mlp():
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


@keras.saving.register_keras_serializable(package="tf_maml_tests")
class SubclassedMLP(keras.Model):
    def __init__(self, width=16, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.hidden = keras.layers.Dense(width, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@pytest.mark.parametrize("make_model", [tf_maml.nets.mlp, functional_mlp, SubclassedMLP])
def test_fit_meta_trains_the_wrapped_model_in_place(make_model):
    model = make_model()
    maml = tf_maml.MAML(model, inner_lr=0.01, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    train = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=8, seed=0)
    val = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=8, seed=1, num_batches=4)
    before = maml.evaluate(val, return_dict=True, verbose=0)["loss"]
    history = maml.fit(train, steps_per_epoch=60, epochs=2, validation_data=val, verbose=0)
    after = maml.evaluate(val, return_dict=True, verbose=0)["loss"]
    assert after < 0.8 * before
    assert set(history.history) >= {"loss", "pre_adaptation_loss", "val_loss", "val_pre_adaptation_loss"}
    # The wrapped model's own variables are the ones meta-trained.
    assert maml.trainable_variables == model.trainable_variables
    assert maml.model is model


def test_adaptation_lowers_query_loss_after_meta_training():
    maml = sinusoid_maml(inner_lr=0.02, inner_steps=1, eval_inner_steps=5)
    train = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=16, seed=0)
    maml.fit(train, steps_per_epoch=300, epochs=1, verbose=0)
    val = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=16, seed=1, num_batches=4)
    logs = maml.evaluate(val, return_dict=True, verbose=0)
    assert logs["loss"] < logs["pre_adaptation_loss"]


def test_evaluate_uses_eval_inner_steps_and_leaves_the_model_unchanged():
    val = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=4, seed=3, num_batches=2)
    maml = sinusoid_maml(inner_steps=1, eval_inner_steps=0)
    logs = maml.evaluate(val, return_dict=True, verbose=0)
    # Zero steps at evaluation: the query loss is the pre-adaptation loss.
    np.testing.assert_allclose(logs["loss"], logs["pre_adaptation_loss"], rtol=1e-6)
    weights = maml.get_weights()
    maml.eval_inner_steps = 3
    maml.compile(optimizer="adam", loss="mse")
    logs3 = maml.evaluate(val, return_dict=True, verbose=0)
    assert logs3["loss"] != pytest.approx(logs3["pre_adaptation_loss"])
    for a, b in zip(weights, maml.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_meta_training_is_reproducible_from_a_seed():
    def run():
        keras.utils.set_random_seed(7)
        model = conv_bn_pool_net(dropout=0.3)
        maml = tf_maml.MAML(model, inner_lr=0.4, inner_steps=1)
        maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
        episode = as_float32(classification_episode(np.random.default_rng(0), tasks=4))
        maml.fit(*episode, batch_size=2, epochs=3, verbose=0)
        return maml.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_batchnorm_and_dropout_model_trains_with_xla():
    # Dense layers: XLA compiles a convolution's second derivatives for a minute on a CPU;
    # the meta-gradients through conv, BatchNorm and max-pool under XLA are checked in
    # test_meta_gradients.
    episode = as_float32(classification_episode(np.random.default_rng(1), tasks=4, image=(6,)))
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Dropout(0.2), keras.layers.Dense(3)])
    maml = tf_maml.MAML(model, inner_lr=0.4, inner_steps=1)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"], jit_compile=True)
    history = maml.fit(*episode, batch_size=2, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert int(maml.optimizer.iterations) == 4  # 4 tasks, 2 per meta-step, 2 epochs
    # Moving statistics follow training (they are written back after a step).
    moving_mean = maml.model.layers[1].moving_mean.numpy()
    assert np.abs(moving_mean).max() > 0


def test_dropout_masks_differ_between_meta_steps():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    maml = tf_maml.MAML(model, inner_lr=0.1)
    maml.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    episode = ((rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 4, 1))),) * 2
    episode = as_float32(episode)
    seeds = []
    for _ in range(2):
        maml.train_on_batch(*episode)
        seeds.append([v.numpy().copy() for v in model.non_trainable_variables])
    assert any((a != b).any() for a, b in zip(*seeds))


def test_predict_returns_adapted_query_predictions_per_task():
    maml = sinusoid_maml(inner_steps=1, eval_inner_steps=2)
    episodes = tf_maml.data.sinusoid_episodes(shots=5, queries=7, meta_batch_size=3, num_batches=2)
    predictions = maml.predict(episodes, verbose=0)
    assert predictions.shape == (6, 7, 1)
    (support_x, support_y), (query_x, _) = next(iter(episodes))
    adapted = maml.adapt(support_x[1], support_y[1])
    np.testing.assert_allclose(predictions[1], adapted.predict(query_x[1], verbose=0), atol=1e-5)


def test_transductive_flag_changes_query_normalization():
    episode = as_float32(classification_episode(np.random.default_rng(2), tasks=2))
    losses = {}
    for transductive in (True, False):
        keras.utils.set_random_seed(3)
        maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, transductive=transductive)
        maml.compile(optimizer="adam", loss=sparse_ce())
        losses[transductive] = maml.evaluate(*episode, return_dict=True, verbose=0)["loss"]
    assert losses[True] != pytest.approx(losses[False], rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"inner_lr": float("nan")}, "inner_lr"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_steps": 1.5}, "inner_steps"),
        ({"eval_inner_steps": -1}, "eval_inner_steps"),
    ],
)
def test_bad_hyper_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tf_maml.MAML(tf_maml.nets.mlp(), **kwargs)


def test_wrapping_something_else_than_a_keras_model_is_rejected():
    with pytest.raises(TypeError, match="keras.Model"):
        tf_maml.MAML(keras.layers.Dense(1))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_meta_step_is_traced_once(jit_compile):
    maml = sinusoid_maml(inner_steps=5)
    maml.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)  # XLA: compiled once per trace
    traces = []
    train_step = maml.train_step

    def counting_train_step(data):
        traces.append(data)  # Python runs only while tracing
        return train_step(data)

    maml.train_step = counting_train_step
    train = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=25, num_batches=6)
    maml.fit(train, verbose=0)
    # tf.function traces a step that may create variables twice (plain
    # Keras models too); after that, no step retraces.
    first_fit_traces = len(traces)
    assert first_fit_traces <= 2
    maml.fit(train, epochs=2, verbose=0)
    assert len(traces) == first_fit_traces


@pytest.fixture(scope="module")
def mirrored_strategy():
    """One strategy for the module: TF's collective ops mix up keys when
    several MirroredStrategy objects run in one process."""
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs 2 logical CPU devices (set up in conftest)")
    return tf.distribute.MirroredStrategy([d.name for d in cpus[:2]])


def test_tf_distribute_mirrored_matches_single_device(mirrored_strategy):
    """MirroredStrategy on 2 logical CPUs splits the meta-batch; same update."""
    episode = as_float32(regression_episode(np.random.default_rng(0), tasks=4, features=1))
    keras.utils.set_random_seed(0)
    single = sinusoid_maml(inner_lr=0.1, inner_steps=2)
    initial = single.get_weights()
    single.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    single.fit(*episode, batch_size=4, epochs=1, verbose=0)
    with mirrored_strategy.scope():
        mirrored = sinusoid_maml(inner_lr=0.1, inner_steps=2)
        mirrored.set_weights(initial)
        mirrored.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    mirrored.fit(*episode, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tf_distribute_mirrored_with_batchnorm_matches_single_device(mirrored_strategy):
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=4))
    single = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4)
    initial = single.get_weights()
    single.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_ce(), metrics=["accuracy"])
    expected = single.fit(*episode, batch_size=4, verbose=0).history
    with mirrored_strategy.scope():
        mirrored = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4)
        mirrored.set_weights(initial)
        mirrored.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_ce(), metrics=["accuracy"])
    actual = mirrored.fit(*episode, batch_size=4, verbose=0).history
    for key in ("loss", "pre_adaptation_loss", "accuracy"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5)
    # Meta-trained weights agree; moving statistics are per replica (each
    # replica threads them through its own tasks) and are not compared.
    for a, b in zip(single.model.trainable_variables, mirrored.model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixed", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_meta_training_tracks_float32(mixed):
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=4))
    histories, initial = {}, None
    for policy in ("float32", mixed):
        keras.mixed_precision.set_global_policy(policy)
        try:
            maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4)
            if initial is None:
                initial = maml.get_weights()
            maml.set_weights(initial)
            maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
            histories[policy] = maml.fit(*episode, batch_size=2, epochs=2, verbose=0).history
        finally:
            keras.mixed_precision.set_global_policy("float32")
    assert maml.model.layers[0].compute_dtype == mixed.removeprefix("mixed_")
    assert maml.model.layers[0].kernel.dtype == "float32"  # variables stay float32
    if mixed == "mixed_float16":  # Keras wraps the optimizer for loss scaling
        assert isinstance(maml.optimizer, keras.optimizers.LossScaleOptimizer)
    for key in ("loss", "pre_adaptation_loss"):
        np.testing.assert_allclose(histories[mixed][key], histories["float32"][key],
                                   rtol=0.05)
