"""Layers built for meta-learning: TaskNorm (Bronskill et al., ICML 2020) here, and
CAVIA's `TaskContext` (`tf_maml/task_context.py`) and SpecAugment's masking
(`tf_maml/spec_augment.py`), offered here as `tf_maml.layers.TaskContext` and
`tf_maml.layers.SpecAugment`.

BatchNormalization in few-shot learning either normalizes the queries with
their own batch's statistics (transductive: the accuracy depends on which
other queries arrive together) or with the support set's only (a small set,
whose moments are noisy). TaskNorm blends the support ("context") set's
moments with each example's own moments, with a weight `alpha` learned as a
function of the context size, so one query can be predicted alone and still
be normalized well.

Training-mode calls treat the batch as the context: they normalize with its
moments blended with each example's, and store the moments and the batch
size in non-trainable variables. Inference-mode calls blend the stored
context moments with each example's own, so a prediction depends on that
example and the stored context only. The meta-learners run the support set
through the model in training mode before predicting queries in inference
mode (`transductive=False`, `adapt`, `export_adaptive`), exactly as they do
to give BatchNormalization the support set's statistics.
"""

import keras
from keras import ops

from tf_maml.keras_patches import current_example_weights
from tf_maml.spec_augment import SpecAugment  # noqa: F401 (tf_maml.layers.SpecAugment)
from tf_maml.task_context import TaskContext  # noqa: F401 (tf_maml.layers.TaskContext)

MOMENTS = ("instance", "layer")
_HALF_DTYPES = ("float16", "bfloat16")


