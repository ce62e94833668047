"""Models with several inputs and outputs: nested episodes, per-output losses and metrics.

One small functional model takes a dict of two inputs (float features and
int32 tokens through an Embedding) and returns a dict of two outputs (class
logits and a regression value). Episodes are nested as Keras' `fit` takes
them; `compile` gets a loss and metrics per output and `loss_weights`. The
inner and the outer loop use them (checked against a computation written
out here), the second-order meta-gradient matches finite differences, and
the model meta-trains, adapts, saves and serves adaptively with named
nested signatures.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml

from helpers import assert_directional_derivatives_match

CLASSES, FEATURES, LENGTH, VOCABULARY = 3, 4, 5, 12
WEIGHTS = {"cls": 1.0, "reg": 0.5}


def two_headed_model(normalization=True):
    features = keras.Input((FEATURES,), name="features")
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    embedded = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCABULARY, 3)(tokens))
    x = keras.layers.Dense(8)(keras.layers.Concatenate()([features, embedded]))
    if normalization:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("tanh")(x)
    return keras.Model(
        {"features": features, "tokens": tokens},
        {"cls": keras.layers.Dense(CLASSES, name="cls")(x), "reg": keras.layers.Dense(1, name="reg")(x)},
    )


def nested_episode(rng, tasks=2, shots=2, queries=2):
    dtype = keras.config.floatx()

    def draw(per_class):
        n = CLASSES * per_class
        x = {"features": rng.standard_normal((tasks, n, FEATURES)).astype(dtype),
             "tokens": rng.integers(0, VOCABULARY, (tasks, n, LENGTH)).astype(np.int32)}
        y = {"cls": np.tile(np.repeat(np.arange(CLASSES), per_class), (tasks, 1)).astype(np.int32),
             "reg": rng.standard_normal((tasks, n, 1)).astype(dtype)}
        return x, y

    return draw(shots), draw(queries)


def losses():
    return {"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"}


def task(structure, t):
    return tf.nest.map_structure(lambda a: a[t], structure)


@pytest.mark.parametrize("jit_compile, inner_steps", [(False, 2), (True, 1)])
def test_second_order_meta_gradient_matches_finite_differences(float64, jit_compile, inner_steps):
    episode = nested_episode(np.random.default_rng(0))
    maml = tf_maml.MAML(two_headed_model(), inner_lr=0.3, inner_steps=inner_steps)
    assert_directional_derivatives_match(
        maml, episode, directions=3, loss=losses(), loss_weights=WEIGHTS, jit_compile=jit_compile
    )


def test_losses_weights_and_metrics_apply_per_output_in_both_loops(float64):
    """The logged figures equal one inner SGD step and the query losses written out here."""
    episode = nested_episode(np.random.default_rng(1), tasks=3)
    (support_x, support_y), (query_x, query_y) = episode
    model = two_headed_model(normalization=False)
    maml = tf_maml.MAML(model, inner_lr=0.3, inner_steps=1)
    maml.compile(optimizer="sgd", loss=losses(), loss_weights=WEIGHTS,
                 metrics={"cls": ["accuracy"], "reg": [keras.metrics.MeanAbsoluteError()]})
    logs = maml.test_on_batch(*episode, return_dict=True)

    def output_losses(params, x, y):
        outputs, _ = model.stateless_call(params, [], x)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y["cls"], outputs["cls"]))
        mse = tf.reduce_mean(tf.square(outputs["reg"] - y["reg"]))
        return ce, mse, outputs

    expected = {name: [] for name in ("loss", "pre", "cls_loss", "reg_loss", "hits", "abs")}
    theta = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    for t in range(3):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            ce, mse, _ = output_losses(theta, task(support_x, t), task(support_y, t))
            support_loss = WEIGHTS["cls"] * ce + WEIGHTS["reg"] * mse
        grads = tape.gradient(support_loss, theta)
        fast = [p - 0.3 * tf.convert_to_tensor(g) for p, g in zip(theta, grads)]
        ce, mse, outputs = output_losses(fast, task(query_x, t), task(query_y, t))
        pre_ce, pre_mse, _ = output_losses(theta, task(query_x, t), task(query_y, t))
        expected["loss"].append(ce + 0.5 * mse)
        expected["pre"].append(pre_ce + 0.5 * pre_mse)
        expected["cls_loss"].append(ce)
        expected["reg_loss"].append(mse)
        expected["hits"].append(np.argmax(outputs["cls"], -1) == query_y["cls"][t])
        expected["abs"].append(np.abs(outputs["reg"] - query_y["reg"][t]))
    np.testing.assert_allclose(logs["loss"], np.mean(expected["loss"]), rtol=1e-10)
    np.testing.assert_allclose(logs["pre_adaptation_loss"], np.mean(expected["pre"]), rtol=1e-10)
    np.testing.assert_allclose(logs["cls_loss"], np.mean(expected["cls_loss"]), rtol=1e-6)
    np.testing.assert_allclose(logs["reg_loss"], np.mean(expected["reg_loss"]), rtol=1e-6)
    np.testing.assert_allclose(logs["cls_accuracy"], np.mean(expected["hits"]), rtol=1e-6)
    np.testing.assert_allclose(logs["reg_mean_absolute_error"], np.mean(expected["abs"]), rtol=1e-6)
    assert logs["cls_loss"] != logs["reg_loss"]


def episode_dataset(seed, batches):
    rng = np.random.default_rng(seed)
    episodes = [nested_episode(rng) for _ in range(batches)]
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *arrays: np.stack(arrays), *episodes)
    )


@pytest.fixture(scope="module")
def trained():
    """A transductive (BatchNorm) two-headed model meta-trained for a few steps."""
    maml = tf_maml.MAML(two_headed_model(), inner_lr=0.3, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses(), loss_weights=WEIGHTS,
                 metrics={"cls": ["accuracy"]})
    history = maml.fit(episode_dataset(2, 6), validation_data=episode_dataset(3, 2), epochs=2,
                       verbose=0)
    episode = nested_episode(np.random.default_rng(4), tasks=3)
    return maml, history, episode


def test_fit_logs_each_outputs_loss_metric_and_served_figures(trained):
    maml, history, _ = trained
    for name in ("loss", "pre_adaptation_loss", "cls_loss", "reg_loss", "cls_accuracy"):
        for prefix in ("", "val_"):
            assert np.all(np.isfinite(history.history[prefix + name])), prefix + name
    for name in ("val_served_loss", "val_served_cls_accuracy"):
        assert np.all(np.isfinite(history.history[name])), name
    # The total is the weighted sum of the outputs' losses (one meta-batch, so exact).
    logs = maml.test_on_batch(*trained[2], return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["cls_loss"] + 0.5 * logs["reg_loss"], rtol=1e-5)


def test_evaluate_serves_as_adapt_does(trained):
    """evaluate's served loss and accuracy are adapt()'s, task by task."""
    maml, _, episode = trained
    (support_x, support_y), (query_x, query_y) = episode
    logs = maml.evaluate(*episode, batch_size=3, return_dict=True, verbose=0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    served, hits = [], []
    for t in range(3):
        predictions = maml.adapt(task(support_x, t), task(support_y, t))(task(query_x, t))
        served.append(float(ce(query_y["cls"][t], predictions["cls"]))
                      + 0.5 * float(np.mean((predictions["reg"] - query_y["reg"][t]) ** 2)))
        hits.append(np.argmax(predictions["cls"], -1) == query_y["cls"][t])
    np.testing.assert_allclose(logs["served_loss"], np.mean(served), rtol=1e-5)
    np.testing.assert_allclose(logs["served_cls_accuracy"], np.mean(hits), rtol=1e-6)


def test_adapt_predict_save_and_export_adaptive(trained, tmp_path):
    maml, _, episode = trained
    (support_x, support_y), (query_x, _) = episode
    one = (task(support_x, 0), task(support_y, 0), task(query_x, 0))
    adapted = maml.adapt(*one[:2])
    expected = adapted.predict(one[2], verbose=0)
    assert {k: v.shape for k, v in expected.items()} == {"cls": (6, CLASSES), "reg": (6, 1)}

    maml.transductive = False
    try:
        predicted = maml.predict(((support_x, support_y), query_x), verbose=0)
    finally:
        maml.transductive = True
    for name in ("cls", "reg"):
        np.testing.assert_allclose(predicted[name][0], expected[name], atol=1e-5)

    maml.save(tmp_path / "meta.keras")
    loaded = keras.models.load_model(tmp_path / "meta.keras")
    assert loaded.example_spec == maml.example_spec and loaded.label_spec == maml.label_spec
    again = loaded.adapt(*one[:2]).predict(one[2], verbose=0)
    for name in ("cls", "reg"):
        np.testing.assert_allclose(again[name], expected[name], atol=1e-6)

    loaded.export_adaptive(str(tmp_path / "adaptive"))
    served = tf.saved_model.load(str(tmp_path / "adaptive"))
    signature = served.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == [
        "query_x_features", "query_x_tokens", "support_x_features", "support_x_tokens",
        "support_y_cls", "support_y_reg",
    ]
    by_name = {f"{prefix}_{key}": value for prefix, structure in
               zip(("support_x", "support_y", "query_x"), one) for key, value in structure.items()}
    outputs = signature(**by_name)
    nested = served.adapt_and_predict(*one)
    for name in ("cls", "reg"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5)
        np.testing.assert_allclose(nested[name], expected[name], atol=1e-5)


def list_model():
    """Outputs in an order other than their names' (dict labels are keyed, lists ordered)."""
    a, b = keras.Input((FEATURES,), name="a"), keras.Input((2,), name="b")
    x = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], [keras.layers.Dense(1, name="reg")(x),
                                keras.layers.Dense(CLASSES, name="cls")(x)])


