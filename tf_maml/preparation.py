"""Checks run once when episodes are handed to the meta-learner, before any compute.

Keras' own automatic build would read `(support_x, support_y)` as the model
input, so the model, the compiled loss and the metrics are built here from
per-example specs instead, after the episodes are checked against them.
"""

import keras
import tensorflow as tf

from tf_maml import episodes as episodes_lib
from tf_maml import guards
from tf_maml.keras_patches import all_layers, compute_output_spec


def check_compiled_loss(meta):
    if meta.compiled and (meta._compile_loss is None or meta.loss is None):
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
    example_shape = (None,) + episode.features
    if not meta.built:
        meta.build(example_shape)
    try:
        output = compute_output_spec(
            meta.model, keras.KerasTensor(example_shape, episode.x_dtype.name), training=False
        )
    except Exception as error:
        raise ValueError(
            f"{name}: examples of shape {episode.features} ({episode.x_dtype.name}) do "
            f"not fit the wrapped model {meta.model.name!r}: {error}"
        ) from error
    if tf.nest.is_nested(output):
        raise ValueError(
            f"The wrapped model must have a single output; {meta.model.name!r} returns "
            f"{tf.nest.map_structure(lambda t: t.shape, output)}."
        )
    episodes_lib.check_labels_fit_outputs(episode, output.shape, name=name)
    if meta.compiled:
        episodes_lib.check_labels_fit_loss(episode, output.shape, meta.loss, name=name)
    num_classes = output.shape[-1]
    if check_labels and episode.label_dtype.is_integer and num_classes and num_classes > 1:
        for labels in episodes_lib.first_labels(x, y):
            episodes_lib.check_label_range(labels, num_classes, name=name)
    if meta._episode_spec is None:  # the first episodes that pass every check
        meta._episode_spec = episode
    if meta.compiled:
        labels = keras.KerasTensor((None,) + episode.label_shape, episode.label_dtype.name)
        if meta._compile_loss is not None and not meta._compile_loss.built:
            compute_output_spec(meta._compute_loss, None, labels, output)
        if meta._compile_metrics is not None and not meta._compile_metrics.built:
            compute_output_spec(meta.compute_metrics, None, labels, output)


def prepare_validation(meta, validation_data):
    """`fit(validation_data=...)`: datasets and arrays are checked; other data as Keras reads it."""
    if isinstance(validation_data, tf.data.Dataset):
        prepare(meta, validation_data, name="validation_data")
    elif isinstance(validation_data, (tuple, list)):
        prepare(meta, *validation_data[:2], name="validation_data")


def only_optimizer_left_to_build(meta):
    """Whether `prepare` built the model, loss and metrics (Keras need only build the optimizer)."""
    return meta.built and all(
        part is None or part.built for part in (meta._compile_loss, meta._compile_metrics)
    )


class CheckedEntryPoints:
    """Mixed into `MAML`: Keras' entry points, with episodes checked as they arrive.

    `fit`, `evaluate`, `train_on_batch`, `test_on_batch` and `predict` check
    the episodes (`prepare`) before Keras runs a step, and `fit` and
    `evaluate` raise the faults a step records (`tf_maml.guards`).
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' own symbolic build would read a batch (under tf.distribute,
        # reduce it across replicas, which fails for MultiWorkerMirrored) and
        # take (support_x, support_y) for the model input.
        if not only_optimizer_left_to_build(self):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _with_fault_callback(self, kwargs):
        if kwargs.get("_use_cached_eval_dataset"):  # validation inside fit: its callbacks
            return kwargs
        callbacks = list(kwargs.get("callbacks") or [])
        kwargs["callbacks"] = [guards.RaiseOnFault(self._guard, self._divergence_hint)] + callbacks
        return kwargs

    def _raise_if_fault(self, phase, call):
        self._guard.reset()
        result = call()
        self._guard.raise_if_fault(phase, self._divergence_hint())
        return result

    def fit(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        prepare(self, x, y)
        prepare_validation(self, kwargs.get("validation_data"))
        return super().fit(x, y, *args, **self._with_fault_callback(kwargs))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if not kwargs.get("_use_cached_eval_dataset"):
            prepare(self, x, y)
        return super().evaluate(x, y, *args, **self._with_fault_callback(kwargs))

    def train_on_batch(self, x=None, y=None, *args, **kwargs):
        prepare(self, x, y)
        return self._raise_if_fault(
            "train", lambda: super(CheckedEntryPoints, self).train_on_batch(x, y, *args, **kwargs)
        )

    def test_on_batch(self, x=None, y=None, *args, **kwargs):
        prepare(self, x, y)
        return self._raise_if_fault(
            "evaluation", lambda: super(CheckedEntryPoints, self).test_on_batch(x, y, *args, **kwargs)
        )

    def predict(self, x, *args, **kwargs):
        """Query predictions after adaptation, `[tasks, query_examples, ...]`.

        `x`: episodes as for `evaluate` (query labels are ignored), or
        `((support_x, support_y), query_x)` arrays.
        """
        if isinstance(x, tf.data.Dataset):
            prepare(self, x, check_labels=False)
        return super().predict(x, *args, **kwargs)