@keras.saving.register_keras_serializable(package="tf_maml.layers")
class TaskNormalization(keras.layers.Layer):
    """TaskNorm-I (instance moments) or TaskNorm-L (layer moments).

    For inputs `x` with the channel axis `axis`, the moments used are

        mean = alpha * context_mean + (1 - alpha) * own_mean
        var  = alpha * (context_var + (context_mean - mean)**2)
             + (1 - alpha) * (own_var + (own_mean - mean)**2)

    where `own_*` are each example's moments over its non-channel axes
    (`moments="instance"`) or over all its axes (`moments="layer"`), and
    `alpha = sigmoid(alpha_scale * context_size + alpha_offset)` with the two
    learned scalars of the layer. Then `gamma * (x - mean) / sqrt(var + epsilon) + beta`.

    Before any training-mode call the stored context is empty (mean 0,
    variance 1, size 0).

    Args:
        moments: `"instance"` (TaskNorm-I; inputs need an axis besides the
            batch and channel axes, e.g. conv features) or `"layer"` (TaskNorm-L).
        axis: the channel axis, normalized per channel.
        epsilon: added to the variance.
        center, scale: learn `beta` / `gamma`.
        beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in `keras.layers.BatchNormalization`.
        alpha_scale_initializer, alpha_offset_initializer: of the two
            scalars giving `alpha`; zeros (alpha = 0.5 at the start), as the paper.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        moments="instance",
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        alpha_scale_initializer="zeros",
        alpha_offset_initializer="zeros",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if moments not in MOMENTS:
            raise ValueError(f"`moments` must be one of {MOMENTS}; received {moments!r}.")
        if not isinstance(axis, int):
            raise TypeError(f"`axis` must be one int (the channel axis); received {axis!r}.")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive; received {epsilon!r}.")
        self.moments = moments
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.alpha_scale_initializer = keras.initializers.get(alpha_scale_initializer)
        self.alpha_offset_initializer = keras.initializers.get(alpha_offset_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)

    def build(self, input_shape):
        rank = len(input_shape)
        self.axis = self.axis % rank if -rank <= self.axis < rank else self.axis
        if not 0 < self.axis < rank:
            raise ValueError(
                f"TaskNormalization {self.name!r}: axis {self.axis} is not a channel axis "
                f"of inputs of shape {tuple(input_shape)} (axis 0 is the batch)."
            )
        if self.moments == "instance" and rank < 3:
            raise ValueError(
                f"TaskNormalization {self.name!r}: instance moments need an axis besides "
                f"the batch and channel axes; inputs of shape {tuple(input_shape)} have "
                "none. Use moments='layer' (TaskNorm-L) for such inputs."
            )
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(
                f"TaskNormalization {self.name!r}: the channel axis {self.axis} of inputs "
                f"of shape {tuple(input_shape)} must have a known size."
            )
        shape = (channels,)
        # Full precision under mixed-precision policies, as BatchNormalization's.
        def weight(name, shape, initializer, **kwargs):
            return self.add_weight(
                shape=shape, name=name, initializer=initializer, autocast=False, **kwargs
            )

        self.gamma = weight(
            "gamma", shape, self.gamma_initializer, regularizer=self.gamma_regularizer,
            constraint=self.gamma_constraint,
        ) if self.scale else None
        self.beta = weight(
            "beta", shape, self.beta_initializer, regularizer=self.beta_regularizer,
            constraint=self.beta_constraint,
        ) if self.center else None
        self.alpha_scale = weight("alpha_scale", (), self.alpha_scale_initializer)
        self.alpha_offset = weight("alpha_offset", (), self.alpha_offset_initializer)
        self.context_mean = weight("context_mean", shape, "zeros", trainable=False)
        self.context_variance = weight("context_variance", shape, "ones", trainable=False)
        self.context_size = weight("context_size", (), "zeros", trainable=False)
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: channels})

    def call(self, inputs, training=False):
        dtype = inputs.dtype
        # Moments of 16-bit activations in float32, as BatchNormalization does.
        x = ops.cast(inputs, "float32") if dtype in _HALF_DTYPES else inputs
        rank = len(x.shape)
        not_channel = [a for a in range(rank) if a != self.axis]
        broadcast = [1] * rank
        broadcast[self.axis] = x.shape[self.axis]

        own_axes = not_channel[1:] if self.moments == "instance" else list(range(1, rank))
        own_mean, own_variance = _moments(x, own_axes)
        weights = current_example_weights()  # padded episodes: padding examples left out
        if training and weights is not None:
            per_example = (own_mean, own_variance) if self.moments == "instance" else (
                _moments(x, not_channel[1:]))
            valid = ops.reshape(ops.cast(weights > 0, x.dtype), [-1] + [1] * (rank - 1))
            context_size = ops.sum(valid)
            context_mean = ops.sum(per_example[0] * valid, axis=0, keepdims=True) / context_size
            context_variance = ops.sum(
                (per_example[1] + ops.square(per_example[0] - context_mean)) * valid,
                axis=0, keepdims=True) / context_size
            self._store_context(context_mean, context_variance, context_size)
        elif training:
            if self.moments == "instance":
                # The batch moments from the instance ones (law of total
                # variance): one pass over the activations fewer.
                context_mean = ops.mean(own_mean, axis=0, keepdims=True)
                context_variance = ops.mean(
                    own_variance + ops.square(own_mean - context_mean), axis=0, keepdims=True
                )
            else:
                context_mean, context_variance = _moments(x, not_channel)
            context_size = ops.cast(ops.shape(x)[0], "float32")
            self._store_context(context_mean, context_variance, context_size)
        else:
            context_mean = ops.reshape(ops.cast(self.context_mean, x.dtype), broadcast)
            context_variance = ops.reshape(ops.cast(self.context_variance, x.dtype), broadcast)
            context_size = self.context_size

        alpha = ops.cast(
            ops.sigmoid(self.alpha_scale * ops.cast(context_size, self.alpha_scale.dtype)
                        + self.alpha_offset),
            x.dtype,
        )
        mean = alpha * context_mean + (1.0 - alpha) * own_mean
        variance = (alpha * (context_variance + ops.square(context_mean - mean))
                    + (1.0 - alpha) * (own_variance + ops.square(own_mean - mean)))
        # x * scale + shift: two passes over the activations instead of four.
        scale = ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            scale = scale * ops.reshape(ops.cast(self.gamma, x.dtype), broadcast)
        shift = -mean * scale
        if self.beta is not None:
            shift = shift + ops.reshape(ops.cast(self.beta, x.dtype), broadcast)
        outputs = x * scale + shift
        return ops.cast(outputs, dtype)

    def _store_context(self, mean, variance, size):
        for variable, value in ((self.context_mean, mean), (self.context_variance, variance),
                                (self.context_size, size)):
            variable.assign(ops.cast(ops.reshape(value, variable.shape), variable.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        serialize = keras.initializers.serialize
        return {
            **super().get_config(),
            "moments": self.moments,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": serialize(self.beta_initializer),
            "gamma_initializer": serialize(self.gamma_initializer),
            "alpha_scale_initializer": serialize(self.alpha_scale_initializer),
            "alpha_offset_initializer": serialize(self.alpha_offset_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
        }


def _moments(x, axes):
    """Mean and biased variance over `axes`, kept as size-1 axes; plain reductions,
    so differentiable to any order."""
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    return mean, variance
