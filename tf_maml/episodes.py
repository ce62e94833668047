"""The episode format, and the checks run when episodes reach the meta-learner.

An episode batch is `((support_x, support_y), (query_x, query_y))` with a
leading task axis:

- `support_x`: `[tasks, support_examples, *features]`
- `support_y`: `[tasks, support_examples]` integer class labels, or
  `[tasks, support_examples, *targets]` for regression and dense targets
- `query_x`, `query_y`: the same with `query_examples`.

For a model with several inputs, `support_x` and `query_x` are a dict keyed
by the model's input names (or a list in the model's input order) of such
tensors; for several outputs, `support_y` and `query_y` are a dict keyed by
the output names (or a list in output order), as Keras' `fit` takes them.

Padded episodes carry per-example weights as a third element of each set:
`((support_x, support_y, support_weight), (query_x, query_y, query_weight))`,
each weight `[tasks, examples]`, 0 marking a padding example. Losses,
metrics and BatchNorm statistics then ignore padding, so tasks of different
sizes share one padded shape (one trace).

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

EpisodeSpec = collections.namedtuple("EpisodeSpec", ["num_tasks", "x", "y"])
EpisodeSpec.__doc__ = """What one episode batch holds, read from its tensor specs.

`x` and `y` are the specs of one example and of its labels: a `tf.TensorSpec`
without the task and example axes (`()` shaped for an integer class label),
or a dict or list of them for a model with several inputs or outputs.
`num_tasks` may be `None` (unknown).
"""

STRUCTURE_HELP = (
    "((support_x, support_y), (query_x, query_y)), each with a leading task axis (padded "
    "episodes: ((support_x, support_y, support_weight), (query_x, query_y, query_weight)))"
)

WEIGHTS_PLACE = (
    "Per-example weights go inside each set, not beside the pairs: "
    "((support_x, support_y, support_weight), (query_x, query_y, query_weight)), each "
    "weight [tasks, examples]."
)


def unpack(data):
    """Splits what `train_step` receives: `((support_x, support_y), (query_x, query_y),
    weights)`, `weights` being `(support_weight, query_weight)` or None."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(WEIGHTS_PLACE)
    if len(x) == 3:
        return tuple(x[:2]), tuple(y[:2]), (as_weights(x[2]), as_weights(y[2]))
    return tuple(x), tuple(y), None


def as_weights(weights):
    """Per-example weights as a float tensor (bool and integer weights accepted), or None."""
    if weights is None:
        return None
    weights = tf.convert_to_tensor(weights)
    return weights if weights.dtype.is_floating else tf.cast(weights, tf.float32)


def task_parts(task):
    """`(support_x, support_y, query_x, query_y, support_weight, query_weight)` of one
    task (or meta-batch) `(sx, sy, qx, qy)` or `(sx, sy, qx, qy, sw, qw)`; weights None
    when the episodes carry none."""
    return tuple(task) + (None, None) if len(task) == 4 else tuple(task)


def task_tuple(support, query, weights):
    """The meta-batch as the task loop maps it: `(sx, sy, qx, qy)`, weights appended."""
    return tuple(support) + tuple(query) + (tuple(weights) if weights is not None else ())


def valid_examples(labels, weight):
    """`labels` (nested) with padded examples' entries set to 0; `weight` has the
    labels' leading axes (`[tasks, examples]`, or `[examples]` for one task)."""
    if weight is None:
        return labels
    weight = as_weights(weight)

    def zeroed(y):
        y = tf.convert_to_tensor(y)
        trailing = tf.ones([tf.rank(y) - tf.rank(weight)], tf.int32)
        keep = tf.reshape(weight > 0, tf.concat([tf.shape(weight), trailing], 0))
        return tf.where(keep, y, tf.zeros_like(y))

    return tf.nest.map_structure(zeroed, labels)


def merge_task_axis(structure):
    """Each tensor [tasks, examples, ...] -> [tasks * examples, ...]."""
    return tf.nest.map_structure(
        lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], axis=0)), structure
    )


def per_example(structure, axes=2):
    """The spec of one example: each tensor's spec without its `axes` leading axes."""
    return tf.nest.map_structure(
        lambda t: tf.TensorSpec(tf.TensorShape(t.shape)[axes:], tf.as_dtype(t.dtype)), structure
    )


