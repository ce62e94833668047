"""Reliability, second round (issue 26): a served model never answers garbage, and bad
input is named where it enters (docs/reliability.md, "Serving never answers garbage" and
"Bad input is refused where it enters")."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import sparse_ce

import tf_maml
from tf_maml.learners.guards import EpisodeError, TrainingDivergedError
from tf_maml.learners.request_guards import AdaptationDivergedError, NonFiniteInputError
from tf_maml.rl import envs


def relu_classifier(features=4, classes=3):
    # A ReLU hides a NaN kernel: the unguarded answer looked plausible.
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(classes)])


def compiled(model, inner_lr=0.1, **options):
    meta = tf_maml.MAML(model, inner_lr=inner_lr, **options)
    meta.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_ce())
    return meta


def task(seed=0, examples=6, features=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((examples, features)).astype(np.float32),
            np.arange(examples, dtype=np.int32) % 3)


def episodes(count=3, tasks=2, seed=0):
    """`count` episode batches `((sx, sy), (qx, qy))` of `tasks` tasks, as numpy arrays."""
    def one(i):
        (sx, sy), (qx, qy) = task(seed + 2 * i), task(seed + 2 * i + 1)
        stack = lambda a: np.stack([a] * tasks)  # noqa: E731
        return (stack(sx), stack(sy)), (stack(qx), stack(qy))
    return [one(i) for i in range(count)]


def fitted():
    keras.utils.set_random_seed(0)
    meta = compiled(relu_classifier())
    meta.fit(tf.data.Dataset.from_tensors(episodes(1)[0]), verbose=0)
    return meta


def with_nan(array, index=(3, 1)):
    array = array.copy()
    array[index] = np.nan
    return array


def as_dataset(batches):
    return tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=tf.nest.map_structure(
            lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), batches[0]))


# ---------------------------------------------------------------------------
# adapt(): the request and the adapted weights.

def test_adapt_refuses_a_nan_feature_naming_input_and_example():
    meta = fitted()
    x, y = task()
    with pytest.raises(NonFiniteInputError, match=r"^support_x holds a NaN or infinite value "
                       r"in 1 of its 6 examples \(the first: example 3\)"):
        meta.adapt(with_nan(x), y)
    x[2, 0] = np.inf
    with pytest.raises(NonFiniteInputError, match=r"first: example 2"):
        meta.adapt(x, y)


def test_adapt_refuses_non_finite_regression_labels():
    meta = tf_maml.MAML(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    meta.compile(optimizer="adam", loss="mse")
    x = np.ones((4, 2), np.float32)
    meta.fit(tf.data.Dataset.from_tensors(((x[None], x[None, :, :1]),) * 2), verbose=0)
    with pytest.raises(NonFiniteInputError, match=r"^support_y holds a NaN"):
        meta.adapt(x, with_nan(x[:, :1], (1, 0)))


def test_a_diverging_adaptation_raises_instead_of_answering_nan():
    meta = fitted()
    x, y = task()
    meta.adapt(x, y, steps=2)  # the weights adapt fine at the meta-learned step size...
    diverging = compiled(meta.model, inner_lr=1e8)
    with pytest.raises(AdaptationDivergedError, match=r"after 30 inner steps on a finite "
                       r"request.*Its input was finite: the steps diverged.*inner_lr=1"):
        diverging.adapt(1e3 * x, y, steps=30)


def test_weights_already_non_finite_are_named_as_the_cause():
    meta = fitted()
    bias = meta.model.layers[-1].bias
    bias.assign(with_nan(bias.numpy(), (0,)))
    with pytest.raises(AdaptationDivergedError, match=r"weights are not finite before the "
                       r"step \(1 weights, e.g. .*bias\): they were set or loaded so"):
        meta.adapt(*task())
    with pytest.raises(TrainingDivergedError, match=r"meta-step 2 is not finite.*weights are "
                       r"not finite before the step"):
        meta.train_on_batch(*episodes(1)[0])
    # A NaN behind a ReLU gives finite losses and gradients: fit, evaluate and predict
    # refuse such weights before any step.
    kernel = meta.model.layers[0].kernel
    bias.assign(np.zeros(3, np.float32))
    kernel.assign(with_nan(kernel.numpy(), (0, 0)))
    for call in (meta.fit, meta.evaluate, meta.predict):
        with pytest.raises(TrainingDivergedError, match=r"weights are not finite \(1 weights, "
                           r"e.g. .*kernel\): they were set or loaded so"):
            call(tf.data.Dataset.from_tensors(episodes(1)[0]), verbose=0)


# ---------------------------------------------------------------------------
# The adaptive SavedModel: each bad request fails the served call, naming the input.

def test_adaptive_saved_model_refuses_bad_requests_naming_them(tmp_path):
    meta = fitted()
    meta.export_adaptive(str(tmp_path / "adaptive"))
    loaded = tf.saved_model.load(str(tmp_path / "adaptive"))  # holds the variables
    served = loaded.adapt_and_predict
    x, y = task()
    np.testing.assert_allclose(served(x, y, x), meta.adapt(x, y)(x), atol=1e-5)
    for request, message in [
        ((with_nan(x), y, x), "support_x holds a NaN or infinite value"),
        ((x, y, with_nan(x)), "query_x holds a NaN or infinite value"),
        ((x, y[:5], x), r"support_y must hold one entry per support example"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            served(*request)
    signature = loaded.signatures["serving_default"]  # what saved_model_cli runs
    with pytest.raises(tf.errors.InvalidArgumentError, match="support_x holds a NaN"):
        signature(support_x=with_nan(x), support_y=y, query_x=x)
    kernel = meta.model.layers[0].kernel  # an adaptation that diverges in the graph
    meta.inner_optimizer = tf_maml.rules.sgd(1e8)
    meta.export_adaptive(str(tmp_path / "diverging"), steps=30)
    loaded_diverging = tf.saved_model.load(str(tmp_path / "diverging"))
    diverging = loaded_diverging.adapt_and_predict
    assert np.isfinite(kernel.numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="The adaptation diverged: after "
                       "30 inner steps"):
        diverging(1e3 * x, y, x)


# ---------------------------------------------------------------------------
# predict() over episodes, and the faults of training steps named from the data.

def test_predict_refuses_non_finite_episodes_and_diverged_predictions():
    meta = fitted()
    (sx, sy), (qx, qy) = episodes(1)[0]
    with pytest.raises(EpisodeError, match=r"A prediction episode batch holds a NaN or "
                       r"infinite value in query_x"):
        meta.predict(((sx, sy), with_nan(qx, (0, 1, 1))), verbose=0)
    assert meta.predict(((sx, sy), qx), verbose=0).shape == (2, 6, 3)
    meta.eval_inner_steps, meta.inner_optimizer = 30, tf_maml.rules.sgd(1e8)
    with pytest.raises(TrainingDivergedError, match=r"predictions after adaptation of a "
                       r"prediction batch are not finite.*from finite episodes"):
        meta.predict(((1e3 * sx, sy), qx), verbose=0)


@pytest.mark.parametrize("where", ["support_x", "query_y", "support_weight"])
def test_non_finite_data_in_a_meta_step_is_named_not_blamed_on_step_sizes(where):
    batches = [tuple(tuple(np.copy(a) for a in s) for s in b) for b in episodes(3)]
    batches = [((sx, sy, np.ones(sy.shape, np.float32)), (qx, qy, np.ones(qy.shape, np.float32)))
               for (sx, sy), (qx, qy) in batches]
    (sx, _, sw), (_, qy, _) = batches[1]
    if where == "support_x":  # in a padded example: padding must be finite too
        sw[1, 4] = 0.0
        sx[1, 4, 0] = np.nan
    elif where == "support_weight":
        sw[0, 0] = np.nan
    meta = compiled(relu_classifier() if where != "query_y" else keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1)]))
    if where == "query_y":  # float labels: a regression
        meta.compile(optimizer="adam", loss="mse")
        batches = [((sx, sy[..., None].astype(np.float32), sw),
                    (qx, qy[..., None].astype(np.float32), qw))
                   for (sx, sy, sw), (qx, qy, qw) in batches]
        batches[1][1][1][0, 2, 0] = np.inf
    initial = [w.numpy().copy() for w in meta.model.weights]
    with pytest.raises(EpisodeError, match=rf"meta-step 2 holds a NaN or infinite value in "
                       rf"{where}\. The update of that step was skipped.*The data is at fault"):
        meta.fit(as_dataset(batches), verbose=0)
    assert int(meta.optimizer.iterations) == 1
    assert any((w.numpy() != w0).any() for w, w0 in zip(meta.model.weights, initial))


def test_negative_example_weights_are_refused_not_descended():
    batches = [((sx, sy, np.ones(sy.shape, np.float32)), (qx, qy, np.ones(qy.shape, np.float32)))
               for (sx, sy), (qx, qy) in episodes(2)]
    batches[0][1][2][1, 3] = -1.0  # one negative weight
    meta = compiled(relu_classifier())
    with pytest.raises(EpisodeError, match=r"meta-step 1 holds a negative value in "
                       r"query_weight"):
        meta.fit(as_dataset(batches), verbose=0)
    batches[0][1][2][:] = -1.0  # all negative: once reported as "empty"
    with pytest.raises(EpisodeError, match=r"holds a negative value in query_weight"):
        meta.evaluate(as_dataset(batches), verbose=0)
    assert int(meta.optimizer.iterations) == 0


# ---------------------------------------------------------------------------
# A user rule whose update does not give one value per weight.

class FirstWeightOnly(tf_maml.rules.Rule):
    """A faulty rule: it steps the first weight and drops (or repeats) the others."""

    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def init(self, params):
        return ()

    def update(self, grads, state, params, step):
        first = params[0] - 0.1 * grads[0]
        if self.fault == "fewer":
            return [first], state
        if self.fault == "more":
            return [first] + list(params) , state
        return [first[:1]] + list(params[1:]), state

    def get_config(self):
        return {"fault": self.fault}


@pytest.mark.parametrize("fault, message", [
    ("fewer", r"FirstWeightOnly.update \(.*\) returned 1 new weights for the 4 weights"),
    ("more", r"returned 5 new weights for the 4 weights"),
    ("shape", r"returned shape \(1, 8\) for weight 0, of shape \(4, 8\)"),
])
def test_a_rule_update_of_the_wrong_count_or_shape_is_named_with_the_rule(fault, message):
    meta = tf_maml.MAML(relu_classifier(), inner_optimizer=FirstWeightOnly(fault))
    meta.compile(optimizer="adam", loss=sparse_ce())
    with pytest.raises(ValueError, match=message):
        meta.fit(tf.data.Dataset.from_tensors(episodes(1)[0]), verbose=0)


# ---------------------------------------------------------------------------
# Reinforcement learning: environment arguments, NaN rewards in serving (in training:
# tests/test_rl_meta_learner.py).

@pytest.mark.parametrize("arguments, message", [
    ({"horizon": 0}, r"`horizon` must be an integer >= 1; received 0"),
    ({"horizon": 2.5}, r"`horizon` must be an integer >= 1; received 2.5"),
    ({"goal_range": -1}, r"`goal_range` must be a positive number; received -1"),
    ({"goal_range": float("nan")}, r"`goal_range` must be a positive number; received nan"),
])
def test_environment_arguments_are_checked(arguments, message):
    with pytest.raises(ValueError, match=message):
        envs.Navigation2D(**arguments)


def small_policy_learner(env):
    keras.utils.set_random_seed(1)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(4,)), env,
                                         inner_lr=0.3, trajectories=2, outer_steps=1)
    meta.compile(optimizer="adam")
    return meta


def test_policy_serving_refuses_nan_rewards_in_python_and_in_the_saved_model(tmp_path):
    env = envs.Navigation2D(horizon=4)
    meta = small_policy_learner(env)
    meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=1), verbose=0)
    rng = np.random.default_rng(0)
    observations = rng.standard_normal((2, 4, 2)).astype(np.float32)
    actions = rng.standard_normal((2, 4, 2)).astype(np.float32)
    rewards = -np.abs(rng.standard_normal((2, 4))).astype(np.float32)
    meta.adapt(observations, actions, rewards)
    with pytest.raises(NonFiniteInputError, match=r"^rewards holds a NaN or infinite value in "
                       r"1 of its 2 examples \(the first: example 1\)"):
        meta.adapt(observations, actions, with_nan(rewards, (1, 2)))
    with pytest.raises(NonFiniteInputError, match=r"^mask holds a negative value"):
        meta.adapt(observations, actions, rewards, mask=-np.ones((2, 4), np.float32))
    meta.export_adaptive(str(tmp_path / "policy"))
    loaded = tf.saved_model.load(str(tmp_path / "policy"))
    served = loaded.adapt_and_act
    mask = np.ones((2, 4), np.float32)
    served(observations, actions, rewards, mask, observations[0])
    assert int(loaded.inner_steps) == 1  # the steps it adapts, recorded (issue 27)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rewards holds a NaN or infinite"):
        served(observations, actions, with_nan(rewards, (1, 2)), mask, observations[0])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="rewards must have one entry per step of each trajectory"):
        served(observations, actions, rewards[:, :3], mask, observations[0])
