"""N-way K-shot episodes sampled inside tf.data from an in-memory pool of classes."""

import numpy as np
import tensorflow as tf

from tf_maml.data import audio, directories
from tf_maml.data.batch_stream import indexed_batches
from tf_maml.data.sizes import check_counts, is_integer

ROTATION_MODES = (None, "per_class", "extra_classes")


EPISODE_SIZES = {
    "ways": "classes per task",
    "shots": "support examples per class",
    "queries": "query examples per class, on which the meta-loss is computed",
    "meta_batch_size": "tasks per batch",
}


def check_episode_sizes(ways, shots, queries, meta_batch_size):
    """Raises a `ValueError` naming the first size that is not an integer >= 1."""
    check_counts(
        {"ways": ways, "shots": shots, "queries": queries, "meta_batch_size": meta_batch_size},
        EPISODE_SIZES,
    )


class ClassPool:
    """Examples grouped by class, held in memory.

    Args:
        images: `[classes, examples_per_class, *example_shape]` array, or a
            list with one `[examples, *example_shape]` array per class (classes
            of unequal size).
        class_ids: optional identifiers of the classes (e.g. original labels),
            kept for bookkeeping.

    Example:

    ```python
    pool = ClassPool(np.zeros((100, 20, 28, 28, 1), np.uint8))
    train, test = pool.split([80, 20], seed=0)
    ```
    """

    def __init__(self, images, class_ids=None):
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("A ClassPool needs at least one class; received none.")
            shapes = {np.shape(c)[1:] for c in images}
            if len(shapes) != 1:
                raise ValueError(
                    f"All examples must share one shape; received shapes {sorted(shapes)}."
                )
            counts = np.array([len(c) for c in images], np.int32)
            if not counts.all():
                raise ValueError(f"Class {int(np.argmin(counts))} holds no examples; every "
                                 "class needs at least one.")
            padded = np.zeros((len(images), counts.max()) + shapes.pop(), np.asarray(images[0]).dtype)
            for i, c in enumerate(images):
                padded[i, : len(c)] = c
            images = padded
        else:
            images = np.asarray(images)
            if images.ndim < 3:
                raise ValueError(
                    "images must have shape [classes, examples_per_class, *example_shape]; "
                    f"received shape {images.shape}."
                )
            counts = np.full(len(images), images.shape[1], np.int32)
        self.images = images
        self.counts = counts
        self.class_ids = np.arange(len(images)) if class_ids is None else np.asarray(class_ids)

    @classmethod
    def from_directory(cls, path, image_size=None, color_mode="rgb"):
        """A pool of the images under `path`, one subfolder per class, decoded into memory.

        Classes are the subfolders in sorted order, their names the
        `class_ids`; images are uint8 (episodes scale them to 0..1). For trees
        beyond memory, see `class_datasets_from_directory`.

        Args:
            path: a directory with one subfolder of image files (bmp, gif,
                jpeg, png) per class.
            image_size: `(height, width)` to resize to (area interpolation), or
                None to keep sizes, which must then all agree.
            color_mode: `"grayscale"`, `"rgb"` or `"rgba"`: 1, 3 or 4 channels.

        Raises:
            ValueError: no such directory, no subfolders, an empty class, an
                unreadable file, or mixed sizes without `image_size` (each named).
        """
        by_class = directories.images_by_class(path, image_size, color_mode)
        return cls(list(by_class.values()), class_ids=list(by_class))

    @classmethod
    def from_audio_directory(cls, path, sample_rate=16000, duration=1.0, resample_rates=True):
        """A pool of the WAV recordings under `path`, one subfolder per class (a word).

        Classes are the subfolders in sorted order, their names the
        `class_ids`; each recording becomes an int16 waveform of `duration`
        seconds at `sample_rate` (mono; cut, or padded with silence at the
        end), which episodes scale to [-1, 1). `tf_maml.data.audio` says more.

        Args:
            path: a directory with one subfolder of .wav files (16-bit PCM) per class.
            sample_rate: samples per second of the waveforms.
            duration: seconds kept of each recording.
            resample_rates: resample a file of another rate (True) or refuse it.

        Raises:
            ValueError: no such directory, no subfolders, an empty class, an
                unreadable file, or (without `resample_rates`) a file of another
                rate, each named.
        """
        by_class = audio.waveforms_by_class(path, sample_rate, duration, resample_rates)
        return cls(list(by_class.values()), class_ids=list(by_class))

    @classmethod
    def from_dataset(cls, dataset):
        """A pool of the `(example, label)` pairs of a finite `tf.data.Dataset`, by label.

        Reads the dataset once, in order; the classes are the distinct labels
        in sorted order, which become the `class_ids`.

        Raises:
            ValueError: not a dataset of pairs, an infinite dataset, labels that
                are not scalars, examples of different shapes, or no examples.
        """
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError("`dataset` must be a tf.data.Dataset of (example, label) pairs; "
                             f"received {type(dataset).__name__}.")
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError("`dataset` must yield (example, label) pairs; its elements are "
                             f"{spec}. Map it to pairs first, e.g. "
                             "dataset.map(lambda e: (e['image'], e['label'])).")
        if spec[1].shape.rank not in (0, None):
            raise ValueError(f"Labels must be scalars (one class per example); the dataset's "
                             f"labels have shape {spec[1].shape}. Unbatch the dataset first "
                             "(dataset.unbatch()).")
        if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError("`dataset` is infinite (a repeat()?); a pool needs each example once.")
        by_label = {}
        for example, label in dataset.as_numpy_iterator():
            label = label.decode() if isinstance(label, bytes) else label.item()
            by_label.setdefault(label, []).append(example)
        if not by_label:
            raise ValueError("`dataset` yielded no examples.")
        shapes = {}
        for label, examples in by_label.items():
            for example in examples:
                shapes.setdefault(np.shape(example), label)
        if len(shapes) > 1:
            raise ValueError(
                "Examples differ in shape: "
                + ", ".join(f"{shape} (label {label!r})" for shape, label in shapes.items())
                + "; resize them to one shape in the dataset first."
            )
        labels = sorted(by_label)
        return cls([np.stack(by_label[label]) for label in labels], class_ids=labels)

    @property
    def num_classes(self):
        return len(self.images)

    @property
    def example_shape(self):
        return self.images.shape[2:]

    def subset(self, classes):
        """A pool of the given class indices."""
        classes = np.asarray(classes)
        pool = ClassPool.__new__(ClassPool)
        pool.images = self.images[classes]
        pool.counts = self.counts[classes]
        pool.class_ids = self.class_ids[classes]
        return pool

    def select(self, class_ids):
        """A pool of the classes with the given identifiers (`class_ids`), in that order.

        Raises:
            ValueError: an identifier not in the pool (the first few named) or
                given twice.
        """
        class_ids = list(class_ids)
        if not class_ids:
            raise ValueError("`class_ids` lists no class; a pool needs at least one.")
        position = {_plain(c): i for i, c in enumerate(self.class_ids)}
        unknown = [c for c in class_ids if _plain(c) not in position]
        if unknown:
            raise ValueError(
                f"{len(unknown)} class id(s) not in the pool, e.g. {unknown[:5]}; the pool's "
                f"ids are like {plain_ids(self.class_ids[:5])}."
            )
        if len(set(map(_plain, class_ids))) != len(class_ids):
            raise ValueError("A class id is listed twice; each class belongs to one pool once.")
        return self.subset([position[_plain(c)] for c in class_ids])

    def split(self, sizes, seed=0):
        """Disjoint pools: of `sizes` classes each after a seeded shuffle, or of listed ids.

        `sizes` is either integers >= 1, together at most `num_classes`
        (classes left over belong to no pool), or lists of class ids, as the
        official CIFAR-FS and mini-ImageNet split files give them: one pool
        per list (`select`), the lists disjoint; `seed` is then unused.
        """
        sizes = list(sizes)
        if not sizes:
            raise ValueError("`sizes` must list at least one pool size; received [].")
        if all(isinstance(s, (list, tuple, np.ndarray)) for s in sizes):
            pools = [self.select(ids) for ids in sizes]
            listed = [_plain(c) for ids in sizes for c in ids]
            if len(set(listed)) != len(listed):
                raise ValueError("The class lists overlap; splits must be disjoint.")
            return pools
        for position, size in enumerate(sizes):
            if not is_integer(size) or size < 1:
                raise ValueError(
                    f"`sizes[{position}]` must be an integer >= 1 (the classes of pool "
                    f"{position}); received {size!r} in sizes={sizes}. Give every pool at "
                    "least one class."
                )
        if sum(sizes) > self.num_classes:
            raise ValueError(
                f"Cannot split {self.num_classes} classes into {sizes} (total {sum(sizes)}); "
                f"`sizes` may total at most {self.num_classes}."
            )
        order = np.random.default_rng(seed).permutation(self.num_classes)
        bounds = np.cumsum([0] + sizes)
        return [self.subset(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def with_rotations(self):
        """A pool 4 times larger: every class rotated by 0, 90, 180, 270 degrees."""
        self._check_square("rotations")
        rotated = [np.rot90(self.images, k, axes=(2, 3)) for k in range(4)]
        pool = ClassPool.__new__(ClassPool)
        pool.images = np.stack(rotated, axis=1).reshape((-1,) + self.images.shape[1:])
        pool.counts = np.repeat(self.counts, 4)
        pool.class_ids = np.repeat(self.class_ids, 4)
        return pool

    def _check_square(self, what):
        if len(self.example_shape) < 2 or self.example_shape[0] != self.example_shape[1]:
            raise ValueError(
                f"{what} need square images; examples have shape {self.example_shape}."
            )


# The scale of integer examples by dtype: 8-bit pixels to [0, 1], 16-bit PCM audio to [-1, 1).
INTEGER_SCALES = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.int16): 1.0 / 32768.0}