def test_list_inputs_and_outputs_take_labels_as_a_list_or_keyed_by_output_name():
    rng = np.random.default_rng(5)
    (support_x, support_y), (query_x, query_y) = nested_episode(rng)
    as_list = lambda x: [x["features"], rng.standard_normal(x["features"].shape[:2] + (2,))  # noqa: E731
                         .astype(np.float32)]
    support_x, query_x = as_list(support_x), as_list(query_x)
    results = []
    for labels in (lambda y: [y["reg"], y["cls"]], lambda y: y):
        maml = tf_maml.MAML(list_model(), inner_lr=0.3)
        maml.model.set_weights(results[0][1] if results else maml.model.get_weights())
        maml.compile(optimizer="sgd", loss=losses(), metrics={"cls": ["accuracy"]})
        logs = maml.test_on_batch((support_x, labels(support_y)), (query_x, labels(query_y)),
                                  return_dict=True)
        results.append((logs, maml.model.get_weights()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert set(results[0][0]) >= {"loss", "cls_loss", "reg_loss", "cls_accuracy"}


# The members whose task loss or adapted weights differ from MAML's in a way the
# outputs could meet: a loss summed over steps, heads named for the masked rule.
@pytest.mark.parametrize("member", ["anil", "maml_plus_plus"])
def test_family_members_meta_train_a_two_headed_model(member):
    kwargs = {"inner_lr": 0.3, "inner_steps": 2}
    if member == "anil":
        kwargs["adapted_layers"] = ["cls", "reg"]
    maml = tf_maml.family.meta_learner_class(member)(two_headed_model(), **kwargs)
    maml.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses(), loss_weights=WEIGHTS)
    episode = nested_episode(np.random.default_rng(6))
    before = [w.copy() for w in maml.get_weights()]
    logs = maml.train_on_batch(*episode, return_dict=True)
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["reg_loss"])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, maml.get_weights()))
    adapted = maml.adapt(*(task(part, 0) for part in episode[0]))
    assert adapted.predict(task(episode[1][0], 0), verbose=0)["cls"].shape == (6, CLASSES)


