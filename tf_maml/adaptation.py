"""Adaptation outside meta-training: standalone adapted models and serving."""

import keras
import tensorflow as tf

from tf_maml.arguments import checked_int
from tf_maml.keras_patches import compute_output_spec


def _checked_steps(meta, steps, name):
    if steps is None:
        return meta.eval_inner_steps
    return checked_int(steps, "steps", 0, label=f"`steps` of {name}()")


def _label_message(classes):
    return (
        f"support_y must hold class labels in [0, {classes}) for a model with {classes} "
        "outputs (indices within the task, 0 .. ways - 1)"
    )


def _check_task(meta, support_x, support_y):
    features = meta.example_shape
    if support_x.shape.rank != len(features) + 1 or not support_x.shape[1:].is_compatible_with(
        features
    ):
        raise ValueError(
            f"adapt() takes the support set of one task, shape [examples, *{list(features)}] "
            f"(no task axis); received support_x of shape {support_x.shape}."
        )
    if support_y.shape.rank < 1 or support_y.shape[0] != support_x.shape[0]:
        raise ValueError(
            f"support_y must hold one label per support example ({support_x.shape[0]}); "
            f"received shape {support_y.shape}."
        )
    if support_x.shape[0] == 0:
        raise ValueError("adapt() needs at least one support example; received none.")
    classes = meta.inner_loop.label_classes(features, support_x.dtype)
    if classes and support_y.dtype.is_integer and support_y.shape.rank == 1:
        labels = support_y.numpy()
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"{_label_message(classes)}; received labels from {labels.min()} to "
                f"{labels.max()}."
            )


def _served_values(meta, support_x, support_y, steps):
    """The adapted weights and the state that predicts one example at a time."""
    params, state = meta.inner_loop.current_values()
    return meta.inner_loop.served_values(params, state, support_x, support_y, steps)


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
        loss = meta._compile_loss
        traced_loss, function = self._functions.get(steps, (None, None))
        if traced_loss is not loss:
            function = tf.function(
                lambda sx, sy: _served_values(meta, sx, sy, steps), reduce_retracing=True
            )
            self._functions[steps] = (loss, function)
        return function(support_x, support_y)


def standalone_model(meta, support_x, support_y, steps=None):
    """The model adapted to one support set, as a new `keras.Model`."""
    steps = _checked_steps(meta, steps, "adapt")
    support_x = tf.convert_to_tensor(support_x)
    support_y = tf.convert_to_tensor(support_y)
    if not meta.built:
        meta.build((None,) + tuple(support_x.shape[1:]))
    _check_task(meta, support_x, support_y)
    params, state = meta._traced_adaptation.served_values(meta, support_x, support_y, steps)

    adapted = keras.models.clone_model(meta.model)
    adapted.name = f"{meta.model.name}_adapted"
    if not adapted.built:
        compute_output_spec(
            adapted, keras.KerasTensor((None,) + meta.example_shape), training=False
        )
    for variable, value in zip(adapted.trainable_variables, params):
        variable.assign(value)
    for variable, value in zip(adapted.non_trainable_variables, state):
        variable.assign(value)
    return adapted


def export_adaptive(meta, filepath, steps=None):
    """Writes a SavedModel with an `adapt_and_predict` signature (see MAML)."""
    steps = _checked_steps(meta, steps, "export_adaptive")
    label_shape, label_dtype = meta.label_spec
    x_spec = tf.TensorSpec((None,) + meta.example_shape, meta.input_dtype, "support_x")
    y_spec = tf.TensorSpec((None,) + label_shape, label_dtype, "support_y")
    query_spec = tf.TensorSpec((None,) + meta.example_shape, meta.input_dtype, "query_x")

    classes = meta.inner_loop.label_classes(meta.example_shape, meta.input_dtype)
    sparse = classes and label_dtype.is_integer and not label_shape

    def adapt_and_predict(support_x, support_y, query_x):
        # Served requests are checked in the graph: no Python runs there.
        checks = [tf.debugging.assert_positive(
            tf.shape(support_x)[0], message="support_x must hold at least one example")]
        if sparse:
            checks += [
                tf.debugging.assert_non_negative(support_y, message=_label_message(classes)),
                tf.debugging.assert_less(
                    support_y, tf.cast(classes, support_y.dtype), message=_label_message(classes)
                ),
            ]
        with tf.control_dependencies(checks):
            support_x = tf.identity(support_x)
        params, state = _served_values(meta, support_x, support_y, steps)
        predictions, _, _ = meta.inner_loop.forward(params, state, query_x, training=False)
        return predictions

    archive = keras.export.ExportArchive()
    archive.track(meta)  # the model's weights and the rule's
    archive.add_endpoint(
        "adapt_and_predict", adapt_and_predict, input_signature=[x_spec, y_spec, query_spec]
    )
    archive.write_out(filepath, verbose=False)

