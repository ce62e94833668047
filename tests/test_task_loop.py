"""How a step runs its tasks (while loop, unrolled, tasks at once) and recomputation.

These are speed and memory options: each must leave the meta-gradient
exactly as the default computes it (float64, to rounding).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.engine import task_loop
from tf_maml.engine.inner_loop import InnerLoop

from helpers import as_float32, classification_episode, conv_bn_pool_net, sparse_ce
from helpers import (
    assert_directional_derivatives_match, assert_gradients_close, meta_gradient,
)


def _reference_and_net(seed=5):
    keras.utils.set_random_seed(seed)
    net = conv_bn_pool_net()
    return net, net.get_weights()


@pytest.mark.parametrize(
    "options",
    [
        {"task_loop": "unrolled"},
        {"task_loop": "while", "parallel_tasks": 1},
        {"task_loop": "while", "parallel_tasks": 3},
        {"recompute_inner_steps": True},
        {"recompute_inner_steps": True, "task_loop": "unrolled"},
    ],
)
def test_task_loop_and_recomputation_leave_the_meta_gradient_unchanged(float64, options):
    episode = classification_episode(np.random.default_rng(5), tasks=3)
    net, weights = _reference_and_net()
    expected = meta_gradient(
        tf_maml.MAML(net, inner_lr=0.4, inner_steps=2), episode, loss=sparse_ce()
    )
    net.set_weights(weights)
    actual = meta_gradient(
        tf_maml.MAML(net, inner_lr=0.4, inner_steps=2, **options), episode, loss=sparse_ce()
    )
    assert_gradients_close(actual, expected, rtol=1e-10)


def test_recomputed_inner_steps_match_finite_differences_under_xla(float64):
    episode = classification_episode(np.random.default_rng(7))
    maml = tf_maml.MAML(conv_bn_pool_net(), inner_lr=0.4, inner_steps=2,
                        recompute_inner_steps=True)
    assert_directional_derivatives_match(
        maml, episode, directions=4, loss=sparse_ce(), jit_compile=True
    )


@pytest.mark.parametrize("family", ["meta_sgd", "maml_plus_plus"])
def test_recomputation_carries_learned_step_sizes(float64, family):
    """Meta-SGD's and MAML++'s step sizes are inputs of the recomputed step too."""
    episode = classification_episode(np.random.default_rng(8))
    net, weights = _reference_and_net(seed=8)
    make = {
        "meta_sgd": lambda **kw: tf_maml.MetaSGD(net, inner_lr=0.3, inner_steps=2, **kw),
        "maml_plus_plus": lambda **kw: tf_maml.MAMLPlusPlus(
            net, inner_lr=0.3, inner_steps=2, per_step_batch_norm=True, **kw
        ),
    }[family]
    expected = meta_gradient(make(), episode, loss=sparse_ce())
    net.set_weights(weights)
    actual = meta_gradient(make(recompute_inner_steps=True), episode, loss=sparse_ce())
    assert len(actual) > len(net.trainable_variables)  # step sizes are meta-trained too
    assert_gradients_close(actual, expected, rtol=1e-10)


def test_unrolled_tasks_need_a_fixed_meta_batch_size():
    x = np.zeros((2, 3, 8, 8, 1), np.float32)
    y = np.zeros((2, 3), np.int32)
    episodes = tf.data.Dataset.from_tensors(((x, y), (x, y))).unbatch().batch(2)  # shape None
    maml = tf_maml.MAML(conv_bn_pool_net(), task_loop="unrolled")
    maml.compile(optimizer="sgd", loss=sparse_ce())
    with pytest.raises(ValueError, match="unrolled.*fixed number of tasks"):
        maml.fit(episodes, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task_loop": "vectorized"}, "task_loop"),
        ({"parallel_tasks": 0}, "parallel_tasks"),
        ({"parallel_tasks": "many"}, "parallel_tasks"),
    ],
)
def test_bad_task_loop_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tf_maml.MAML(tf_maml.nets.mlp(), **kwargs)


def test_task_loop_options_survive_saving(tmp_path):
    maml = tf_maml.MAML(tf_maml.nets.mlp(), task_loop="unrolled", parallel_tasks=4,
                        recompute_inner_steps=True)
    maml.compile(optimizer="adam", loss="mse")
    maml.save(tmp_path / "meta.keras")
    loaded = keras.models.load_model(tmp_path / "meta.keras")
    assert (loaded.task_loop, loaded.parallel_tasks, loaded.recompute_inner_steps) == (
        "unrolled", 4, True
    )


def test_auto_parallel_tasks_runs_fewer_large_tasks_at_once_on_cpu():
    def parallel(support_shape, query_shape):
        return task_loop.auto_parallel_tasks(
            tf.TensorSpec(support_shape), tf.TensorSpec(query_shape)
        )

    omniglot = (28, 28, 1)
    assert parallel((32, 5) + omniglot, (32, 5) + omniglot) == 10
    assert parallel((32, 5) + omniglot, (32, 75) + omniglot) == 4
    assert parallel((16, 20) + omniglot, (16, 20) + omniglot) == 4
    assert parallel((25, 10, 1), (25, 10, 1)) == 10  # sinusoid
    assert parallel((None, None, 4), (None, None, 4)) == 10
    # Several inputs: their values add up (each input alone is below the threshold).
    both = {"image": tf.TensorSpec((16, 5) + omniglot), "other": tf.TensorSpec((16, 5, 30, 30))}
    assert parallel((16, 5) + omniglot, (16, 5) + omniglot) == 10
    assert parallel((16, 5, 30, 30), (16, 5, 30, 30)) == 10
    assert task_loop.auto_parallel_tasks(both, both) == 4
    small = {"a": tf.TensorSpec((16, 5, 40)), "b": tf.TensorSpec((16, 5, 40))}
    assert task_loop.auto_parallel_tasks(small, small) == 10


@pytest.mark.parametrize("family", ["maml", "maml_plus_plus", "reptile_adam"])
def test_an_inner_step_is_traced_once_for_all_steps(monkeypatch, family):
    """Tracing time stays flat in the inner steps: the step index is a tensor, so
    per-step weights (MAML++) and step counts (Adam's bias correction) trace once."""
    traced = []
    step = InnerLoop.step

    def counting_step(self, *args, **kwargs):
        traced.append(args[-1])  # Python runs only while tracing
        return step(self, *args, **kwargs)

    monkeypatch.setattr(InnerLoop, "step", counting_step)
    net = conv_bn_pool_net()
    maml = {
        "maml": lambda: tf_maml.MAML(net, inner_lr=0.4, inner_steps=3),
        "maml_plus_plus": lambda: tf_maml.MAMLPlusPlus(net, inner_lr=0.4, inner_steps=3,
                                                       multi_step_loss_steps=0),
        "reptile_adam": lambda: tf_maml.Reptile(net, inner_steps=3, inner_optimizer="adam"),
    }[family]()
    maml.compile(optimizer="sgd", loss=sparse_ce())
    episode = as_float32(classification_episode(np.random.default_rng(2)))
    maml.train_on_batch(*episode)
    # train_on_batch may trace the step twice (variable creation); each trace
    # runs the while loop's body once, i.e. one task, whose 3 steps share one trace.
    assert len(traced) in (1, 2)
    assert all(isinstance(s, tf.Tensor) for s in traced)
