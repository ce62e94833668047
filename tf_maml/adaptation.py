"""Adaptation outside meta-training: standalone adapted models and serving."""

import keras
import tensorflow as tf
from keras.src import backend as keras_backend


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


def standalone_model(meta, support_x, support_y, steps=None):
    """The model adapted to one support set, as a new `keras.Model`."""
    steps = meta.eval_inner_steps if steps is None else int(steps)
    support_x = tf.convert_to_tensor(support_x)
    support_y = tf.convert_to_tensor(support_y)
    if not meta.built:
        meta.build((None,) + tuple(support_x.shape[1:]))
    _check_task(meta, support_x, support_y)
    params, state = meta._adapted_values(support_x, support_y, steps)

    adapted = keras.models.clone_model(meta.model)
    adapted.name = f"{meta.model.name}_adapted"
    if not adapted.built:
        keras_backend.compute_output_spec(
            adapted, keras.KerasTensor((None,) + meta.example_shape), training=False
        )
    for variable, value in zip(adapted.trainable_variables, params):
        variable.assign(value)
    for variable, value in zip(adapted.non_trainable_variables, state):
        variable.assign(value)
    return adapted


def export_adaptive(meta, filepath, steps=None):
    """Writes a SavedModel with an `adapt_and_predict` signature (see MAML)."""
    steps = meta.eval_inner_steps if steps is None else int(steps)
    label_shape, label_dtype = meta.label_spec
    x_spec = tf.TensorSpec((None,) + meta.example_shape, meta.input_dtype, "support_x")
    y_spec = tf.TensorSpec((None,) + label_shape, label_dtype, "support_y")
    query_spec = tf.TensorSpec((None,) + meta.example_shape, meta.input_dtype, "query_x")

    def adapt_and_predict(support_x, support_y, query_x):
        params, state = meta._adapted_values(support_x, support_y, steps)
        predictions, _, _ = meta._forward(params, state, query_x, training=False)
        return predictions

    archive = keras.export.ExportArchive()
    archive.track(meta.model)
    archive.add_endpoint(
        "adapt_and_predict", adapt_and_predict, input_signature=[x_spec, y_spec, query_spec]
    )
    archive.write_out(filepath, verbose=False)

