"""Sinusoid regression episodes (Finn et al., 2017, section 5.1)."""

import math

import tensorflow as tf

from tf_maml.data.batch_stream import indexed_batches
from tf_maml.data.sizes import check_counts

SIZES = {
    "shots": "support points per task",
    "queries": "query points per task, on which the meta-loss is computed",
    "meta_batch_size": "tasks per batch",
}


def sinusoid_episodes(
    shots=10,
    queries=10,
    meta_batch_size=25,
    seed=0,
    num_batches=None,
    amplitude_range=(0.1, 5.0),
    phase_range=(0.0, math.pi),
    x_range=(-5.0, 5.0),
    start_batch=0,
):
    """A `tf.data.Dataset` of sinusoid regression episode batches.

    Each task is `y = A sin(x - phase)` with amplitude and phase drawn
    uniformly from their ranges; support and query inputs are drawn uniformly
    from `x_range`. Batch `i` is a pure function of `(seed, i)`, so the stream
    is reproducible, and `start_batch` continues it where an earlier run
    stopped.

    Args:
        shots: support points per task (K in the paper).
        queries: query points per task.
        meta_batch_size: tasks per batch.
        seed: integer seed of the stream.
        num_batches: batches to yield; `None` for an endless stream.
        amplitude_range, phase_range, x_range: `(low, high)` of the uniform
            distributions.
        start_batch: index of the first batch.

    Returns:
        A dataset of `((support_x, support_y), (query_x, query_y))`, float32,
        with shapes `[meta_batch_size, shots, 1]` and
        `[meta_batch_size, queries, 1]`.

    Example:

    ```python
    episodes = tf_maml.data.sinusoid_episodes(shots=5, meta_batch_size=25, seed=1)
    (support_x, support_y), (query_x, query_y) = next(iter(episodes))
    ```
    """
    check_counts({"shots": shots, "queries": queries, "meta_batch_size": meta_batch_size}, SIZES)
    for name, (low, high) in (
        ("amplitude_range", amplitude_range),
        ("phase_range", phase_range),
        ("x_range", x_range),
    ):
        if not low <= high:
            raise ValueError(f"`{name}` must be (low, high) with low <= high; received {(low, high)}.")

    def batch(index):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), index]), num=4
        )

        def uniform(shape, value_range, key):
            return tf.random.stateless_uniform(
                shape, seeds[key], minval=value_range[0], maxval=value_range[1]
            )

        amplitude = uniform([meta_batch_size, 1, 1], amplitude_range, 0)
        phase = uniform([meta_batch_size, 1, 1], phase_range, 1)
        support_x = uniform([meta_batch_size, shots, 1], x_range, 2)
        query_x = uniform([meta_batch_size, queries, 1], x_range, 3)

        def wave(x):
            return amplitude * tf.sin(x - phase)

        return (support_x, wave(support_x)), (query_x, wave(query_x))

    return indexed_batches(batch, num_batches, start_batch)
