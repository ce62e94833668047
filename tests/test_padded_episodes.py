"""Padded episodes: per-example weights, 0 marking padding, change nothing but the shape.

A padded episode must give the losses, metrics, meta-gradients, moving
statistics and adapted weights of the same episode unpadded (float64, second
order, BatchNorm and TaskNorm, transductive and support-set statistics).
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.runs.step_curves import query_results_by_step
from tf_maml.learners.guards import EpisodeError
from tf_maml.layers import TaskNormalization

from helpers import as_float32, assert_gradients_close, classification_episode, conv_bn_pool_net
from helpers import meta_gradient, sparse_ce

NORMALIZATIONS = {
    "batch": keras.layers.BatchNormalization,
    "task": functools.partial(TaskNormalization, moments="instance"),
}


def pad_set(x, y, positions, rng, junk_label):
    """x, y with junk examples inserted before `positions[t]` in task t; and the weights."""
    xs, ys, ws = [], [], []
    for t, where in enumerate(positions):
        keep_x, keep_y, weight = list(x[t]), list(y[t]), [1.0] * len(x[t])
        for position in sorted(where, reverse=True):
            keep_x.insert(position, 5.0 * rng.standard_normal(x.shape[2:]))
            keep_y.insert(position, junk_label)
            weight.insert(position, 0.0)
        xs.append(keep_x)
        ys.append(keep_y)
        ws.append(weight)
    return np.array(xs, x.dtype), np.array(ys, y.dtype), np.array(ws, x.dtype)


def padded(episode, rng, junk_label=-7):
    """`episode` with padding: 3 junk examples per task in each set, at other places per task."""
    (sx, sy), (qx, qy) = episode
    support = pad_set(sx, sy, [[0, 2, 3], [4, 6, 6]][: len(sx)], rng, junk_label)
    query = pad_set(qx, qy, [[6, 6, 6], [1, 3, 5]][: len(qx)], rng, junk_label)
    return support, query


def make_maml(normalization, transductive, steps=2):
    keras.utils.set_random_seed(1)
    net = conv_bn_pool_net(image=(4, 4, 1), normalizations=[NORMALIZATIONS[normalization]] * 2)
    return tf_maml.MAML(net, inner_lr=0.3, inner_steps=steps, eval_inner_steps=steps,
                        transductive=transductive)


def compiled(maml):
    maml.compile(optimizer=keras.optimizers.SGD(1.0), loss=sparse_ce(),
                 metrics=["sparse_categorical_accuracy"])
    return maml


@pytest.mark.parametrize("normalization, transductive", [
    ("batch", True), ("batch", False), ("task", False),
])
def test_padded_episode_equals_the_unpadded_one(float64, normalization, transductive):
    rng = np.random.default_rng(0)
    episode = classification_episode(rng, tasks=2, ways=3, shots=2, queries=2, image=(4, 4, 1))
    weighted = padded(episode, rng)
    maml = make_maml(normalization, transductive)
    loss = sparse_ce()
    expected = meta_gradient(maml, episode, loss=loss)
    actual = meta_gradient(maml, weighted, loss=loss)
    assert any(np.abs(g).max() > 1e-3 for g in expected)
    assert_gradients_close(actual, expected, rtol=1e-7)

    compiled(maml)
    logs = [maml.test_on_batch(*e, return_dict=True) for e in (episode, weighted)]
    assert logs[0].keys() == logs[1].keys()
    assert ("served_loss" in logs[0]) == transductive
    # Keras' masked BatchNorm moments divide by count + 1e-7: a relative 1e-7 / count.
    for name in logs[0]:
        assert logs[1][name] == pytest.approx(logs[0][name], rel=1e-7, abs=1e-12), name
    if normalization != "batch" or not transductive:
        return
    # One meta-step each, from the same weights: same weights and moving statistics after.
    start = [v.numpy() for v in maml.model.variables]
    after = []
    for e in (episode, weighted):
        for v, value in zip(maml.model.variables, start):
            v.assign(value)
        maml.train_on_batch(*e)
        after.append([v.numpy() for v in maml.model.variables])
    assert_gradients_close(after[1], after[0], rtol=1e-7)


def test_adapted_weights_and_step_curves_ignore_padding(float64):
    rng = np.random.default_rng(1)
    episode = classification_episode(rng, tasks=2, ways=3, shots=2, queries=2, image=(4, 4, 1))
    weighted = padded(episode, rng)  # padding labels -7: never read
    maml = compiled(make_maml("batch", True, steps=3))
    loop = maml.inner_loop
    params, state = loop.current_values()
    for t in range(2):
        (sx, sy), _ = episode
        (psx, psy, psw), _ = weighted
        plain, _, _ = loop.adapt(params, state, sx[t], sy[t], 3, False)
        masked, _, _ = loop.adapt(params, state, psx[t], psy[t], 3, False, weights=psw[t])
        # Keras' masked BatchNorm moments divide by count + 1e-7 (see above).
        assert_gradients_close(masked, plain, rtol=1e-6)
    batches = [tf.data.Dataset.from_tensors(e) for e in (episode, weighted)]
    curves = [query_results_by_step(maml, b, num_tasks=2, max_steps=3) for b in batches]
    for name in ("loss", "accuracy", "served_loss", "served_accuracy"):
        np.testing.assert_allclose(curves[1][name], curves[0][name], rtol=1e-6, err_msg=name)
    predictions = [maml.predict(b, verbose=0) for b in batches]
    (_, qy, qw) = weighted[1]
    np.testing.assert_allclose(predictions[1][qw > 0].reshape(predictions[0].shape),
                               predictions[0], rtol=1e-6)


def test_tasks_of_different_sizes_share_one_padded_shape(float64):
    """A padded meta-batch of tasks with 4 and 6 support examples: the mean of the tasks alone."""
    rng = np.random.default_rng(2)
    (sx, sy), (qx, qy) = classification_episode(rng, tasks=2, ways=2, shots=3, queries=2,
                                                image=(4, 4, 1))
    sw = np.ones(sy.shape)
    sw[0, [1, 4]] = 0.0  # task 0 keeps 4 of its 6 support examples
    maml = make_maml("batch", True)
    loss = sparse_ce()
    both = meta_gradient(maml, ((sx, sy, sw), (qx, qy, np.ones(qy.shape))), loss=loss)
    keep = sw[0] > 0
    alone = [
        meta_gradient(maml, ((sx[:1, keep], sy[:1, keep]), (qx[:1], qy[:1])), loss=loss),
        meta_gradient(maml, ((sx[1:], sy[1:]), (qx[1:], qy[1:])), loss=loss),
    ]
    assert_gradients_close(both, [(a + b) / 2 for a, b in zip(*alone)], rtol=1e-8)


def test_bool_weights_in_fit_and_evaluate_from_a_dataset():
    rng = np.random.default_rng(3)
    episode = as_float32(classification_episode(rng, tasks=2, ways=3, shots=2, queries=2,
                                                image=(4, 4, 1)))
    weighted = tuple((x.astype(np.float32), y, w > 0) for x, y, w in padded(episode, rng))
    datasets = [tf.data.Dataset.from_tensors(e) for e in (episode, weighted)]
    maml = compiled(make_maml("batch", True))
    start = [v.numpy() for v in maml.model.variables]
    history = maml.fit(datasets[1].repeat(3), verbose=0)
    assert np.isfinite(history.history["loss"]).all() and int(maml.optimizer.iterations) == 3
    logs = [maml.evaluate(d, return_dict=True, verbose=0) for d in datasets]
    for name in logs[0]:
        assert logs[1][name] == pytest.approx(logs[0][name], rel=1e-5), name
    for v, value in zip(maml.model.variables, start):  # the same 3 steps, unpadded
        v.assign(value)
    unpadded = maml.fit(datasets[0].repeat(3), verbose=0)
    np.testing.assert_allclose(history.history["loss"], unpadded.history["loss"], rtol=1e-5)


def test_maml_plus_plus_multi_step_loss_with_recomputation_ignores_padding(float64):
    rng = np.random.default_rng(6)
    episode = classification_episode(rng, tasks=2, ways=3, shots=2, queries=2, image=(4, 4, 1))
    keras.utils.set_random_seed(1)
    net = conv_bn_pool_net(image=(4, 4, 1))
    maml = tf_maml.MAMLPlusPlus(net, inner_lr=0.3, inner_steps=2, recompute_inner_steps=True)
    loss = sparse_ce()
    expected = meta_gradient(maml, episode, loss=loss)
    assert_gradients_close(meta_gradient(maml, padded(episode, rng), loss=loss), expected,
                           rtol=1e-7)


@pytest.mark.parametrize("change, error, message", [
    (lambda s, q: (s, q[:2]), ValueError, "per-example weights go in both sets or in neither"),
    (lambda s, q: ((s[0], s[1], s[2][:, :-1]), q), ValueError,
     r"support_weight must have shape \[tasks, examples\] = \(2, 9\)"),
    (lambda s, q: (s, (q[0], q[1], q[2][..., None])), ValueError,
     r"query_weight must have shape \[tasks, examples\]"),
    (lambda s, q: (s, (q[0], q[1], q[2].astype(str))), TypeError, "query_weight must be numeric"),
])
def test_bad_weights_are_refused_before_compute(change, error, message):
    rng = np.random.default_rng(4)
    support, query = padded(classification_episode(rng, image=(4, 4, 1)), rng)
    maml = compiled(make_maml("batch", True))
    with pytest.raises(error, match=message):
        maml.fit(tf.data.Dataset.from_tensors(change(support, query)), verbose=0)


def test_a_task_of_padding_only_is_an_empty_task():
    rng = np.random.default_rng(5)
    support, query = padded(classification_episode(rng, image=(4, 4, 1)), rng)
    support[2][1] = 0.0  # task 1's support set is all padding
    maml = compiled(make_maml("batch", True))
    with pytest.raises(EpisodeError, match=r"empty: 2 tasks, 0 support"):
        maml.fit(tf.data.Dataset.from_tensors((support, query)), verbose=0)
    assert int(maml.optimizer.iterations) == 0
