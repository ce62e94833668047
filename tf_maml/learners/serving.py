"""Adaptation outside meta-training: standalone adapted models and serving."""

import keras
import tensorflow as tf

from tf_maml import episodes
from tf_maml.learners import guards
from tf_maml.learners import labels
from tf_maml.learners import request_guards
from tf_maml.learners import entry_checks
from tf_maml.learners.arguments import checked_int
from tf_maml.keras_patches import compile_loss, export_value


def _checked_steps(meta, steps, name):
    if steps is None:
        return meta.eval_inner_steps
    return checked_int(steps, "steps", 0, label=f"`steps` of {name}()")


def _label_message(classes, name="support_y"):
    return (
        f"{name} must hold class labels in [0, {classes}) for a model with {classes} "
        "outputs (indices within the task, 0 .. ways - 1)"
    )


def _check_task(meta, support_x, support_y):
    """Checks one task's support set against the meta-learner's examples and labels."""
    example_spec = meta.example_spec
    if not episodes.same_structure(support_x, example_spec):
        raise ValueError(
            f"adapt() takes support_x structured as the model's inputs, "
            f"{episodes.describe(example_spec)} per example; received "
            f"{episodes.describe(support_x)}."
        )
    leaves = episodes.named_leaves(support_x, "support_x")
    for (name, x), spec in zip(leaves, tf.nest.flatten(example_spec)):
        if x.shape.rank != spec.shape.rank + 1 or not x.shape[1:].is_compatible_with(spec.shape):
            raise ValueError(
                f"adapt() takes the support set of one task, shape [examples, "
                f"*{list(spec.shape)}] (no task axis); received {name} of shape {x.shape}."
            )
    examples = leaves[0][1].shape[0]
    label_leaves = episodes.named_leaves(support_y, "support_y")
    for name, tensor in leaves[1:] + label_leaves:
        if tensor.shape.rank < 1 or tensor.shape[0] != examples:
            raise ValueError(
                f"{name} must hold one entry per support example ({examples}); received "
                f"shape {tensor.shape}."
            )
    if examples == 0:
        raise ValueError("adapt() needs at least one support example; received none.")
    pairs = meta._labelled_outputs(example_spec, episodes.per_example(support_y, axes=1),
                                   "support_y")
    for (name, values), classes in zip(label_leaves, labels.classes(pairs)):
        values = values.numpy()
        if classes and (values.min() < 0 or values.max() >= classes):
            raise ValueError(
                f"{_label_message(classes, name)}; received labels from {values.min()} to "
                f"{values.max()}."
            )


def _served_values(meta, support_x, support_y, steps):
    """The adapted weights and the state that predicts one example at a time."""
    params, state = meta.inner_loop.current_values()
    params = meta.starting_weights(params, state, support_x, support_y, None)
    return meta.inner_loop.served_values(params, state, support_x, support_y, steps)


def _finite_served_values(meta, support_x, support_y, steps):
    """`(params, state, finite)`: `_served_values` and whether every value is finite."""
    params, state = _served_values(meta, support_x, support_y, steps)
    return params, state, guards.all_finite(params + state)


class TracedAdaptation:
    """`adapt()`'s computation as a `tf.function` per number of steps, traced once and reused.

    Support sets of other sizes share the trace (`reduce_retracing`). The
    function reads the meta-learner's variables when called, so it follows
    training; after a new `compile` (the task loss may change) it is traced
    anew. Held outside Keras' tracking: not a weight, never saved.
    """

    def __init__(self):
        self._functions = {}  # steps: (the compiled loss traced with, function)

    def served_values(self, meta, support_x, support_y, steps):
        # Keras' loading compiles through compile_from_config, which a
        # compile() override would disable: the compiled loss is compared here.
        loss = compile_loss(meta)
        if loss is None:
            raise ValueError(
                "adapt() and export_adaptive() take inner steps on the compiled loss, and "
                "the meta-learner has none: compile it first, e.g. "
                "meta.compile(optimizer='adam', loss=...).")
        traced_loss, function = self._functions.get(steps, (None, None))
        if traced_loss is not loss:
            function = tf.function(
                lambda sx, sy: _finite_served_values(meta, sx, sy, steps),
                reduce_retracing=True
            )
            self._functions[steps] = (loss, function)
        return function(support_x, support_y)


