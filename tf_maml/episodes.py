"""The episode format, and the checks run when episodes reach the meta-learner.

An episode batch is `((support_x, support_y), (query_x, query_y))` with a
leading task axis:

- `support_x`: `[tasks, support_examples, *features]`
- `support_y`: `[tasks, support_examples]` integer class labels, or
  `[tasks, support_examples, *targets]` for regression and dense targets
- `query_x`, `query_y`: the same with `query_examples`.

In Keras terms the support pair is `x` and the query pair is `y`, so a
`tf.data.Dataset` of episodes, or `fit(x=(support_x, support_y),
y=(query_x, query_y))` with arrays, both reach `train_step` in this form.
All checks here read shapes and dtypes only (and the labels of one batch),
so bad input fails before any meta-training compute.
"""

import collections

import numpy as np
import keras
import tensorflow as tf

EpisodeSpec = collections.namedtuple(
    "EpisodeSpec", ["num_tasks", "features", "x_dtype", "label_shape", "label_dtype"]
)
EpisodeSpec.__doc__ = """What one episode batch holds, read from its tensor specs.

`features` is the shape of one example, `label_shape` the shape of one label
(`()` for integer class labels); `num_tasks` may be `None` (unknown).
"""

STRUCTURE_HELP = "((support_x, support_y), (query_x, query_y)), each with a leading task axis"


WEIGHTS_UNSUPPORTED = (
    "Per-example weights (a third element beside the support and query pairs) are not "
    "supported: every support and query example counts. Drop the weights, or drop "
    "padded examples from the episodes."
)


def unpack(data):
    """Splits what `train_step` receives into `(support, query)` pairs."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(WEIGHTS_UNSUPPORTED)
    return x, y


def merge_task_axis(tensor):
    """[tasks, examples, ...] -> [tasks * examples, ...]."""
    return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))


def spec_of(x, y=None):
    """The nested `tf.TensorSpec` of the episodes handed to fit/evaluate.

    Returns `None` for inputs whose structure cannot be read without
    consuming them (Python generators, `PyDataset`).
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) == 3:
            raise ValueError(WEIGHTS_UNSUPPORTED)
        return spec
    if isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__"):
        raise ValueError(
            f"Expected episodes as {STRUCTURE_HELP}; received a single array of shape "
            f"{np.shape(x)}. Meta-learning needs support and query sets: see "
            "tf_maml.data for episode pipelines."
        )
    if isinstance(x, (tuple, list)) and (y is None or isinstance(y, (tuple, list))):
        arrays = (tuple(x), tuple(y)) if y is not None else tuple(x)
        return tf.nest.map_structure(
            lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)),
            arrays,
        )
    return None


def _structure_of(spec):
    return tf.nest.map_structure(lambda s: "tensor", spec)


