"""Streams of episode batches in which batch `i` is a pure function of `i`."""

import tensorflow as tf


def indexed_batches(make_batch, num_batches=None, start_batch=0):
    """`make_batch(i)` for i = start_batch, start_batch + 1, ..., mapped in tf.data.

    Deterministic per index, so a stream is reproducible and a resumed run
    continues it with `start_batch`; `num_batches=None` streams forever.
    """
    if num_batches is None:
        indices = tf.data.Dataset.counter(start_batch)
    else:
        indices = tf.data.Dataset.range(start_batch, start_batch + num_batches)
    return indices.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
