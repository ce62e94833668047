"""Checks run once when episodes are handed to the meta-learner, before any compute.

Keras' own automatic build would read `(support_x, support_y)` as the model
input, so the model, the compiled loss and the metrics are built here from
per-example specs instead, after the episodes are checked against them.
"""

import keras
import tensorflow as tf

from tf_maml import episodes as episodes_lib
from tf_maml.learners import labels
from tf_maml.keras_patches import (
    all_layers, compile_loss, compile_metrics, compute_output_spec, is_validation_within_fit,
)


def check_compiled_loss(meta):
    if meta.compiled and (compile_loss(meta) is None or meta.loss is None):
        raise ValueError(
            "The meta-learner was compiled without a loss; both the inner and the outer "
            "loop minimize it. Pass one: compile(optimizer=..., loss=...)."
        )


def check_recurrent_kernels(model):
    """Refuses recurrent layers pinned to cuDNN, whose gradient has no gradient."""
    for layer in all_layers(model):
        if getattr(layer, "use_cudnn", None) is True:
            raise ValueError(
                f"{type(layer).__name__} layer {layer.name!r} has use_cudnn=True, but "
                "meta-learning steps run Keras' generic recurrent kernel: cuDNN's gradient "
                "has no gradient, which second-order meta-gradients need. Pass "
                "use_cudnn='auto' (the default; cuDNN is then used outside meta-learning "
                "steps) or use_cudnn=False."
            )


def prepare(meta, x, y=None, name="episodes", check_labels=True):
    """Checks episodes `x` (or arrays `x`, `y`) against `meta`'s model; builds it."""
    check_compiled_loss(meta)
    check_recurrent_kernels(meta.model)
    spec = episodes_lib.spec_of(x, y)
    if spec is None:
        return
    episode = episodes_lib.check_spec(spec, name=name)
    check_inputs_fit_model(meta.model, episode.x, name)
    if not meta.built:
        meta._build_for(episode.x)
    try:
        output = compute_output_spec(meta.model, episodes_lib.batched(episode.x), training=False)
    except Exception as error:
        examples = (f"{episodes_lib.describe(episode.x)}" if tf.nest.is_nested(episode.x) else
                    f"shape {tuple(episode.x.shape)} ({episode.x.dtype.name})")
        raise ValueError(
            f"{name}: examples of {examples} do not fit the wrapped model "
            f"{meta.model.name!r}: {error}"
        ) from error
    pairs = labels.labelled_outputs(episode.y, output, meta.output_names, root="support_y")
    labels.check_output_names(pairs)
    labels.check_labels_fit_outputs(pairs, name=name)
    if meta.compiled:
        labels.check_labels_fit_loss(pairs, meta.loss, name=name)
    classes = labels.classes(pairs)
    if check_labels and any(classes):
        for structure in episodes_lib.first_labels(x, y):
            for count, values in zip(classes, keras.tree.flatten(structure)):
                if count:
                    labels.check_label_range(values, count, name=name)
    if meta._episode_spec is None:  # the first episodes that pass every check
        meta._episode_spec = episode
    build_loss_and_metrics(meta, episode.x, episode.y)


def build_loss_and_metrics(meta, example_spec, label_spec, metrics=True):
    """Builds the compiled loss (and metrics), eagerly, for examples and labels of these specs.

    Keras would build them in the first traced step, where the per-output
    loss trackers of several outputs cannot be made.
    """
    if not meta.compiled:
        return
    with tf.init_scope():
        output = compute_output_spec(meta.model, episodes_lib.batched(example_spec), training=False)
        targets = episodes_lib.batched(label_spec)
        loss = compile_loss(meta)
        if loss is not None and not loss.built:
            compute_output_spec(loss, targets, output)
        if metrics and compile_metrics(meta) is not None and not compile_metrics(meta).built:
            compute_output_spec(meta.compute_metrics, None, targets, output)


def model_inputs(model):
    """The model's symbolic inputs, nested as it takes them, or None if it has none."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):  # never called as a functional model
        inputs = getattr(model, "inputs", None) or None
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        return inputs[0]  # keras.Model([x], ...) takes one tensor too
    return inputs


def _input_names(model):
    """The model's input structure with names at the leaves, or None (subclassed models)."""
    inputs = model_inputs(model)
    return None if inputs is None else tf.nest.map_structure(lambda t: t.name, inputs)


def check_inputs_fit_model(model, example_spec, name="episodes"):
    """Examples structured as the model's inputs: one tensor, or a dict keyed by the input
    names, or a list in input order."""
    names = _input_names(model)
    if names is None:
        return  # a subclassed model: its call says
    # A dict of inputs is keyed by its keys; a list, by its tensors' names.
    flat_names = list(names) if isinstance(names, dict) else tf.nest.flatten(names)
    if isinstance(example_spec, dict):
        fits = sorted(map(str, example_spec)) == sorted(flat_names) and all(
            not tf.nest.is_nested(s) for s in example_spec.values()
        )
    elif tf.nest.is_nested(example_spec):
        fits = not isinstance(names, dict) and len(tf.nest.flatten(example_spec)) == len(flat_names)
    else:
        fits = len(flat_names) == 1
    if not fits:
        raise ValueError(
            f"{name}: support_x and query_x hold examples of {episodes_lib.describe(example_spec)}, "
            f"which do not match the inputs of {model.name!r}, {names}. Give one tensor per "
            "input: a dict keyed by the input names"
            + (", or a list in input order." if not isinstance(names, dict) else ".")
        )


def prepare_validation(meta, validation_data):
    """`fit(validation_data=...)`: datasets and arrays are checked; other data as Keras reads it."""
    if isinstance(validation_data, tf.data.Dataset):
        prepare(meta, validation_data, name="validation_data")
    elif isinstance(validation_data, (tuple, list)):
        prepare(meta, *validation_data[:2], name="validation_data")




class CheckedEntryPoints:
    """Mixed into `MAML`: Keras' entry points, with episodes checked as they arrive.

    `fit`, `evaluate`, `train_on_batch`, `test_on_batch` and `predict` check
    the episodes (`prepare`) before Keras runs a step (`MetaLearner` raises
    the faults a step records).
    """

    def only_optimizer_to_build(self):
        """Whether `prepare` built the model, loss and metrics (Keras need only build the
        optimizer)."""
        return self.built and all(
            part is None or part.built for part in (compile_loss(self), compile_metrics(self))
        )

    def fit(self, x=None, y=None, *args, **kwargs):
        prepare(self, x, y)
        prepare_validation(self, kwargs.get("validation_data"))
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if not is_validation_within_fit(kwargs):  # checked by fit
            prepare(self, x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x=None, y=None, *args, **kwargs):
        prepare(self, x, y)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x=None, y=None, *args, **kwargs):
        prepare(self, x, y)
        return super().test_on_batch(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """Query predictions after adaptation, `[tasks, query_examples, ...]`.

        `x`: episodes as for `evaluate` (query labels are ignored), or
        `((support_x, support_y), query_x)` arrays.
        """
        if isinstance(x, tf.data.Dataset):
            prepare(self, x, check_labels=False)
        return super().predict(x, *args, **kwargs)
