"""Episodes of variable ways and shots, as Meta-Dataset samples them, padded to one shape."""

import math

import tensorflow as tf
from absl import logging

from tf_maml.data.class_pool import plain_ids, pool_constants
from tf_maml.data.sizes import check_counts

# Meta-Dataset's constants (Triantafillou et al. 2020, appendix): each class adds at
# most this many examples to the support-size draw, and its share of the support set
# is its size times exp of a log-weight drawn in [log 0.5, log 2).
MAX_SUPPORT_PER_CLASS = 100
LOG_WEIGHT_RANGE = (math.log(0.5), math.log(2.0))

_MEANINGS = {
    "min_ways": "the fewest classes of a task",
    "max_ways": "the most classes of a task (the model's number of outputs)",
    "max_support": "the most support examples of a task (the padded support size)",
    "queries": "query examples per class",
    "meta_batch_size": "tasks per batch",
}


def variable_episodes(pool, min_ways=5, max_ways=50, max_support=500, queries=10,
                      meta_batch_size=8, seed=0, num_batches=None, start_batch=0, scale=None):
    """Padded episode batches of tasks with variable ways and shots (Meta-Dataset's sampler).

    Per task, as Meta-Dataset (Triantafillou et al. 2020) draws episodes:
    the number of classes `N` uniform in `[min_ways, min(max_ways, classes)]`,
    the classes uniformly without replacement, their order giving the labels
    `0..N-1`; `queries` query examples per class; a support size
    `S = min(max_support, sum_c ceil(beta * min(100, n_c - queries)))` with
    `beta` uniform in (0, 1] and `n_c` the class's examples; and each class's
    shots `k_c = min(floor(R_c * (S - N)) + 1, n_c - queries)` where `R_c`
    is the class's share `exp(a_c) n_c / sum_c' exp(a_c') n_c'`, `a_c`
    uniform in `[log 0.5, log 2)`: every class at least one shot, larger
    classes more. (Meta-Dataset caps the queries by half the smallest class;
    here they are fixed, so every class needs `queries + 1` examples.)

    Each task is padded to `max_support` support and `max_ways * queries`
    query examples, with weights 1 for real examples and 0 for padding
    (zeros, label 0): the weighted episode format of `tf_maml.episodes`, so
    the meta-step traces once for every size. Batch `i` is a pure function
    of `(seed, i)`: reproducible, and `start_batch` continues a stream.

    Args:
        pool: a `ClassPool`.
        min_ways, max_ways: the range of classes per task; the model needs
            `max_ways` outputs. A task of fewer classes has no labels for the
            other logits, which still take part in its softmax (they are
            trained down; their share of the probability can cost accuracy).
        max_support: the most support examples of a task; at least `max_ways`.
        queries: query examples per class.
        meta_batch_size: tasks per batch.
        seed, num_batches, start_batch, scale: as `few_shot_episodes`.

    Returns:
        A dataset of `((support_x, support_y, support_weight), (query_x,
        query_y, query_weight))`: `support_x` `[meta_batch_size, max_support,
        *example_shape]` float32, int32 labels, float32 weights.
    """
    _check_arguments(pool, min_ways, max_ways, max_support, queries, meta_batch_size)
    images, counts, scale = pool_constants(pool, scale)
    classes = pool.num_classes
    top_ways = min(max_ways, classes)  # classes drawn per task, the first `ways` used
    max_count = pool.images.shape[1]
    example_shape = list(pool.example_shape)

    def task(index):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), index]), num=5)
        ways = tf.random.stateless_uniform([], seeds[0], minval=min_ways, maxval=top_ways + 1,
                                           dtype=tf.int32)
        drawn = tf.math.top_k(tf.random.stateless_uniform([classes], seeds[1]), top_ways).indices
        used = tf.range(top_ways) < ways  # [top_ways]
        sizes = tf.gather(counts, drawn)
        shots = _shots(seeds[2:4], ways, used, sizes, queries, max_support)
        # Each class's examples in random order; slots past its size never drawn.
        keys = tf.random.stateless_uniform([top_ways, max_count], seeds[4])
        keys = tf.where(tf.range(max_count) < sizes[:, None], keys, -1.0)
        order = tf.math.top_k(keys, max_count).indices  # [top_ways, max_count]
        slot = tf.range(max_count)[None, :]
        in_support = slot < shots[:, None]
        in_query = (slot >= shots[:, None]) & (slot < shots[:, None] + queries) & used[:, None]
        labels = tf.broadcast_to(tf.range(top_ways)[:, None], [top_ways, max_count])
        where = tf.stack([tf.broadcast_to(drawn[:, None], [top_ways, max_count]), order], -1)

        def take(chosen, size):
            """The chosen (class, slot) examples in class order, padded to `size`."""
            picked = tf.boolean_mask(where, chosen)
            x = tf.cast(tf.gather_nd(images, picked), tf.float32) * scale
            y = tf.boolean_mask(labels, chosen)
            real = tf.shape(y)[0]
            x = tf.pad(x, [[0, size - real]] + [[0, 0]] * len(example_shape))
            weight = tf.pad(tf.ones([real]), [[0, size - real]])
            return (tf.ensure_shape(x, [size] + example_shape),
                    tf.ensure_shape(tf.pad(y, [[0, size - real]]), [size]),
                    tf.ensure_shape(weight, [size]))

        return take(in_support, max_support), take(in_query, max_ways * queries)

    first = start_batch * meta_batch_size
    if num_batches is None:
        indices = tf.data.Dataset.counter(first)
    else:
        indices = tf.data.Dataset.range(first, first + num_batches * meta_batch_size)
    return (indices.map(task, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(meta_batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def _shots(seeds, ways, used, sizes, queries, max_support):
    """Each drawn class's shots, `[top_ways]` int32 (0 for the unused), as Meta-Dataset
    draws them: a support size, then shares by class size times exp of a log-weight."""
    available = tf.cast(sizes - queries, tf.float32)  # examples a class can give the support
    beta = 1.0 - tf.random.stateless_uniform([], seeds[0])  # in (0, 1]
    wanted = tf.where(used, tf.math.ceil(beta * tf.minimum(available, MAX_SUPPORT_PER_CLASS)), 0.0)
    support_size = tf.minimum(float(max_support), tf.reduce_sum(wanted))
    log_weight = tf.random.stateless_uniform(sizes.shape, seeds[1], *LOG_WEIGHT_RANGE)
    share = tf.where(used, tf.exp(log_weight) * tf.cast(sizes, tf.float32), 0.0)
    share /= tf.reduce_sum(share)
    spare = support_size - tf.cast(ways, tf.float32)
    shots = tf.minimum(tf.floor(share * spare) + 1.0, available)
    return tf.cast(tf.where(used, shots, 0.0), tf.int32)


def _check_arguments(pool, min_ways, max_ways, max_support, queries, meta_batch_size):
    """Refuses sizes the pool cannot serve, naming them."""
    check_counts({"min_ways": min_ways, "max_ways": max_ways, "max_support": max_support,
                  "queries": queries, "meta_batch_size": meta_batch_size}, _MEANINGS)
    if min_ways > max_ways:
        raise ValueError(f"min_ways={min_ways} exceeds max_ways={max_ways}.")
    if min_ways > pool.num_classes:
        raise ValueError(f"min_ways={min_ways} exceeds the {pool.num_classes} classes of the pool.")
    if max_support < max_ways:
        raise ValueError(f"max_support={max_support} is below max_ways={max_ways}: every class "
                         "of a task needs a support example.")
    if max_ways > pool.num_classes:  # e.g. a small validation pool: said, not refused
        logging.warning("max_ways=%d exceeds the %d classes of the pool: its tasks have at "
                        "most %d ways (still padded to max_ways).", max_ways, pool.num_classes,
                        pool.num_classes)
    small = pool.counts < queries + 1
    if small.any():
        raise ValueError(
            f"{int(small.sum())} class(es) hold fewer than queries + 1 = {queries + 1} "
            f"examples, e.g. {plain_ids(pool.class_ids[small][:5])} (the smallest has "
            f"{pool.counts.min()}); lower `queries`, or leave those classes out (pool.select)."
        )