def batched(spec):
    """Symbolic `[batch, ...]` inputs (`keras.KerasTensor`s) for per-example `spec`."""
    return tf.nest.map_structure(
        lambda s: keras.KerasTensor((None,) + tuple(s.shape), s.dtype.name), spec
    )


def describe(structure):
    """A structure written out with each tensor's dtype and shape, for messages."""
    return tf.nest.map_structure(
        lambda t: f"{tf.as_dtype(t.dtype).name}{list(tf.TensorShape(t.shape))}", structure
    )


def same_structure(a, b):
    """Whether `a` and `b` nest alike (dicts, lists, tuples; leaf types not compared)."""
    try:
        tf.nest.assert_same_structure(a, b, check_types=False)
    except (ValueError, TypeError):
        return False
    return True


def named_leaves(structure, root):
    """`(name, tensor)` for each tensor: `support_x`, `support_x['tokens']`, `support_y[1]`."""
    return [
        (root + "".join(f"[{key!r}]" for key in path), leaf)
        for path, leaf in keras.tree.flatten_with_path(structure)
    ]


def plain(structure):
    """`structure` in plain dicts and lists (Keras' attribute tracking wraps them in its own)."""
    if isinstance(structure, dict):
        return {key: plain(value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [plain(value) for value in structure]
    return structure


def spec_to_config(spec):
    """A nested per-example spec as JSON-friendly values (for `get_build_config`)."""
    return tf.nest.map_structure(
        lambda s: {"class_name": "TensorSpec", "shape": list(s.shape), "dtype": s.dtype.name},
        spec,
    )


def spec_from_config(config):
    def is_spec(value):
        return isinstance(value, dict) and value.get("class_name") == "TensorSpec"

    def rebuild(value):
        if is_spec(value):
            return tf.TensorSpec(value["shape"], value["dtype"])
        if isinstance(value, dict):
            return {key: rebuild(item) for key, item in value.items()}
        return [rebuild(item) for item in value]

    return rebuild(config)


def spec_of(x, y=None):
    """The nested `tf.TensorSpec` of the episodes handed to fit/evaluate.

    Returns `None` for inputs whose structure cannot be read without
    consuming them (Python generators, `PyDataset`).
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) == 3:
            raise ValueError(WEIGHTS_PLACE)
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
    return tf.nest.map_structure(
        lambda s: "tensor" if isinstance(s, tf.TensorSpec) else type(s).__name__, spec
    )


def _check_structure(spec, name):
    if not (
        isinstance(spec, (tuple, list))
        and len(spec) == 2
        and all(isinstance(pair, (tuple, list)) and len(pair) in (2, 3) for pair in spec)
        and all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec))
    ):
        raise ValueError(
            f"Expected {name} as {STRUCTURE_HELP}. Received a structure of "
            f"{_structure_of(spec)}."
        )
    if len(spec[0]) != len(spec[1]):
        raise ValueError(
            f"{name}: the support set has {len(spec[0])} elements and the query set "
            f"{len(spec[1])}; per-example weights go in both sets or in neither: "
            "((support_x, support_y, support_weight), (query_x, query_y, query_weight))."
        )
    if len(spec[0]) == 3:
        _check_weights(spec, name)
    (support_x, support_y), (query_x, query_y) = spec[0][:2], spec[1][:2]
    for what, support, query in (("x", support_x, query_x), ("y", support_y, query_y)):
        if not same_structure(support, query):
            raise ValueError(
                f"{name}: support_{what} and query_{what} must have the same structure; "
                f"received {describe(support)} and {describe(query)}."
            )


def _check_weights(spec, name):
    """Each set's weight: `[tasks, examples]` of that set, real or integer."""
    for set_name, (x, _, weight) in zip(("support", "query"), spec):
        if not isinstance(weight, tf.TensorSpec):
            raise ValueError(f"{name}: {set_name}_weight must be one tensor [tasks, examples] "
                             f"for every output; received {_structure_of(weight)}.")
        first = tf.nest.flatten(x)[0]
        if weight.shape.rank != 2 or not weight.shape.is_compatible_with(first.shape[:2]):
            raise ValueError(
                f"{name}: {set_name}_weight must have shape [tasks, examples] = "
                f"{first.shape[:2]} (one weight per {set_name} example); received "
                f"{weight.shape}."
            )
        if not (weight.dtype.is_floating or weight.dtype.is_integer or weight.dtype == tf.bool):
            raise TypeError(f"{name}: {set_name}_weight must be numeric (0 marks padding); "
                            f"received dtype {weight.dtype.name}.")


def _check_leaf(name, leaf_name, s, examples):
    """One tensor's rank and dtype; `examples` for inputs, else labels."""
    min_rank, layout = (3, "[tasks, examples, *features]") if examples else (2, "[tasks, examples, ...]")
    if s.shape.rank is None or s.shape.rank < min_rank:
        raise ValueError(
            f"{name}: {leaf_name} must have shape {layout} (rank >= {min_rank}). Received "
            f"shape {s.shape}." + (" A single task needs a leading task axis of size 1."
                                   if examples else "")
        )
    if not (s.dtype.is_floating or s.dtype.is_integer):
        raise TypeError(f"{name}: {leaf_name} must be numeric. Received dtype {s.dtype.name}.")


def check_spec(spec, name="episodes"):
    """Checks structure, ranks, dtypes and sizes; returns an `EpisodeSpec`.

    Raises:
        ValueError: wrong structure, rank or inconsistent sizes.
        TypeError: non-numeric inputs or labels, or mixed dtypes.
    """
    _check_structure(spec, name)
    (support_x, support_y), (query_x, query_y) = spec[0][:2], spec[1][:2]
    sets = {
        "support": named_leaves(support_x, "support_x") + named_leaves(support_y, "support_y"),
        "query": named_leaves(query_x, "query_x") + named_leaves(query_y, "query_y"),
    }
    for set_name, leaves in sets.items():
        for leaf_name, s in leaves:
            _check_leaf(name, leaf_name, s, examples=leaf_name.startswith(f"{set_name}_x"))
    for (a, sa), (b, sb) in zip(sets["support"], sets["query"]):
        kind = "examples" if a.startswith("support_x") else "labels"
        if sa.dtype != sb.dtype:
            raise TypeError(
                f"{name}: {a} and {b} must share a dtype. Received {sa.dtype.name} and "
                f"{sb.dtype.name}."
            )
        if sa.shape.rank != sb.shape.rank:
            raise ValueError(
                f"{name}: {a} has rank {sa.shape.rank} and {b} rank {sb.shape.rank}; both "
                f"need [tasks, examples, ...]. Is a task axis missing? Shapes: {sa.shape} and "
                f"{sb.shape}."
            )
        if not sa.shape[2:].is_compatible_with(sb.shape[2:]):
            raise ValueError(
                f"{name}: {a} and {b} {kind} differ in shape: {sa.shape[2:]} and {sb.shape[2:]}."
            )
    task_dims = tf.TensorShape([None])
    for set_name, leaves in sets.items():
        first_name, first = leaves[0]
        for leaf_name, s in leaves[1:]:
            if not first.shape[:2].is_compatible_with(s.shape[:2]):
                raise ValueError(
                    f"{name}: {first_name} and {leaf_name} disagree on [tasks, examples]: "
                    f"{first.shape[:2]} and {s.shape[:2]}."
                )
        for leaf_name, s in leaves:
            if not task_dims.is_compatible_with(s.shape[:1]):
                raise ValueError(
                    f"{name}: every tensor needs the same number of tasks; {leaf_name} has "
                    f"{s.shape[0]}, others {task_dims[0]}."
                )
            task_dims = task_dims.merge_with(s.shape[:1])
            if s.shape[1] == 0:
                raise ValueError(
                    f"{name}: {leaf_name} holds 0 examples per task; support and query sets "
                    "need at least one example (check shots and queries)."
                )
    if task_dims[0] == 0:
        raise ValueError(f"{name}: the episode batches hold 0 tasks; meta_batch_size must be >= 1.")

    def merged(support, query):
        return tf.nest.map_structure(
            lambda s, q: tf.TensorSpec(s.shape[2:].merge_with(q.shape[2:]), s.dtype),
            support, query, check_types=False,
        )

    return EpisodeSpec(
        num_tasks=task_dims[0], x=merged(support_x, query_x), y=merged(support_y, query_y)
    )


def first_labels(x, y=None):
    """Support and query labels of the first batch: `(support_y, query_y)`, numpy arrays
    (padded examples' labels as 0)."""
    if isinstance(x, tf.data.Dataset):
        support, query = next(iter(x.take(1)))[:2]
    else:
        support, query = x, y
    labels = [valid_examples(s[1], s[2] if len(s) == 3 else None) for s in (support, query)]
    return tf.nest.map_structure(np.asarray, tuple(labels))
