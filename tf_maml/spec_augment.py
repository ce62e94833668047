"""SpecAugment's masking (Park et al., Interspeech 2019) as a Keras layer, offered as
`tf_maml.layers.SpecAugment`: augmentation inside the model, active in training only.

Keras has a mel-spectrogram layer (`keras.layers.MelSpectrogram`) but no
spectrogram masking. Time warping, SpecAugment's third part, is left out (its
authors found it the least useful and the most costly).
"""

import keras
from keras import ops


def _check_count(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0; received {value!r}.")
    return value


@keras.saving.register_keras_serializable(package="tf_maml.layers")
class SpecAugment(keras.layers.Layer):
    """Masks random frequency bands and time spans of spectrograms in training.

    Each example gets its own masks: `frequency_masks` bands of 0 to
    `max_frequency_width` bins and `time_masks` spans of 0 to
    `max_time_width` frames, set to the example's mean (so the mask adds no
    new level). Outside training the layer returns its input unchanged, so a
    served model's predictions are deterministic.

    Args:
        frequency_masks, max_frequency_width: bands masked per example, and
            their widest (bins).
        time_masks, max_time_width: spans masked per example, and their
            longest (frames).
        frequency_axis, time_axis: the axes of an example batch
            `[batch, ...]` (1 and 2 for `keras.layers.MelSpectrogram`'s
            `[batch, mels, frames]`, with or without a channel axis after).
        seed: of the masks (Keras' seed generator).
    """

    def __init__(self, frequency_masks=2, max_frequency_width=8, time_masks=2,
                 max_time_width=10, frequency_axis=1, time_axis=2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.frequency_masks = _check_count("frequency_masks", frequency_masks)
        self.max_frequency_width = _check_count("max_frequency_width", max_frequency_width)
        self.time_masks = _check_count("time_masks", time_masks)
        self.max_time_width = _check_count("max_time_width", max_time_width)
        if frequency_axis == time_axis or min(frequency_axis, time_axis) < 1:
            raise ValueError("`frequency_axis` and `time_axis` must be two different axes "
                             f"after the batch axis; received {frequency_axis}, {time_axis}.")
        self.frequency_axis, self.time_axis = frequency_axis, time_axis
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        for name, axis in (("frequency", self.frequency_axis), ("time", self.time_axis)):
            if axis >= len(input_shape) or input_shape[axis] is None:
                raise ValueError(f"SpecAugment needs a known {name} axis ({axis}); the input "
                                 f"has shape {input_shape}.")

    def _bands(self, batch, size, count, max_width):
        """`[batch, size]` booleans: `count` random spans of up to `max_width` per row."""
        masked = ops.zeros((batch, size), "bool")
        positions = ops.arange(size)[None, :]
        for _ in range(count):
            width = keras.random.randint((batch, 1), 0, min(max_width, size) + 1,
                                         seed=self.seed_generator)
            room = ops.cast(size - width + 1, "float32")
            start = ops.cast(keras.random.uniform((batch, 1), seed=self.seed_generator) * room,
                             "int32")
            masked = ops.logical_or(masked, ops.logical_and(positions >= start,
                                                            positions < start + width))
        return masked

    def _along(self, bands, axis, rank):
        """`bands` `[batch, size]` laid along `axis` of a rank-`rank` batch."""
        shape = [-1] + [1] * (rank - 1)
        shape[axis] = bands.shape[1]
        return ops.reshape(bands, shape)

    def call(self, inputs, training=False):
        if not training or not (self.frequency_masks or self.time_masks):
            return inputs
        shape, rank = inputs.shape, len(inputs.shape)
        batch = ops.shape(inputs)[0]
        masked = ops.logical_or(
            self._along(self._bands(batch, shape[self.frequency_axis], self.frequency_masks,
                                    self.max_frequency_width), self.frequency_axis, rank),
            self._along(self._bands(batch, shape[self.time_axis], self.time_masks,
                                    self.max_time_width), self.time_axis, rank))
        mean = ops.mean(inputs, axis=tuple(range(1, rank)), keepdims=True)
        return ops.where(masked, ops.cast(mean, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "frequency_masks": self.frequency_masks,
                "max_frequency_width": self.max_frequency_width,
                "time_masks": self.time_masks, "max_time_width": self.max_time_width,
                "frequency_axis": self.frequency_axis, "time_axis": self.time_axis,
                "seed": self.seed}
