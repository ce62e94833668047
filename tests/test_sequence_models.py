"""Sequence and attention models: token inputs, masks, RNNs and a Transformer block.

One small model holds every kind of layer the peers' users bring to MAML:
an Embedding over int32 tokens with `mask_zero` (its gradient arrives as
IndexedSlices), a Transformer encoder block (MultiHeadAttention with the
padding mask, LayerNormalization, Dropout, a dense feed-forward part), a GRU
and an LSTM. Its second-order meta-gradient is checked against finite
differences, graph mode and XLA, and the model meta-trains, adapts and
serves through the same API as any other.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml

from helpers import assert_directional_derivatives_match, sparse_ce

VOCABULARY, LENGTH, CLASSES = 30, 7, 3


def sequence_model(dropout=0.1):
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 8, mask_zero=True)(tokens)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=dropout)(x, x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dropout(dropout)(attended))
    feed_forward = keras.layers.Dense(8)(keras.layers.Dense(16, activation="relu")(x))
    x = keras.layers.LayerNormalization()(x + feed_forward)
    x = keras.layers.GRU(6, return_sequences=True)(x)
    x = keras.layers.LSTM(5)(x)
    return keras.Model(tokens, keras.layers.Dense(CLASSES)(x))


def token_episode(rng, tasks=2, shots=2, queries=2):
    def draw(per_class):
        lengths = rng.integers(2, LENGTH + 1, (tasks, CLASSES * per_class))
        tokens = rng.integers(1, VOCABULARY, (tasks, CLASSES * per_class, LENGTH))
        tokens[np.arange(LENGTH) >= lengths[..., None]] = 0  # padding, masked
        labels = np.tile(np.repeat(np.arange(CLASSES), per_class), (tasks, 1))
        return tokens.astype(np.int32), labels.astype(np.int32)

    return draw(shots), draw(queries)


@pytest.mark.parametrize("jit_compile, inner_steps", [(False, 2), (True, 1)])
def test_second_order_meta_gradient_matches_finite_differences(float64, jit_compile, inner_steps):
    episode = token_episode(np.random.default_rng(0))
    maml = tf_maml.MAML(sequence_model(), inner_lr=0.3, inner_steps=inner_steps)
    assert_directional_derivatives_match(
        maml, episode, directions=3, loss=sparse_ce(), jit_compile=jit_compile
    )


def test_meta_trains_adapts_saves_and_serves(tmp_path):
    episode = token_episode(np.random.default_rng(1), tasks=4)
    (support_x, support_y), (query_x, query_y) = episode
    # First order: the test above checks the second order; this one the rest of the way.
    maml = tf_maml.FOMAML(sequence_model(), inner_lr=0.3, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(3e-3), loss=sparse_ce(), metrics=["accuracy"])
    before = maml.get_weights()
    history = maml.fit(tf.data.Dataset.from_tensors(episode).repeat(), steps_per_epoch=3,
                       epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert max(np.abs(a - b).max() for a, b in zip(before, maml.get_weights())) > 1e-4
    adapted = maml.adapt(support_x[0], support_y[0])
    expected = adapted.predict(query_x[0], verbose=0)
    maml.save(tmp_path / "maml.keras")
    loaded = keras.models.load_model(tmp_path / "maml.keras")
    np.testing.assert_allclose(
        loaded.adapt(support_x[0], support_y[0]).predict(query_x[0], verbose=0), expected,
        rtol=1e-5, atol=1e-6,
    )
    maml.export_adaptive(str(tmp_path / "adaptive"))
    served = tf.saved_model.load(str(tmp_path / "adaptive"))
    np.testing.assert_allclose(
        served.adapt_and_predict(support_x[0], support_y[0], query_x[0]), expected,
        rtol=1e-5, atol=1e-6,
    )


def cudnn_capable_model(use_cudnn="auto"):
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 4)(tokens)
    x = keras.layers.LSTM(3, return_sequences=True, use_cudnn=use_cudnn)(x)
    x = keras.layers.GRU(3, use_cudnn=use_cudnn)(x)
    return keras.Model(tokens, keras.layers.Dense(2)(x))


def test_recurrent_layers_leave_cudnn_for_a_kernel_with_second_derivatives(monkeypatch):
    """With a GPU pretended, Keras picks cuDNN, whose gradient has no gradient."""
    import sys  # noqa: PLC0415

    monkeypatch.setattr(sys.modules["keras.src.backend.tensorflow.rnn"],
                        "_is_gpu_available", lambda: True)
    rng = np.random.default_rng(0)
    tasks = (rng.integers(1, 20, (2, 4, 5)).astype(np.int32), np.tile([0, 1], (2, 2)).astype(np.int32))
    maml = tf_maml.MAML(cudnn_capable_model(), inner_lr=0.1)
    maml.compile(optimizer="sgd", loss=sparse_ce())
    assert np.isfinite(maml.train_on_batch(tasks, tasks, return_dict=True)["loss"])
    # Guard: without tf_maml's choice of kernel, the same step fails as on a GPU.
    monkeypatch.setattr(tf_maml.learners.base, "exact_second_order",
                        lambda xla: contextlib.nullcontext())
    maml = tf_maml.MAML(cudnn_capable_model(), inner_lr=0.1)
    maml.compile(optimizer="sgd", loss=sparse_ce())
    with pytest.raises(LookupError, match="CudnnRNNBackprop"):
        maml.train_on_batch(tasks, tasks)


def test_recurrent_layer_pinned_to_cudnn_is_refused_before_compute():
    maml = tf_maml.MAML(cudnn_capable_model(use_cudnn=True), inner_lr=0.1)
    maml.compile(optimizer="sgd", loss=sparse_ce())
    tasks = (np.ones((2, 4, 5), np.int32), np.tile([0, 1], (2, 2)).astype(np.int32))
    with pytest.raises(ValueError, match="LSTM layer 'lstm.*' has use_cudnn=True.*use_cudnn='auto'"):
        maml.fit(tasks, tasks, verbose=0)
