"""Serving adapted policies: a policy adapted to given trajectories, and the adaptation exported.

Both are pure functions of the meta-learned weights and the trajectories
(no variable is written), so many threads may adapt at once.
"""

import keras
import tensorflow as tf

from tf_maml.learners import guards
from tf_maml.learners import request_guards
from tf_maml.keras_patches import export_value
from tf_maml.learners.arguments import checked_int


def _checked_trajectories(meta, observations, actions, rewards, mask):
    """The trajectories as tensors `[K, H, ...]`, or an error naming the shape received."""
    observations = tf.convert_to_tensor(observations, tf.float32)
    actions = tf.convert_to_tensor(actions, meta.distribution.action_dtype)
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    mask = tf.ones_like(rewards) if mask is None else tf.convert_to_tensor(mask, tf.float32)
    size = meta.env.observation_size
    expected = {
        "observations": (observations, 3, (size,)),
        "actions": (actions, 2 + len(meta.distribution.action_shape),
                    meta.distribution.action_shape),
        "rewards": (rewards, 2, ()), "mask": (mask, 2, ()),
    }
    leading = tuple(observations.shape[:2])
    for name, (value, rank, trailing) in expected.items():
        if (value.shape.rank != rank or tuple(value.shape[2:]) != tuple(trailing)
                or tuple(value.shape[:2]) != leading):
            raise ValueError(
                f"`{name}` must have shape [trajectories, steps{''.join(f', {d}' for d in trailing)}]"
                f" matching observations' {list(leading)}; received {list(value.shape)}.")
    return observations, actions, rewards, mask


def adapted_values(meta, observations, actions, rewards, mask, steps):
    """The policy's weights and state after `steps` inner steps on the trajectories, which
    were sampled with the meta-learned policy (their log-probabilities are its)."""
    params, state = meta.inner_loop.current_values()
    flat_observations = tf.reshape(observations, [-1, meta.env.observation_size])
    flat_actions = tf.reshape(actions, tf.concat([[-1], tf.shape(actions)[2:]], 0))
    outputs = meta.inner_loop.forward(params, state, flat_observations, training=False)[0]
    log_probs = tf.reshape(meta.distribution.log_prob(outputs, flat_actions), tf.shape(rewards))
    trajectories = meta.with_advantages({"observations": observations, "actions": actions,
                                         "rewards": rewards, "mask": mask,
                                         "log_probs": log_probs})
    rule_state = None
    for step in range(steps):  # later steps weigh the same samples by the probability ratio
        params, state, rule_state = meta._adapt(params, state, trajectories, True, rule_state,
                                                step)
    return params, state


def _named(observations, actions, rewards, mask):
    return [("observations", observations), ("actions", actions), ("rewards", rewards),
            ("mask", mask)]


def adapted_policy(meta, observations, actions, rewards, mask=None, steps=1):
    """`meta.policy` adapted to a task's trajectories, as a new `keras.Model`."""
    steps = checked_int(steps, "steps", 0)
    trajectories = _checked_trajectories(meta, observations, actions, rewards, mask)
    request_guards.check_request(_named(*trajectories), weights=("mask",))
    params, state = adapted_values(meta, *trajectories, steps)
    request_guards.check_adapted(guards.all_finite(params + state), steps, meta.fault_hint)
    return meta.adapted_model(params, state)


def export_adaptive(meta, filepath, steps=1):
    """Writes a SavedModel whose `adapt_and_act` adapts to trajectories and acts (see
    `MetaPolicyGradient.export_adaptive`)."""
    steps = checked_int(steps, "steps", 0)
    size = meta.env.observation_size
    action_shape, action_dtype = meta.distribution.action_shape, meta.distribution.action_dtype

    def adapt_and_act(observations, actions, rewards, mask, query_observations):
        named = _named(observations, actions, rewards, mask)
        checks = request_guards.request_assertions(
            named + [("query_observations", query_observations)], weights=("mask",))
        checks.append(tf.debugging.assert_positive(
            tf.reduce_sum(mask), message="the trajectories must hold at least one step"))
        checks += [tf.debugging.assert_equal(
            tf.shape(value)[:2], tf.shape(observations)[:2],
            message=f"{name} must have one entry per step of each trajectory, as observations")
            for name, value in named[1:]]
        with tf.control_dependencies(checks):  # nothing runs on a refused request
            observations, actions, rewards, mask, query_observations = (
                tf.identity(t) for t in (observations, actions, rewards, mask,
                                         query_observations))
        params, state = adapted_values(meta, observations, actions, rewards, mask, steps)
        outputs = meta.inner_loop.forward(params, state, query_observations, training=False)[0]
        with tf.control_dependencies([request_guards.adapted_assertion(
                params + state, steps, meta.divergence_hint())]):
            return tf.debugging.assert_all_finite(
                outputs, "the adapted policy's outputs for query_observations are not finite")

    archive = keras.export.ExportArchive()
    archive.track(meta)
    archive.add_endpoint("adapt_and_act", adapt_and_act, input_signature=[
        tf.TensorSpec([None, None, size], tf.float32, "observations"),
        tf.TensorSpec([None, None, *action_shape], action_dtype, "actions"),
        tf.TensorSpec([None, None], tf.float32, "rewards"),
        tf.TensorSpec([None, None], tf.float32, "mask"),
        tf.TensorSpec([None, size], tf.float32, "query_observations"),
    ])
    export_value(archive, "inner_steps", steps)  # how many steps it adapts, for its users
    archive.write_out(filepath, verbose=False)