def check_spec(spec, name="episodes"):
    """Checks structure, ranks, dtypes and sizes; returns an `EpisodeSpec`.

    Raises:
        ValueError: wrong structure, rank or inconsistent sizes.
        TypeError: non-numeric inputs or labels, or mixed dtypes.
    """
    if not (
        isinstance(spec, (tuple, list))
        and len(spec) == 2
        and all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in spec)
        and all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec))
    ):
        raise ValueError(
            f"Expected {name} as {STRUCTURE_HELP}. Received a structure of "
            f"{_structure_of(spec)}."
        )
    (support_x, support_y), (query_x, query_y) = spec
    named = {
        "support_x": support_x,
        "support_y": support_y,
        "query_x": query_x,
        "query_y": query_y,
    }
    for key in ("support_x", "query_x"):
        if named[key].shape.rank is None or named[key].shape.rank < 3:
            raise ValueError(
                f"{name}: {key} must have shape [tasks, examples, *features] (rank >= 3). "
                f"Received shape {named[key].shape}. A single task needs a leading task "
                "axis of size 1."
            )
    for key in ("support_y", "query_y"):
        if named[key].shape.rank is None or named[key].shape.rank < 2:
            raise ValueError(
                f"{name}: {key} must have shape [tasks, examples, ...] (rank >= 2). "
                f"Received shape {named[key].shape}."
            )
    for key, s in named.items():
        if not (s.dtype.is_floating or s.dtype.is_integer):
            raise TypeError(f"{name}: {key} must be numeric. Received dtype {s.dtype.name}.")
    if support_x.dtype != query_x.dtype:
        raise TypeError(
            f"{name}: support_x and query_x must share a dtype. Received "
            f"{support_x.dtype.name} and {query_x.dtype.name}."
        )
    if support_y.dtype != query_y.dtype:
        raise TypeError(
            f"{name}: support_y and query_y must share a dtype. Received "
            f"{support_y.dtype.name} and {query_y.dtype.name}."
        )
    for a, b in (("support_x", "query_x"), ("support_y", "query_y")):
        if named[a].shape.rank != named[b].shape.rank:
            raise ValueError(
                f"{name}: {a} has rank {named[a].shape.rank} and {b} rank "
                f"{named[b].shape.rank}; both need [tasks, examples, ...]. Is a task axis "
                f"missing? Shapes: {named[a].shape} and {named[b].shape}."
            )
    if not support_x.shape[2:].is_compatible_with(query_x.shape[2:]):
        raise ValueError(
            f"{name}: support_x and query_x examples differ in shape: "
            f"{support_x.shape[2:]} and {query_x.shape[2:]}."
        )
    if not support_y.shape[2:].is_compatible_with(query_y.shape[2:]):
        raise ValueError(
            f"{name}: support_y and query_y labels differ in shape: "
            f"{support_y.shape[2:]} and {query_y.shape[2:]}."
        )
    for set_name, xs, ys in (("support", support_x, support_y), ("query", query_x, query_y)):
        if not xs.shape[:2].is_compatible_with(ys.shape[:2]):
            raise ValueError(
                f"{name}: {set_name}_x and {set_name}_y disagree on [tasks, examples]: "
                f"{xs.shape[:2]} and {ys.shape[:2]}."
            )
    task_dims = tf.TensorShape([None])
    for key, s in named.items():
        if not task_dims.is_compatible_with(s.shape[:1]):
            raise ValueError(
                f"{name}: every tensor needs the same number of tasks; {key} has "
                f"{s.shape[0]}, others {task_dims[0]}."
            )
        task_dims = task_dims.merge_with(s.shape[:1])
    for key in ("support_x", "query_x"):
        if named[key].shape[1] == 0:
            raise ValueError(
                f"{name}: {key} holds 0 examples per task; support and query sets need at "
                "least one example (check shots and queries)."
            )
    if task_dims[0] == 0:
        raise ValueError(f"{name}: the episode batches hold 0 tasks; meta_batch_size must be >= 1.")
    features = support_x.shape[2:].merge_with(query_x.shape[2:])
    return EpisodeSpec(
        num_tasks=task_dims[0],
        features=tuple(features),
        x_dtype=support_x.dtype,
        label_shape=tuple(support_y.shape[2:].merge_with(query_y.shape[2:])),
        label_dtype=support_y.dtype,
    )


def check_labels_fit_outputs(spec, output_shape, name="episodes"):
    """Checks that labels of `spec` match model outputs of `output_shape`.

    Integer labels of shape `[tasks, examples]` are class indices for an
    output of shape `[batch, classes]`; other labels must have the output's
    shape per example.
    """
    output_shape = tuple(output_shape)[1:]
    sparse = spec.label_dtype.is_integer and len(spec.label_shape) == len(output_shape) - 1
    if sparse:
        return
    if not tf.TensorShape(spec.label_shape).is_compatible_with(output_shape):
        raise ValueError(
            f"{name}: labels of shape {spec.label_shape} per example do not match the "
            f"model's output of shape {output_shape} per example. Use integer class "
            f"labels of shape [tasks, examples], or targets shaped like the output."
        )


def _is_sparse_loss(loss):
    sparse = (keras.losses.SparseCategoricalCrossentropy, keras.losses.sparse_categorical_crossentropy)
    return loss == "sparse_categorical_crossentropy" or isinstance(loss, sparse[0]) or loss is sparse[1]


def check_labels_fit_loss(spec, output_shape, loss, name="episodes"):
    """Checks that a sparse categorical loss gets integer class labels, not one-hot ones."""
    if not _is_sparse_loss(loss):
        return
    if not spec.label_dtype.is_integer or len(spec.label_shape) != len(tuple(output_shape)) - 2:
        raise ValueError(
            f"{name}: a sparse categorical loss needs integer class labels of shape [tasks, "
            f"examples]; received {spec.label_dtype.name} labels of shape {spec.label_shape} "
            "per example. One-hot labels go with keras.losses.CategoricalCrossentropy; or "
            "pass the class indices (argmax) instead."
        )


def check_label_range(labels, num_classes, name="episodes"):
    """Checks that integer class labels lie in `[0, num_classes)`."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name}: class labels must lie in [0, {num_classes}) for a model with "
            f"{num_classes} outputs; received labels from {low} to {high}. Labels are "
            "indices within each task (0 .. ways - 1)."
        )


def first_labels(x, y=None):
    """Support and query labels of the first batch, as numpy arrays."""
    if isinstance(x, tf.data.Dataset):
        element = next(iter(x.take(1)))
        (_, support_y), (_, query_y) = element[:2]
        return np.asarray(support_y), np.asarray(query_y)
    return np.asarray(x[1]), np.asarray(y[1])