def test_fit_from_a_python_generator():
    """Episodes Keras reads batch by batch reach the step unchecked: it builds the loss."""
    rng = np.random.default_rng(9)

    def episodes():
        while True:
            yield nested_episode(rng)

    maml = tf_maml.MAML(two_headed_model(), inner_lr=0.3)
    maml.compile(optimizer="adam", loss=losses(), loss_weights=WEIGHTS,
                 metrics={"cls": ["accuracy"]})
    history = maml.fit(episodes(), steps_per_epoch=2, epochs=1, verbose=0)
    for name in ("loss", "cls_loss", "reg_loss", "cls_accuracy"):
        assert np.isfinite(history.history[name][0]), name


def test_adapt_takes_python_lists_for_one_input_and_one_output():
    (support_x, support_y), _ = tf_maml.data.sinusoid_episodes(
        shots=5, meta_batch_size=1, num_batches=1).get_single_element()
    maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(8,)), inner_lr=0.1)
    maml.compile(optimizer="adam", loss="mse")
    as_lists = maml.adapt(support_x[0].numpy().tolist(), support_y[0].numpy().tolist())
    as_arrays = maml.adapt(support_x[0], support_y[0])
    for a, b in zip(as_lists.get_weights(), as_arrays.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_an_output_named_like_a_log_of_tf_maml_is_refused():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"served": keras.layers.Dense(1)(inputs),
                                 "other": keras.layers.Dense(1)(inputs)})
    maml = tf_maml.MAML(model, inner_lr=0.1)
    maml.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((1, 3, 2), "float32"), np.zeros((1, 3, 1), "float32")
    with pytest.raises(ValueError, match="output named 'served' would log served_loss"):
        maml.fit((x, {"served": y, "other": y}), (x, {"served": y, "other": y}), verbose=0)


