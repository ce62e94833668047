"""Bad episodes fail in fit/evaluate with a message naming the problem, before compute."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml

from helpers import as_float32, classification_episode, conv_bn_pool_net, sparse_ce


@pytest.fixture
def classifier():
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    return maml


def good_episode():
    return as_float32(classification_episode(np.random.default_rng(0), tasks=2))


def replace(episode, which, value):
    (sx, sy), (qx, qy) = episode
    parts = {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}
    parts[which] = value
    return (parts["support_x"], parts["support_y"]), (parts["query_x"], parts["query_y"])


def test_good_episodes_pass(classifier):
    before = [w.copy() for w in classifier.get_weights()]
    history = classifier.fit(*good_episode(), batch_size=2, verbose=0)
    assert int(classifier.optimizer.iterations) == 1  # two tasks, two per batch
    assert {"loss", "pre_adaptation_loss", "accuracy"} <= set(history.history)
    assert any(not np.array_equal(a, b) for a, b in zip(classifier.get_weights(), before))


@pytest.mark.parametrize(
    "which, make_bad, error, message",
    [
        ("support_x", lambda a: a[0], ValueError, "support_x has rank 4 and query_x rank 5.*task axis"),
        ("support_x", lambda a: a[0, 0, 0], ValueError, r"support_x must have shape \[tasks, examples"),
        ("query_y", lambda a: a[:, 0], ValueError, r"query_y must have shape \[tasks, examples"),
        ("support_y", lambda a: a.astype(np.float32), TypeError, "support_y and query_y must share a dtype"),
        ("query_x", lambda a: a.astype(np.float64), TypeError, "support_x and query_x must share a dtype"),
        ("query_x", lambda a: a[:, :, :6], ValueError, "examples differ in shape"),
        ("support_y", lambda a: a[:, :4], ValueError, "disagree on"),
        ("query_y", lambda a: a + 3, ValueError, r"class labels must lie in \[0, 3\).* from 3 to 5"),
        ("support_y", lambda a: a - 1, ValueError, r"class labels must lie in \[0, 3\)"),
        ("support_x", lambda a: a.astype(str), TypeError, "must be numeric"),
    ],
)
def test_bad_arrays_are_rejected(classifier, which, make_bad, error, message):
    (sx, sy), (qx, qy) = good_episode()
    value = {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}[which]
    episode = replace(good_episode(), which, make_bad(value))
    with pytest.raises(error, match=message):
        classifier.fit(*episode, batch_size=2, verbose=0)
    with pytest.raises(error, match=message):
        classifier.evaluate(*episode, batch_size=2, verbose=0)


def test_wrong_structure_is_rejected(classifier):
    (sx, sy), (qx, qy) = good_episode()
    dataset = tf.data.Dataset.from_tensors((sx, sy, qx, qy))
    with pytest.raises(ValueError, match=r"Expected episodes as \(\(support_x, support_y\)"):
        classifier.fit(dataset, verbose=0)


def test_dataset_label_range_is_checked_on_its_first_batch(classifier):
    episode = replace(good_episode(), "query_y", good_episode()[1][1] + 7)
    with pytest.raises(ValueError, match="class labels must lie in"):
        classifier.fit(tf.data.Dataset.from_tensors(episode), verbose=0)


def test_validation_data_is_checked_before_training(classifier):
    bad = replace(good_episode(), "query_y", good_episode()[1][1] + 7)
    weights = classifier.get_weights()
    with pytest.raises(ValueError, match="validation_data: class labels"):
        classifier.fit(*good_episode(), validation_data=bad, verbose=0)
    for a, b in zip(weights, classifier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_examples_that_do_not_fit_the_model_are_rejected(classifier):
    rng = np.random.default_rng(0)
    episode = replace(good_episode(), "support_x", rng.standard_normal((2, 6, 8, 8, 2)))
    episode = replace(episode, "query_x", rng.standard_normal((2, 6, 8, 8, 2)))
    with pytest.raises(ValueError, match=r"examples of shape \(8, 8, 2\).*do not fit"):
        classifier.fit(*as_float32(episode), batch_size=2, verbose=0)


def test_regression_targets_must_match_the_output_shape():
    maml = tf_maml.MAML(tf_maml.nets.mlp(outputs=2), inner_lr=0.01)
    maml.compile(optimizer="adam", loss="mse")
    episodes = tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=2, num_batches=1)
    with pytest.raises(ValueError, match=r"labels of shape \(1,\) per example do not match"):
        maml.fit(episodes, verbose=0)


def test_one_label_tensor_for_two_outputs_is_rejected_naming_both_structures():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, [keras.layers.Dense(1, name="a")(inputs),
                                 keras.layers.Dense(1, name="b")(inputs)])
    maml = tf_maml.MAML(model, inner_lr=0.01)
    maml.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=r"support_y does not match the model's outputs: labels "
                       r"float32\[1\], outputs \['float32\[None, 1\]', 'float32\[None, 1\]'\]\. "
                       r"Give a dict keyed by the output names \['a', 'b'\]"):
        maml.fit(tf_maml.data.sinusoid_episodes(num_batches=1), verbose=0)
