"""How episode labels meet the model's outputs: which label goes with which output, and checks.

A model with one output takes one label tensor; a model with several takes a
dict keyed by its output names, or a list in output order (a dict of outputs
also takes a dict with the same keys), as Keras' compiled losses do. Integer
labels one rank below a `[batch, classes]` output are class indices: their
range is checked, and a sparse categorical loss needs them.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from tf_maml.episodes import describe, named_leaves

LabelledOutput = collections.namedtuple(
    "LabelledOutput", ["label_name", "label", "output_name", "output", "position"]
)
LabelledOutput.__doc__ = """One label tensor and the model output it is compared with.

`label`: its per-example spec; `output`: the output's `[batch, ...]` spec;
`output_name`: the model's name for the output (None for a single
output); `position`: the output's index in the model's flat outputs.
"""


def _output_names(outputs, model_names):
    """Names of the flat outputs: dict keys, else the model's output names, else indices."""
    if isinstance(outputs, dict):
        return [path[0] for path, _ in keras.tree.flatten_with_path(outputs)]
    count = len(keras.tree.flatten(outputs))
    if model_names and len(model_names) == count:
        return list(model_names)
    return [str(i) for i in range(count)]


def labelled_outputs(label_spec, outputs, model_names=None, root="y"):
    """Pairs each label tensor with its output; a clear error if the structures differ.

    Args:
        label_spec: the per-example spec of the labels (nested).
        outputs: the model's output spec for a batch (nested).
        model_names: the model's `output_names`, if it has them.
        root: how messages name the labels (`support_y`, ...).

    Returns:
        A `LabelledOutput` per label tensor, in the order of
        `keras.tree.flatten(label_spec)` (Keras' order, as its compiled losses).
    """
    flat_outputs = keras.tree.flatten(outputs)
    labels = named_leaves(label_spec, root)
    if not tf.nest.is_nested(outputs):
        if tf.nest.is_nested(label_spec) and len(labels) != 1:
            raise _mismatch(label_spec, outputs, None, root)
        return [LabelledOutput(labels[0][0], labels[0][1], None, outputs, 0)]
    names = _output_names(outputs, model_names)
    if isinstance(label_spec, dict) and (isinstance(outputs, dict) or model_names):
        keys = [path[0] for path, _ in keras.tree.flatten_with_path(label_spec)]
        if sorted(map(str, keys)) != sorted(names) or len(keys) != len(names):
            raise _mismatch(label_spec, outputs, names, root)
        positions = [names.index(str(key)) for key in keys]
    elif isinstance(label_spec, (list, tuple)) and not isinstance(outputs, dict):
        if len(labels) != len(flat_outputs) or any(tf.nest.is_nested(y) for y in label_spec):
            raise _mismatch(label_spec, outputs, names, root)
        positions = list(range(len(flat_outputs)))
    else:
        raise _mismatch(label_spec, outputs, names, root)
    return [
        LabelledOutput(label_name, label, names[i], flat_outputs[i], i)
        for (label_name, label), i in zip(labels, positions)
    ]


def _mismatch(label_spec, outputs, names, root):
    if not names:
        keyed = " The model has one output: give one label tensor."
    elif isinstance(outputs, dict):
        keyed = f" Give a dict keyed by the output names {names}."
    else:
        keyed = f" Give a dict keyed by the output names {names}, or a list in that order."
    return ValueError(
        f"{root} does not match the model's outputs: labels {describe(label_spec)}, outputs "
        f"{describe(outputs)}.{keyed}"
    )


# tf_maml's own logs: an output's loss tracker (`<output>_loss`) must not take their names.
RESERVED_OUTPUT_NAMES = ("pre_adaptation", "served")


def check_output_names(pairs):
    for pair in pairs:
        if pair.output_name in RESERVED_OUTPUT_NAMES:
            raise ValueError(
                f"An output named {pair.output_name!r} would log {pair.output_name}_loss, a name "
                f"tf_maml logs itself; rename the output (reserved: {RESERVED_OUTPUT_NAMES})."
            )


def is_class_index(pair):
    """Whether `pair`'s labels are integer class indices into a `[batch, classes]` output."""
    return (
        pair.label.dtype.is_integer
        and len(pair.label.shape) == len(pair.output.shape) - 2
        and bool(pair.output.shape[-1])
        and pair.output.shape[-1] > 1
    )


def classes(pairs):
    """For each label tensor, the number of classes it indexes, or None."""
    return [pair.output.shape[-1] if is_class_index(pair) else None for pair in pairs]


def check_labels_fit_outputs(pairs, name="episodes"):
    """Labels are class indices of their output, or shaped like it per example."""
    for pair in pairs:
        output_shape = tuple(pair.output.shape)[1:]
        sparse = pair.label.dtype.is_integer and len(pair.label.shape) == len(output_shape) - 1
        if sparse or pair.label.shape.is_compatible_with(output_shape):
            continue
        output = f"output {pair.output_name!r}" if pair.output_name else "output"
        labels = f"labels {pair.label_name}" if pair.output_name else "labels"
        raise ValueError(
            f"{name}: {labels} of shape {tuple(pair.label.shape)} per example "
            f"do not match the model's {output} of shape {output_shape} per example. Use "
            "integer class labels of shape [tasks, examples], or targets shaped like the output."
        )


def _is_sparse_loss(loss):
    sparse = (keras.losses.SparseCategoricalCrossentropy, keras.losses.sparse_categorical_crossentropy)
    return loss == "sparse_categorical_crossentropy" or isinstance(loss, sparse[0]) or loss is sparse[1]


def _loss_of(loss, pair):
    """The compiled loss that applies to `pair`'s output (Keras' nested loss forms)."""
    if isinstance(loss, dict):
        return loss.get(pair.output_name)
    if isinstance(loss, (list, tuple)):
        return loss[pair.position] if pair.position < len(loss) else None
    return loss


def check_labels_fit_loss(pairs, loss, name="episodes"):
    """A sparse categorical loss gets integer class labels, not one-hot ones."""
    for pair in pairs:
        if _is_sparse_loss(_loss_of(loss, pair)) and not is_class_index(pair):
            raise ValueError(
                f"{name}: a sparse categorical loss needs integer class labels of shape "
                f"[tasks, examples]; {pair.label_name} holds {pair.label.dtype.name} labels of "
                f"shape {tuple(pair.label.shape)} per example. One-hot labels go with "
                "keras.losses.CategoricalCrossentropy; or pass the class indices (argmax) instead."
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
