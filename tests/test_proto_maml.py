"""ProtoMAML: ProtoNet's classifier before adaptation, exact meta-gradients, padded classes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.runs.step_curves import query_results_by_step

from helpers import (
    as_float32, assert_directional_derivatives_match, assert_export_serves_like_adapt,
    classification_episode, conv_bn_pool_net, meta_gradient, sparse_ce,
)


def dense_embedding(image=(8, 8, 1)):
    return keras.Sequential([keras.Input(image), keras.layers.Flatten(),
                             keras.layers.Dense(6, activation="tanh")])


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_before_adaptation_proto_maml_is_protonet(float64):
    """Logits 2 c_k . x - ||c_k||^2: the softmax over squared distances, and its loss."""
    episode = classification_episode(np.random.default_rng(31), tasks=2, ways=3, shots=2)
    embedding = dense_embedding()
    proto = tf_maml.ProtoMAML(embedding, num_classes=3, inner_lr=0.1)
    proto.compile(optimizer="adam", loss=sparse_ce())
    (support_x, support_y), (query_x, query_y) = episode
    losses = []
    for t in range(2):
        features = embedding.predict(support_x[t], verbose=0)
        prototypes = np.stack([features[support_y[t] == k].mean(axis=0) for k in range(3)])
        queries = embedding.predict(query_x[t], verbose=0)
        distances = ((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)
        expected = softmax(-distances)
        served = proto.adapt(support_x[t], support_y[t], steps=0).predict(query_x[t], verbose=0)
        np.testing.assert_allclose(softmax(served), expected, rtol=1e-10)
        losses.append(-np.log(expected[np.arange(len(query_y[t])), query_y[t]]).mean())
    logs = proto.test_on_batch(*episode, return_dict=True)
    np.testing.assert_allclose(logs["pre_adaptation_loss"], np.mean(losses), rtol=1e-10)
    assert abs(logs["loss"] - logs["pre_adaptation_loss"]) > 1e-3  # then the step adapts


@pytest.mark.parametrize("head_only", [False, True])
def test_second_order_meta_gradient_through_the_prototypes_matches_finite_differences(
        float64, head_only):
    episode = classification_episode(np.random.default_rng(32), tasks=2, ways=3, shots=2)
    proto = tf_maml.ProtoMAML(tf_maml.nets.without_head(conv_bn_pool_net()), num_classes=3,
                              head_only=head_only, inner_lr=0.3, inner_steps=2)
    assert_directional_derivatives_match(proto, episode, loss=sparse_ce(), rtol=1e-6)


def test_first_order_keeps_the_gradient_through_the_prototypes(float64):
    """fo-Proto-MAML: the adaptation's update is a constant, the head's start is not.
    Against central differences of L_query(start(theta) + delta), delta the update."""
    episode = classification_episode(np.random.default_rng(33), tasks=1, ways=3, shots=2)
    proto = tf_maml.ProtoMAML(dense_embedding(), num_classes=3, inner_lr=0.5,
                              first_order=True)
    grads = meta_gradient(proto, episode, loss=sparse_ce())
    (support_x, support_y), (query_x, query_y) = [
        tuple(tf.constant(a[0]) for a in pair) for pair in episode]
    loop, loss = proto.inner_loop, sparse_ce()
    params, state = loop.current_values()
    start = proto.starting_weights(params, state, support_x, support_y, None)
    fast, _, _ = loop.adapt(start, state, support_x, support_y, 1, True)
    delta = [f - s for f, s in zip(fast, start)]

    def query_loss(values):
        moved = [s + d for s, d in zip(proto.starting_weights(values, state, support_x,
                                                              support_y, None), delta)]
        return float(loss(query_y, loop.forward(moved, state, query_x, True)[0]))

    rng, eps = np.random.default_rng(0), 1e-6
    for _ in range(3):
        direction = [rng.standard_normal(p.shape) for p in params]
        numeric = (query_loss([p + eps * d for p, d in zip(params, direction)])
                   - query_loss([p - eps * d for p, d in zip(params, direction)])) / (2 * eps)
        analytic = sum(np.sum(g * d) for g, d in zip(grads, direction))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
    # The head's own variables are never meta-trained: their start is made per task.
    np.testing.assert_array_equal(grads[-2], 0.0)
    np.testing.assert_array_equal(grads[-1], 0.0)


def test_classes_absent_from_a_padded_episode_get_no_probability():
    rng = np.random.default_rng(34)
    embedding = tf_maml.nets.without_head(conv_bn_pool_net())
    proto = tf_maml.ProtoMAML(embedding, num_classes=5, inner_lr=0.2, inner_steps=2)
    proto.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    # 3 of 5 classes, two shots each, then two padded examples labelled 4.
    support_x = rng.standard_normal((2, 8, 8, 8, 1)).astype(np.float32)
    support_y = np.tile([0, 0, 1, 1, 2, 2, 4, 4], (2, 1)).astype(np.int32)
    support_weight = np.tile([1, 1, 1, 1, 1, 1, 0, 0], (2, 1)).astype(np.float32)
    query_x = rng.standard_normal((2, 3, 8, 8, 1)).astype(np.float32)
    query_y = np.tile([0, 1, 2], (2, 1)).astype(np.int32)
    query_weight = np.ones((2, 3), np.float32)
    episode = ((support_x, support_y, support_weight), (query_x, query_y, query_weight))
    proto.train_on_batch(*episode)
    predictions = proto.predict(tf.data.Dataset.from_tensors(episode), verbose=0)
    probabilities = tf.nn.softmax(predictions).numpy()
    np.testing.assert_array_equal(probabilities[..., 3:], 0.0)
    assert np.allclose(probabilities[..., :3].sum(-1), 1.0)
    adapted = proto.adapt(support_x[0, :6], support_y[0, :6])
    served = tf.nn.softmax(adapted.predict(query_x[0], verbose=0)).numpy()
    np.testing.assert_array_equal(served[:, 3:], 0.0)
    bias = adapted.trainable_variables[-1].numpy()
    assert (bias[3:] == -1e15).all() and np.isfinite(bias).all()
    start = proto.adapt(support_x[0, :6], support_y[0, :6], steps=0)
    assert np.abs(start.trainable_variables[-1].numpy() - bias)[:3].max() > 0  # adapted


def test_proto_maml_saves_adapts_exports_and_head_only_adapts_only_the_head(tmp_path):
    episode = as_float32(classification_episode(np.random.default_rng(35), tasks=2, ways=3))
    proto = tf_maml.ProtoMAML(tf_maml.nets.without_head(conv_bn_pool_net()), num_classes=3,
                              head_only=True, inner_optimizer=tf_maml.rules.adam(0.05))
    proto.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    proto.fit(*episode, batch_size=2, epochs=2, verbose=0)
    proto.save(tmp_path / "proto.keras")
    loaded = keras.models.load_model(tmp_path / "proto.keras")
    assert type(loaded) is tf_maml.ProtoMAML and loaded.head_only and loaded.num_classes == 3
    assert repr(loaded.inner_optimizer) == repr(proto.inner_optimizer)
    (support_x, support_y), (query_x, _) = episode
    task = (support_x[0], support_y[0], query_x[0])
    assert_export_serves_like_adapt(loaded, proto, tmp_path / "served", task, rtol=1e-5,
                                    atol=1e-6)
    adapted = proto.adapt(support_x[0], support_y[0])
    embedding = tf_maml.learners.family.proto_maml.embedding_and_head(proto.model)[0].trainable_variables
    for meta_learned, served in zip(embedding, adapted.trainable_variables[:-2]):
        np.testing.assert_array_equal(meta_learned.numpy(), served.numpy())
    start = proto.adapt(support_x[0], support_y[0], steps=0)  # the prototypes' head
    assert max(np.abs(a.numpy() - s.numpy()).max() for a, s in zip(
        adapted.trainable_variables[-2:], start.trainable_variables[-2:])) > 0
    with pytest.raises(AttributeError, match="`head_only` of ProtoMAML is fixed"):
        proto.head_only = False


def test_proto_maml_step_curve_starts_from_the_prototypes_and_equals_evaluate():
    episodes = tf.data.Dataset.from_tensors(
        as_float32(classification_episode(np.random.default_rng(37), tasks=2)))
    proto = tf_maml.ProtoMAML(tf_maml.nets.without_head(conv_bn_pool_net()), num_classes=3,
                              inner_optimizer=tf_maml.rules.momentum(0.1))
    curve = query_results_by_step(_compiled(proto), episodes, num_tasks=2, max_steps=2)
    for k in (0, 2):
        proto.eval_inner_steps = k
        logs = _compiled(proto).evaluate(episodes, return_dict=True, verbose=0)
        np.testing.assert_allclose(curve["loss"][:, k].mean(), logs["loss"], rtol=1e-5)
    # Step 0 is the prototypes' head, not the stored zeros (log 3 for every query).
    assert np.abs(curve["loss"][:, 0] - np.log(3)).max() > 1e-3


def _compiled(proto):
    proto.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    return proto


class FeatureMaps(keras.Model):  # subclassed: no inputs, checked when first called
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, x):
        return self.conv(x)


def test_proto_maml_refuses_an_embedding_of_feature_maps():
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)])
    message = r"must return one feature vector per example, \[batch, features\]; 'sequential"
    with pytest.raises(ValueError, match=message):
        tf_maml.ProtoMAML(conv, num_classes=3)
    proto = tf_maml.ProtoMAML(FeatureMaps(), num_classes=3)
    proto.compile(optimizer="adam", loss=sparse_ce())
    episode = as_float32(classification_episode(np.random.default_rng(36)))
    with pytest.raises(ValueError, match="returns shape"):
        proto.train_on_batch(*episode)
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        tf_maml.ProtoMAML(dense_embedding(), num_classes=1)