def example_scale(dtype):
    """The scale of examples of `dtype`: 1/255 for uint8 images, 1/32768 for int16 audio,
    1/255 for other integers, 1.0 for floating ones (taken to be scaled already)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return 1.0
    return INTEGER_SCALES.get(dtype, 1.0 / 255.0)


def pool_constants(pool, scale=None):
    """`(images, counts, scale)`: the pool as graph constants, and the scale of its
    examples (`None`: `example_scale` of their dtype)."""
    if scale is None:
        scale = example_scale(pool.images.dtype)
    return tf.constant(pool.images), tf.constant(pool.counts), scale


def plain_ids(class_ids):
    """Class ids as plain Python values, for messages."""
    return [_plain(c) for c in class_ids]


def _plain(class_id):
    """A class id as a plain Python value (NumPy strings and integers compare as such)."""
    return class_id.item() if isinstance(class_id, np.generic) else class_id


def _rotate_per_class(x, k):
    """Rotates x [T, ways, n, H, W, C] by k [T, ways] times 90 degrees (as np.rot90)."""
    rank = len(x.shape)
    h, w = rank - 3, rank - 2
    perm = list(range(rank))
    perm[h], perm[w] = w, h
    transposed = tf.transpose(x, perm)
    rotations = [tf.reverse(transposed, [h]), tf.reverse(x, [h, w]), tf.reverse(transposed, [w])]
    k = tf.reshape(k, tf.concat([tf.shape(k), tf.ones([rank - 2], tf.int32)], 0))
    for times, rotated in enumerate(rotations, start=1):
        x = tf.where(k == times, rotated, x)
    return x


def few_shot_episodes(
    pool,
    ways,
    shots,
    queries,
    meta_batch_size,
    seed=0,
    rotation=None,
    num_batches=None,
    start_batch=0,
    scale=None,
):
    """A `tf.data.Dataset` of N-way K-shot classification episode batches.

    For each task: `ways` classes drawn without replacement, their order
    giving the labels 0..ways-1 (so labels are remapped randomly per task);
    from each class `shots + queries` examples drawn without replacement,
    the first `shots` forming the support set. Batch `i` is a pure function of
    `(seed, i)`: reproducible, and different tasks every batch.

    Args:
        pool: a `ClassPool`.
        ways, shots, queries: classes per task, support and query examples
            per class.
        meta_batch_size: tasks per batch.
        seed: integer seed of the stream.
        rotation: `None`; `"per_class"` to rotate each class of a task by a
            random multiple of 90 degrees (the original MAML code);
            `"extra_classes"` to treat each rotation as a class of its own.
        num_batches: batches to yield; `None` for an endless stream.
        start_batch: index of the first batch.
        scale: images are cast to float32 and multiplied by `scale`; `None`
            (the default) picks it from the pool's dtype: 1/255 for integer
            pools (uint8 pixels 0..255 become 0..1), 1/32768 for int16 ones
            (16-bit audio becomes [-1, 1)), 1.0 for floating pools (taken to
            be scaled already).

    Returns:
        A dataset of `((support_x, support_y), (query_x, query_y))` with
        `support_x: [meta_batch_size, ways * shots, *example_shape]` float32
        and int32 labels.
    """
    if rotation not in ROTATION_MODES:
        raise ValueError(f"`rotation` must be one of {ROTATION_MODES}; received {rotation!r}.")
    check_episode_sizes(ways, shots, queries, meta_batch_size)
    if rotation == "extra_classes":
        pool = pool.with_rotations()
    elif rotation == "per_class":
        pool._check_square("rotations")
    if ways > pool.num_classes:
        raise ValueError(
            f"ways={ways} exceeds the {pool.num_classes} classes of the pool."
        )
    per_class = shots + queries
    if per_class > pool.counts.min():
        small = pool.counts < per_class
        raise ValueError(
            f"shots + queries = {per_class} exceeds the examples of {int(small.sum())} "
            f"class(es), e.g. {plain_ids(pool.class_ids[small][:5])} (the smallest "
            f"has {pool.counts.min()}); lower shots or queries, or leave those classes out "
            "(pool.select)."
        )

    images, counts, scale = pool_constants(pool, scale)
    max_count = pool.images.shape[1]
    example_shape = pool.example_shape

    def batch(index):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), index]), num=3
        )
        # Classes: the `ways` largest of random keys, in random order.
        class_keys = tf.random.stateless_uniform([meta_batch_size, pool.num_classes], seeds[0])
        classes = tf.math.top_k(class_keys, ways).indices  # [T, ways]
        # Examples: random keys, slots past a class's size never chosen.
        example_keys = tf.random.stateless_uniform([meta_batch_size, ways, max_count], seeds[1])
        valid = tf.range(max_count) < tf.gather(counts, classes)[..., None]
        example_keys = tf.where(valid, example_keys, -1.0)
        examples = tf.math.top_k(example_keys, per_class).indices  # [T, ways, n]
        classes_n = tf.broadcast_to(classes[..., None], tf.shape(examples))
        x = tf.gather_nd(images, tf.stack([classes_n, examples], axis=-1))
        x = tf.cast(x, tf.float32) * scale
        if rotation == "per_class":
            k = tf.random.stateless_uniform(
                [meta_batch_size, ways], seeds[2], minval=0, maxval=4, dtype=tf.int32
            )
            x = _rotate_per_class(x, k)
        labels = tf.broadcast_to(tf.range(ways, dtype=tf.int32)[:, None], [ways, per_class])

        def take(start, size):
            xs = tf.reshape(x[:, :, start:start + size], [meta_batch_size, ways * size, *example_shape])
            ys = tf.reshape(labels[:, start:start + size], [ways * size])
            return xs, tf.tile(ys[None], [meta_batch_size, 1])

        return take(0, shots), take(shots, queries)

    return indexed_batches(batch, num_batches, start_batch)