def _as_tensors(structure, several):
    """Tensors from arrays or lists: one tensor, or one per input or output if `several`."""
    if not several:
        return tf.convert_to_tensor(structure)
    if isinstance(structure, dict):
        return {key: tf.convert_to_tensor(value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [tf.convert_to_tensor(value) for value in structure]
    return tf.convert_to_tensor(structure)  # refused by the checks, with the structures named


def _checked_support_set(meta, support_x, support_y):
    """One task's support set as tensors, checked; the model and the loss built for it."""
    try:
        several_inputs = tf.nest.is_nested(meta.example_spec)
    except ValueError:  # a model without inputs yet: built from this support set
        several_inputs = isinstance(support_x, dict)
    support_x = _as_tensors(support_x, several_inputs)
    if not meta.built:
        meta._build_for(episodes.per_example(support_x, axes=1))
    outputs = meta.inner_loop.output_spec(meta.example_spec)
    support_y = _as_tensors(support_y, tf.nest.is_nested(outputs))
    _check_task(meta, support_x, support_y)
    entry_checks.build_loss_and_metrics(
        meta, meta.example_spec, episodes.per_example(support_y, axes=1), metrics=False
    )
    return support_x, support_y


def standalone_model(meta, support_x, support_y, steps=None):
    """The model adapted to one support set, as a new `keras.Model`."""
    steps = _checked_steps(meta, steps, "adapt")
    support_x, support_y = _checked_support_set(meta, support_x, support_y)
    request_guards.check_request(_named_request(support_x, support_y))
    params, state, finite = meta._traced_adaptation.served_values(
        meta, support_x, support_y, steps)
    request_guards.check_adapted(finite, steps, meta.fault_hint)
    return meta.adapted_model(params, state, meta.example_spec)


def _named_request(support_x, support_y, query_x=None):
    named = (episodes.named_leaves(support_x, "support_x")
             + episodes.named_leaves(support_y, "support_y"))
    return named + ([] if query_x is None else episodes.named_leaves(query_x, "query_x"))


def _signature(spec, prefix):
    """`[None, ...]` specs of a set's tensors, named `prefix` or `prefix_<input or output name>`."""
    leaves = keras.tree.flatten_with_path(spec)
    names = [prefix if not path else "_".join([prefix, *map(str, path)]) for path, _ in leaves]
    return tf.nest.pack_sequence_as(spec, [
        tf.TensorSpec((None,) + tuple(s.shape), s.dtype, name) for name, (_, s) in zip(names, leaves)
    ])


def export_adaptive(meta, filepath, steps=None):
    """Writes a SavedModel with an `adapt_and_predict` signature (see MAML)."""
    steps = _checked_steps(meta, steps, "export_adaptive")
    example_spec, label_spec = meta.example_spec, meta.label_spec
    entry_checks.build_loss_and_metrics(meta, example_spec, label_spec)
    pairs = meta._labelled_outputs(example_spec, label_spec, "support_y")
    checked = [(i, classes) for i, classes in enumerate(labels.classes(pairs)) if classes]

    def adapt_and_predict(support_x, support_y, query_x):
        # Plain dicts and lists: the archive hands over its own tracked containers.
        support_x, query_x = (tf.nest.pack_sequence_as(example_spec, tf.nest.flatten(x))
                              for x in (support_x, query_x))
        support_y = tf.nest.pack_sequence_as(label_spec, tf.nest.flatten(support_y))
        # Served requests are checked in the graph: no Python runs there.
        examples = tf.shape(tf.nest.flatten(support_x)[0])[0]
        checks = [tf.debugging.assert_positive(
            examples, message="support_x must hold at least one example")]
        checks += [
            tf.debugging.assert_equal(
                tf.shape(value)[0], examples,
                message=f"{name} must hold one entry per support example (as many as "
                        "support_x)")
            for name, value in _named_request(support_x, support_y)[1:]]
        checks += request_guards.request_assertions(
            _named_request(support_x, support_y, query_x))
        flat_labels = keras.tree.flatten(support_y)
        for i, classes in checked:
            message = _label_message(classes, pairs[i].label_name)
            checks += [
                tf.debugging.assert_non_negative(flat_labels[i], message=message),
                tf.debugging.assert_less(
                    flat_labels[i], tf.cast(classes, flat_labels[i].dtype), message=message
                ),
            ]
        with tf.control_dependencies(checks):  # nothing runs on a refused request
            support_x, support_y, query_x = tf.nest.map_structure(
                tf.identity, (support_x, support_y, query_x))
        params, state = _served_values(meta, support_x, support_y, steps)
        predictions, _, _ = meta.inner_loop.forward(params, state, query_x, training=False)
        with tf.control_dependencies([request_guards.adapted_assertion(
                params + state, steps, meta.divergence_hint())]):
            return tf.nest.map_structure(
                lambda p: tf.debugging.assert_all_finite(
                    p, "the adapted model's predictions for query_x are not finite")
                if p.dtype.is_floating else tf.identity(p), predictions)

    archive = keras.export.ExportArchive()
    archive.track(meta)  # the model's weights and the rule's
    archive.add_endpoint(
        "adapt_and_predict", adapt_and_predict,
        input_signature=[_signature(example_spec, "support_x"),
                         _signature(label_spec, "support_y"),
                         _signature(example_spec, "query_x")],
    )
    export_value(archive, "inner_steps", steps)  # how many steps it adapts, for its users
    archive.write_out(filepath, verbose=False)
