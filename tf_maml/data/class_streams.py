"""N-way K-shot episodes from one tf.data source per class, for data beyond memory."""

import numpy as np
import tensorflow as tf

from tf_maml.data.class_pool import check_episode_sizes


def few_shot_episodes_from_class_datasets(
    class_datasets, ways, shots, queries, meta_batch_size, seed=0, shuffle_buffer=1000,
    scale=None,
):
    """Episode batches drawn from per-class `tf.data.Dataset`s (e.g. files on disk).

    Each class's examples are shuffled (within `shuffle_buffer`) and cut into
    groups of `shots + queries` that never span two passes over the class, so
    a task never holds one example twice. A task draws `ways` distinct classes
    at random; their order gives the labels 0..ways-1. Unlike
    `few_shot_episodes`, nothing is held in memory beyond the buffers, and the
    stream is reproducible from `seed` but cannot be resumed at an index.

    Args:
        class_datasets: a list of datasets, one per class, each yielding single
            examples of one shape and dtype (cast to float32 in the episodes);
            or a dict of them by class name (its values are taken, in order),
            as `class_datasets_from_directory` returns.
        ways, shots, queries, meta_batch_size: as `few_shot_episodes`.
        seed: seed of the class draws and the shuffles.
        shuffle_buffer: per-class shuffle buffer.
        scale: examples are cast to float32 and multiplied by `scale`; `None`
            picks it from their dtype as `few_shot_episodes` does: 1/255 for
            integers (uint8 pixels become 0..1), 1.0 for floats.

    Returns:
        A dataset of `((support_x, support_y), (query_x, query_y))`.

    Raises:
        ValueError: no datasets, a size below 1, more `ways` than datasets, or
            a dataset of known size holding fewer than `shots + queries`
            examples (the stream would silently end when its class is drawn).
    """
    class_datasets = _checked_class_datasets(class_datasets, ways, shots, queries,
                                             meta_batch_size)
    per_class = shots + queries
    groups = [
        dataset.shuffle(shuffle_buffer, seed=seed + i, reshuffle_each_iteration=True)
        .batch(per_class, drop_remainder=True)  # a group never spans two passes
        .repeat()
        for i, dataset in enumerate(class_datasets)
    ]
    num_classes = len(class_datasets)
    if scale is None:
        scale = 1.0 / 255.0 if class_datasets[0].element_spec.dtype.is_integer else 1.0

    def task_classes(index):
        keys = tf.random.stateless_uniform([num_classes], tf.stack([tf.cast(seed, tf.int64), index]))
        classes = tf.cast(tf.math.top_k(keys, ways).indices, tf.int64)
        return tf.data.Dataset.from_tensor_slices(classes)

    choices = tf.data.Dataset.counter().flat_map(task_classes)
    tasks = tf.data.Dataset.choose_from_datasets(groups, choices).batch(ways)
    labels = np.arange(ways, dtype=np.int32)

    def split(task):  # task: [ways, shots + queries, *example_shape]
        task = tf.cast(task, tf.float32) * scale
        example_shape = list(task.shape[2:])

        def take(start, size):
            x = tf.reshape(task[:, start:start + size], [ways * size] + example_shape)
            return x, tf.repeat(labels, size)

        return take(0, shots), take(shots, queries)

    return (
        tasks.map(split, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(meta_batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def _checked_class_datasets(class_datasets, ways, shots, queries, meta_batch_size):
    """The class datasets as a list, or an error naming the one that cannot serve."""
    if isinstance(class_datasets, dict):  # as class_datasets_from_directory returns them
        names = [f"class_datasets[{name!r}]" for name in class_datasets]
        class_datasets = list(class_datasets.values())
    else:
        class_datasets = list(class_datasets)
        names = [f"class_datasets[{i}]" for i in range(len(class_datasets))]
    if not class_datasets:
        raise ValueError(
            "`class_datasets` must hold at least one dataset (one per class); received none."
        )
    for position, dataset in enumerate(class_datasets):
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                f"`{names[position]}` must be a tf.data.Dataset of one class's "
                f"examples; received {type(dataset).__name__}."
            )
    check_episode_sizes(ways, shots, queries, meta_batch_size)
    if ways > len(class_datasets):
        raise ValueError(f"ways={ways} exceeds the {len(class_datasets)} class datasets.")
    for position, dataset in enumerate(class_datasets):
        size = int(dataset.cardinality())  # < 0: infinite or unknown, not checked
        if 0 <= size < shots + queries:
            raise ValueError(
                f"`{names[position]}` holds {size} examples, fewer than "
                f"shots + queries = {shots + queries}, so it could never fill a task; lower "
                "`shots` or `queries`, or drop that class."
            )
    return class_datasets
