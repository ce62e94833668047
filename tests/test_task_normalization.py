"""TaskNormalization: its formula, query independence, exact meta-gradients, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.layers import TaskNormalization

from helpers import (
    assert_directional_derivatives_match, assert_export_serves_like_adapt,
    classification_episode, conv_bn_pool_net, meta_gradient, sparse_ce,
)


def numpy_task_norm(x, context, alpha_scale, alpha_offset, gamma, beta, moments, epsilon):
    """The paper's formula on channels-last arrays, written independently of the layer."""
    context_mean = context.mean(axis=tuple(range(context.ndim - 1)))
    context_var = context.var(axis=tuple(range(context.ndim - 1)))
    own_axes = tuple(range(1, x.ndim - 1)) if moments == "instance" else tuple(range(1, x.ndim))
    own_mean = x.mean(axis=own_axes, keepdims=True)
    own_var = x.var(axis=own_axes, keepdims=True)
    alpha = 1.0 / (1.0 + np.exp(-(alpha_scale * len(context) + alpha_offset)))
    mean = alpha * context_mean + (1 - alpha) * own_mean
    var = (alpha * (context_var + (context_mean - mean) ** 2)
           + (1 - alpha) * (own_var + (own_mean - mean) ** 2))
    return gamma * (x - mean) / np.sqrt(var + epsilon) + beta


def task_norm(moments, **kwargs):
    """A TaskNormalization layer away from its initial point (alpha != 0.5, gamma != 1)."""
    return TaskNormalization(
        moments=moments,
        alpha_scale_initializer=keras.initializers.Constant(0.3),
        alpha_offset_initializer=keras.initializers.Constant(-0.4),
        gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5),
        beta_initializer=keras.initializers.RandomNormal(stddev=0.3),
        **kwargs,
    )


def task_norm_net():
    """Conv blocks with TaskNorm-I, then TaskNorm-L: both kinds of moments."""
    return conv_bn_pool_net(normalizations=[lambda: task_norm("instance"),
                                            lambda: task_norm("layer")])


@pytest.mark.parametrize("moments", ["instance", "layer"])
def test_layer_computes_the_papers_formula_in_both_modes(float64, moments):
    rng = np.random.default_rng(0)
    context, queries = rng.normal(2.0, 3.0, (6, 5, 4, 3)), rng.normal(-1.0, 2.0, (4, 5, 4, 3))
    layer = task_norm(moments, epsilon=1e-3)
    layer.build(context.shape)
    weights = dict(alpha_scale=layer.alpha_scale.numpy(), alpha_offset=layer.alpha_offset.numpy(),
                   gamma=layer.gamma.numpy(),
                   beta=layer.beta.numpy(), moments=moments, epsilon=1e-3)
    # Training mode: the batch is its own context, and is stored.
    np.testing.assert_allclose(
        layer(context, training=True), numpy_task_norm(context, context, **weights), rtol=1e-10
    )
    np.testing.assert_allclose(layer.context_size.numpy(), 6.0)
    # Inference mode: the stored context, each query's own moments.
    np.testing.assert_allclose(
        layer(queries, training=False), numpy_task_norm(queries, context, **weights), rtol=1e-10
    )


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="moments"):
        TaskNormalization(moments="group")
    with pytest.raises(ValueError, match="moments='layer'"):
        TaskNormalization()(np.zeros((2, 4), np.float32))
    TaskNormalization(moments="layer")(np.zeros((2, 4), np.float32))  # features alone: fine
    with pytest.raises(ValueError, match="`epsilon` must be positive; received 0"):
        TaskNormalization(epsilon=0)
    with pytest.raises(TypeError, match="`axis` must be one int"):
        TaskNormalization(axis=(1, 2))
    with pytest.raises(ValueError, match="axis 0 is not a channel axis"):
        TaskNormalization(axis=0)(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="normalization"):
        tf_maml.nets.conv4(5, normalization="instance")


def test_meta_learner_predicts_each_query_from_the_support_set_alone(float64):
    """Adding queries, or changing the others, leaves a query's prediction as it was."""
    episode = classification_episode(np.random.default_rng(1), tasks=2, queries=4)
    (support_x, support_y), (query_x, _) = episode
    maml = tf_maml.MAML(task_norm_net(), inner_lr=0.4, inner_steps=2)
    assert maml.transductive is False  # the default for TaskNorm models
    maml.compile(optimizer="adam", loss=sparse_ce())
    together = maml.predict(((support_x, support_y), query_x), verbose=0)
    alone = maml.predict(((support_x, support_y), query_x[:, :1]), verbose=0)
    np.testing.assert_allclose(alone, together[:, :1], rtol=1e-10, atol=1e-12)
    others = query_x.copy()
    others[:, 1:] = np.random.default_rng(2).normal(size=others[:, 1:].shape)
    with_others = maml.predict(((support_x, support_y), others), verbose=0)
    np.testing.assert_allclose(with_others[:, :1], together[:, :1], rtol=1e-10, atol=1e-12)
    # Not vacuous: the support set does change it.
    other_support = maml.predict(((support_x[::-1], support_y), query_x), verbose=0)
    assert np.abs(other_support[0, 0] - together[0, 0]).max() > 1e-3
    # adapt() serves the same predictions.
    adapted = maml.adapt(support_x[0], support_y[0])
    np.testing.assert_allclose(adapted.predict(query_x[0], verbose=0), together[0], rtol=1e-9)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_two_step_meta_gradient_matches_finite_differences(float64, jit_compile):
    """Along random directions (every weight, the blending weights included), graph and XLA."""
    episode = classification_episode(np.random.default_rng(5))
    maml = tf_maml.MAML(task_norm_net(), inner_lr=0.4, inner_steps=2)
    names = [v.name for v in maml.trainable_variables]
    assert {"alpha_scale", "alpha_offset"} <= set(names)
    assert_directional_derivatives_match(
        maml, episode, directions=4, loss=sparse_ce(), jit_compile=jit_compile
    )
    if not jit_compile:  # the blending weights are meta-learned too
        gradient = meta_gradient(maml, episode, loss=sparse_ce())
        assert abs(gradient[names.index("alpha_scale")]) > 1e-6


def test_keras_file_and_saved_models_keep_it(tmp_path):
    episode = classification_episode(np.random.default_rng(3), tasks=2, ways=3, queries=3)
    (support_x, support_y), (query_x, _) = episode
    maml = tf_maml.MAML(task_norm_net(), inner_lr=0.4, inner_steps=1)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    maml.fit(tf.data.Dataset.from_tensors(episode).repeat(2), epochs=1, verbose=0)
    maml.save(tmp_path / "maml.keras")
    loaded = keras.models.load_model(tmp_path / "maml.keras")
    assert loaded.transductive is False
    assert sum(isinstance(layer, TaskNormalization) for layer in loaded.model.layers) == 2
    task = (support_x[0], support_y[0], query_x[0])
    expected = maml.adapt(*task[:2]).predict(query_x[0], verbose=0)
    np.testing.assert_allclose(loaded.adapt(*task[:2]).predict(query_x[0], verbose=0),
                               expected, rtol=1e-5, atol=1e-6)
    # The adapted model as a SavedModel: the support set's context travels with it.
    adapted = maml.adapt(*task[:2])
    adapted.export(str(tmp_path / "adapted"))
    served = tf.saved_model.load(str(tmp_path / "adapted"))
    np.testing.assert_allclose(served.serve(query_x[0][:1]), expected[:1], rtol=1e-5, atol=1e-6)
    assert_export_serves_like_adapt(maml, maml, tmp_path / "adaptive", task, rtol=1e-4, atol=1e-5)
