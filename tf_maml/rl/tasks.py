"""Batches of tasks for meta-reinforcement learning, as a tf.data pipeline."""

import tensorflow as tf

from tf_maml.learners.arguments import checked_int


def task_batches(env, meta_batch_size=20, seed=0, num_batches=None, start_batch=0):
    """A dataset of task batches `{"tasks": [T, task_size], "seeds": [T, 2]}`.

    `tasks` are drawn from `env.sample_tasks`; `seeds` are each task's
    stateless seed for its rollouts. Batch `i` is a pure function of
    `(seed, i)`: reproducible, and `start_batch` continues a stream (as
    `BackupAndRestore` resumes a run). Held-out tasks: another `seed`.

    Args:
        env: a `tf_maml.rl.envs.TaskEnv`.
        meta_batch_size: tasks per batch.
        seed: the stream's seed (an int).
        num_batches: batches in the dataset (None: endless).
        start_batch: index of the first batch.
    """
    meta_batch_size = checked_int(meta_batch_size, "meta_batch_size", 1)
    start_batch = checked_int(start_batch, "start_batch", 0)
    if num_batches is not None:
        num_batches = checked_int(num_batches, "num_batches", 1)
    seed = checked_int(seed, "seed", 0)
    stop = None if num_batches is None else start_batch + num_batches
    indices = tf.data.Dataset.counter(start_batch) if stop is None else \
        tf.data.Dataset.range(start_batch, stop)

    def batch(index):
        batch_seed = tf.stack([tf.constant(seed, tf.int64), index])
        task_seed, rollout_seed = tf.unstack(
            tf.random.experimental.stateless_split(batch_seed, 2))
        tasks = tf.cast(env.sample_tasks(meta_batch_size, task_seed), tf.float32)
        seeds = tf.random.stateless_uniform([meta_batch_size, 2], rollout_seed,
                                            minval=None, maxval=None, dtype=tf.int32)
        return {"tasks": tf.ensure_shape(tasks, [meta_batch_size, env.task_size]),
                "seeds": seeds}

    return indices.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .prefetch(tf.data.AUTOTUNE)


def checked_task_batch(env, data):
    """Refuses, before any compute, data that is not task batches for `env`."""
    if data is None:
        return
    spec = data.element_spec if isinstance(data, tf.data.Dataset) else None
    if spec is None and isinstance(data, dict):
        spec = {k: tf.TensorSpec.from_tensor(tf.convert_to_tensor(v)) for k, v in data.items()}
    expected = (f"batches {{'tasks': [T, {env.task_size}] float32, 'seeds': [T, 2] int32}} "
                "(tf_maml.rl.task_batches(env, ...))")
    if not isinstance(spec, dict) or set(spec) != {"tasks", "seeds"}:
        raise ValueError(f"{type(env).__name__} meta-learning takes {expected}; received "
                         f"{spec if spec is not None else type(data).__name__}.")
    tasks, seeds = spec["tasks"], spec["seeds"]
    if tasks.shape.rank != 2 or tasks.shape[-1] != env.task_size or not tasks.dtype.is_floating:
        raise ValueError(f"`tasks` must be [T, {env.task_size}] floats for "
                         f"{type(env).__name__}; received {tasks}.")
    if seeds.shape.rank != 2 or seeds.shape[-1] != 2 or seeds.dtype != tf.int32:
        raise ValueError(f"`seeds` must be [T, 2] int32 stateless seeds; received {seeds}.")
