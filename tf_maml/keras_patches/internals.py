"""The private Keras functions and attributes tf_maml reads, each behind one name.

Written for Keras 3.15 (`tf_maml.keras_patches.WRITTEN_FOR`); where Keras has
a public API for the job, tf_maml uses that instead.
"""

import keras
import tensorflow as tf
from keras.src import backend as keras_backend
from keras.src.backend.tensorflow import trainer as keras_tf_trainer
from keras.src.losses import loss as loss_module

# A symbolic call (KerasTensors in, specs out) that also builds what it calls.
compute_output_spec = keras_backend.compute_output_spec

# Keras divides a loss by the number of replicas under tf.distribute.
unscale_loss_for_distribution = loss_module.unscale_loss_for_distribution
scale_loss_for_distribution = loss_module.scale_loss_for_distribution


def with_example_mask(outputs, weights):
    """Copies of `outputs` (nested) whose Keras mask leaves out examples of weight 0.

    Keras' losses average over the unmasked entries of a masked prediction,
    whatever their reduction, so a padded batch gives the loss of its real
    examples alone. A mask an output already carries (a sequence's) is kept
    for the real examples.
    """
    valid = weights > 0

    def masked(output):
        mask = valid
        existing = keras_backend.get_keras_mask(output)
        if existing is not None:
            shape = tf.concat([tf.shape(valid), tf.ones([tf.rank(existing) - 1], tf.int32)], 0)
            mask = tf.logical_and(tf.cast(existing, tf.bool), tf.reshape(valid, shape))
        output = tf.identity(output)  # the caller's tensor keeps its own mask
        keras_backend.set_keras_mask(output, mask)
        return output

    return keras.tree.map_structure(masked, outputs)


def update_compile_metrics(compile_metrics, y_true, y_pred, weights=None):
    """`compile_metrics.update_state`, examples of weight 0 (padding) left out.

    Keras gives sample weights to `weighted_metrics` only; padding must leave
    every metric, so the plain `metrics` get weight 1 for each real example
    and the weighted ones `weights`.
    """
    if weights is None:
        compile_metrics.update_state(y_true, y_pred)
        return
    if not compile_metrics.built:
        compile_metrics.build(y_true, y_pred)
    valid = tf.cast(weights > 0, tf.float32)
    flat_true, flat_pred = compile_metrics._flatten_y(y_true), compile_metrics._flatten_y(y_pred)
    for metrics, sample_weight in ((compile_metrics._flat_metrics, valid),
                                   (compile_metrics._flat_weighted_metrics, weights)):
        for metric, y_t, y_p in zip(metrics, flat_true, flat_pred):
            if metric:
                metric.update_state(y_t, y_p, sample_weight=sample_weight)


def is_multi_worker(strategy):
    """Whether Keras reduces logs across workers (its MultiWorkerMirrored path)."""
    return keras_tf_trainer._collective_all_reduce_multi_worker(strategy)


def all_layers(model):
    """Every layer nested in `model`, not `model` itself."""
    return list(model._flatten_layers(include_self=False))


def leaf_layers(model):
    """Layers with trainable weights that hold no layers themselves (Dense, Conv2D, ...)."""
    return [
        layer for layer in all_layers(model)
        if layer.trainable_variables and not layer._flatten_layers(include_self=False)
    ]


def call_has_training_arg(model):
    """Whether `model.call` takes `training` (Keras passes it only then)."""
    return model._call_has_training_arg


def copy_compile_metrics(compile_metrics, copy_metric):
    """A new, unbuilt set of compiled metrics with the user's metrics of `compile_metrics`.

    Each metric object is replaced by `copy_metric(metric)` (dropped where
    that returns None); names and functions are kept, Keras makes their
    metrics anew. Built as Keras builds its own, so nested outputs and
    their names work as in `compile`.
    """
    def copied(metrics):
        if metrics is None:
            return None
        copies = keras.tree.map_structure(
            lambda m: copy_metric(m) if isinstance(m, keras.metrics.Metric) else m, metrics
        )
        if isinstance(copies, dict):
            return {k: _without_none(v) for k, v in copies.items()}
        if any(isinstance(m, (list, tuple)) for m in metrics):  # one list per output
            return [[] if m is None else _without_none(m) for m in copies]
        return _without_none(copies)

    return type(compile_metrics)(
        copied(compile_metrics._user_metrics), copied(compile_metrics._user_weighted_metrics),
        output_names=compile_metrics.output_names,
    )


def _without_none(metrics):
    if isinstance(metrics, (list, tuple)):
        return [_without_none(m) for m in metrics if m is not None]
    return metrics


def compile_loss(model):
    """Keras' compiled loss of `model` (nested losses, loss weights, per-output trackers),
    or None before `compile`."""
    return getattr(model, "_compile_loss", None)


def compile_metrics(model):
    """Keras' compiled metrics of `model`, or None before `compile` or without metrics."""
    return getattr(model, "_compile_metrics", None)


def loss_tracker(model):
    """The `Mean` that Keras logs as `loss`."""
    return model._loss_tracker


def set_initial_epoch(model, epoch):
    """Makes the next `fit` of `model` start at `epoch` (as Keras' BackupAndRestore does)."""
    model._initial_epoch = epoch


def export_value(archive, name, value):
    """Saves `value` with a `keras.export.ExportArchive` as `tf.saved_model.load(...).<name>`
    (a non-trainable `tf.Variable`), and a function `<name>_<value>` returning it, which
    `saved_model_cli show --all` lists by name. Keras offers variable collections only as
    lists; the archive's own trackable holds the attribute."""
    variable = tf.Variable(value, trainable=False, name=name)
    setattr(archive._tf_trackable, name, variable)
    setattr(archive._tf_trackable, f"{name}_{value}",
            tf.function(variable.read_value, input_signature=[]))


def is_validation_within_fit(kwargs):
    """Whether `evaluate(**kwargs)` is the validation `fit` runs (with fit's callbacks)."""
    return bool(kwargs.get("_use_cached_eval_dataset"))


class BuildsItself:
    """Mixed into a `keras.Model` that builds itself from the data handed to `fit`.

    Keras' symbolic build reads a batch as `(x, y)` and calls the model on
    `x` (under tf.distribute it also reduces the batch across replicas, which
    fails for MultiWorkerMirrored). Where `only_optimizer_to_build()` says so,
    only the compiled optimizer is built instead.
    """

    def only_optimizer_to_build(self):
        return True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.only_optimizer_to_build():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
