"""Trajectories of a batch of task environments, sampled inside the graph.

A rollout is one `tf.while_loop` over the horizon: the policy's forward
pass, a sample from its action distribution, and the environments' step,
for every trajectory of every task at once. Its randomness (action noise,
initial states) is drawn ahead from one stateless seed per task, so a
rollout is a pure function of the policy's weights, the tasks and the
seeds, and a trajectory does not depend on which other tasks share the batch.
"""

import tensorflow as tf

# The fields of a batch of trajectories, each [..., horizon] (+ action or observation shape).
FIELDS = ("observations", "actions", "log_probs", "rewards", "mask")


def trajectory_seeds(seeds, count):
    """`[tasks, count, 2]` seeds from each task's `[2]` seed: one per trajectory."""
    return tf.map_fn(lambda seed: tf.random.experimental.stateless_split(seed, count),
                     seeds, fn_output_signature=tf.int32)


def sample(policy_fn, distribution, env, tasks, seeds, trajectories):
    """`trajectories` trajectories per task, each `env.horizon` steps long.

    Args:
        policy_fn: `observations [B, obs] -> distribution parameters [B, P]`.
        distribution: the policy's `tf_maml.rl.distributions` distribution.
        env: a `tf_maml.rl.envs.TaskEnv`.
        tasks: `[T, task_size]` task parameters.
        seeds: `[T, 2]` int32, one stateless seed per task.
        trajectories: trajectories per task, a Python int.

    Returns:
        A dict of `FIELDS`, each `[T, trajectories, horizon, ...]`:
        observations (float32), actions as sampled (before the environment
        clips them), their log-probabilities under the policy, rewards, and
        `mask`, 1.0 for the steps up to and including the one where an
        episode ended, 0.0 after (rewards there are 0). For an environment
        that `reports_success`, also `success` `[T, trajectories]`: 1.0 for
        a trajectory that succeeded at some step.
    """
    num_tasks = tf.shape(tasks)[0]
    batch = num_tasks * trajectories
    per_trajectory = tf.reshape(trajectory_seeds(seeds, 2), [-1, 2, 2])  # per task: noise, reset
    horizon = env.horizon
    noise = tf.map_fn(
        lambda seed: distribution.noise(seed, [trajectories, horizon]),
        per_trajectory[:, 0], fn_output_signature=tf.float32)
    noise = tf.reshape(noise, tf.concat([[batch, horizon], tf.shape(noise)[3:]], 0))
    reset_seeds = tf.reshape(trajectory_seeds(per_trajectory[:, 1], trajectories), [batch, 2])
    env_tasks = tf.repeat(tasks, trajectories, axis=0)
    state, observation = env.reset(env_tasks, reset_seeds)

    def body(t, state, observation, alive, arrays):
        params = policy_fn(observation)
        action = distribution.sample(params, noise[:, t])
        log_prob = distribution.log_prob(params, action)
        state, next_observation, reward, done = env.step(env_tasks, state, action)
        values = (observation, action, log_prob, reward * alive, alive)
        arrays = [a.write(t, tf.cast(v, a.dtype)) for a, v in zip(arrays, values)]
        alive = alive * (1.0 - tf.cast(done, tf.float32))
        return t + 1, state, tf.cast(next_observation, tf.float32), alive, arrays

    dtypes = (tf.float32, distribution.action_dtype, tf.float32, tf.float32, tf.float32)
    arrays = [tf.TensorArray(dtype, size=horizon) for dtype in dtypes]
    loop_vars = (tf.constant(0), state, tf.cast(observation, tf.float32),
                 tf.ones([batch], tf.float32), arrays)
    _, state, _, _, arrays = tf.while_loop(lambda t, *_: t < horizon, body, loop_vars)
    result = {}
    if env.reports_success:
        result["success"] = tf.reshape(tf.cast(env.succeeded(state), tf.float32),
                                       [num_tasks, trajectories])
    for name, array in zip(FIELDS, arrays):
        stacked = array.stack()  # [horizon, batch, ...]
        stacked = tf.transpose(stacked, [1, 0] + list(range(2, stacked.shape.rank)))
        result[name] = tf.reshape(
            stacked, tf.concat([[num_tasks, trajectories, horizon], tf.shape(stacked)[2:]], 0))
    return result


def returns(trajectories):
    """Each trajectory's undiscounted return: `[..., trajectories]`."""
    return tf.reduce_sum(trajectories["rewards"], -1)


# What `environment_fault_code` finds at fault, by code - 1.
ENVIRONMENT_OUTPUTS = ("the observations the environment returned",
                       "the rewards the environment returned")


def environment_fault_code(trajectories):
    """1 if one task's trajectories hold non-finite observations, 2 rewards, for finite
    actions; else 0 (a float32 scalar)."""
    actions = trajectories["actions"]
    finite_actions = (tf.reduce_all(tf.math.is_finite(actions))
                      if actions.dtype.is_floating else tf.constant(True))
    bad = [~tf.reduce_all(tf.math.is_finite(trajectories[field]))
           for field in ("observations", "rewards")]
    code = tf.where(bad[0], 1.0, tf.where(bad[1], 2.0, 0.0))
    return tf.where(finite_actions, code, 0.0)