def compiled():
    maml = tf_maml.MAML(two_headed_model(), inner_lr=0.3)
    maml.compile(optimizer="sgd", loss=losses())
    return maml


def renamed(structure, old, new):
    return {new if k == old else k: v for k, v in structure.items()}


def test_structures_that_do_not_match_the_model_are_named_before_compute():
    (support_x, support_y), (query_x, query_y) = nested_episode(np.random.default_rng(7))
    wrong_input = ((renamed(support_x, "tokens", "words"), support_y),
                   (renamed(query_x, "tokens", "words"), query_y))
    with pytest.raises(ValueError, match=r"support_x and query_x hold examples of \{'features': "
                       r"'float32\[4\]', 'words': 'int32\[5\]'\}, which do not match the inputs "
                       r"of .*\{'features': 'features', 'tokens': 'tokens'\}"):
        compiled().fit(*wrong_input, verbose=0)
    missing_output = (support_x, {"cls": support_y["cls"]}), (query_x, {"cls": query_y["cls"]})
    with pytest.raises(ValueError, match=r"support_y does not match the model's outputs: labels "
                       r"\{'cls': 'int32\[\]'\}, outputs \{'cls': 'float32\[None, 3\]', 'reg': "
                       r"'float32\[None, 1\]'\}"):
        compiled().fit(*missing_output, verbose=0)
    with pytest.raises(ValueError, match="support_y and query_y must have the same structure"):
        compiled().fit((support_x, support_y), (query_x, query_y["cls"]), verbose=0)
    bad_shape = (support_x, {**support_y, "reg": support_y["reg"][..., 0]}), (query_x, query_y)
    with pytest.raises(ValueError, match=r"support_y\['reg'\] has rank 2 and query_y\['reg'\] rank 3"):
        compiled().fit(*bad_shape, verbose=0)
    one_hot = {**support_y, "cls": np.eye(CLASSES, dtype=np.float32)[support_y["cls"]]}
    query_one_hot = {**query_y, "cls": np.eye(CLASSES, dtype=np.float32)[query_y["cls"]]}
    with pytest.raises(ValueError, match=r"sparse categorical loss .* support_y\['cls'\] holds "
                       r"float32 labels of shape \(3,\)"):
        compiled().fit((support_x, one_hot), (query_x, query_one_hot), verbose=0)
    out_of_range = {**support_y, "cls": support_y["cls"] + 1}
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        compiled().fit((support_x, out_of_range), (query_x, query_y), verbose=0)


def test_adapt_names_a_support_set_that_does_not_match():
    maml = compiled()
    episode = nested_episode(np.random.default_rng(8))
    maml.test_on_batch(*episode)
    support_x, support_y = (task(part, 0) for part in episode[0])
    with pytest.raises(ValueError, match="adapt\\(\\) takes support_x structured as the model's"):
        maml.adapt(support_x["features"], support_y)
    with pytest.raises(ValueError, match=r"support_y\['reg'\] must hold one entry per support "
                       r"example \(6\)"):
        maml.adapt(support_x, {**support_y, "reg": support_y["reg"][:2]})
    with pytest.raises(ValueError, match=r"support_y\['cls'\] must hold class labels in \[0, 3\)"):
        maml.adapt(support_x, {**support_y, "cls": support_y["cls"] + 3})


def test_meta_learners_saved_before_nested_episodes_still_load():
    """The build config of one-input, one-output episodes as it was written before."""
    maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(4,)), inner_lr=0.1)
    maml.build_from_config({"episodes": {"features": [1], "x_dtype": "float32",
                                         "label_shape": [1], "label_dtype": "float32"}})
    assert maml.example_spec == tf.TensorSpec((1,), tf.float32)
    assert maml.label_spec == tf.TensorSpec((1,), tf.float32)
    assert maml.get_build_config() == {"episodes": {
        "x": {"class_name": "TensorSpec", "shape": [1], "dtype": "float32"},
        "y": {"class_name": "TensorSpec", "shape": [1], "dtype": "float32"},
    }}
