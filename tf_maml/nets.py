"""The backbones of the MAML papers, as plain Keras models."""

import keras

from tf_maml.layers import SpecAugment, TaskNormalization
from tf_maml.task_context import TaskContext

NORMALIZATIONS = ("batch", "task")


def _normalization_layer(normalization):
    """The layer class of `normalization`: "batch" or "task"."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}; received {normalization!r}."
        )
    return keras.layers.BatchNormalization if normalization == "batch" else TaskNormalization


def mlp(inputs=1, hidden=(40, 40), outputs=1, activation="relu", context=0, name="mlp"):
    """The sinusoid regression network of the MAML paper (1-40-40-1, ReLU).

    Args:
        inputs: features per example.
        hidden: widths of the hidden layers.
        outputs: outputs per example.
        activation: activation of the hidden layers.
        context: CAVIA's context parameters appended to the input
            (`tf_maml.layers.TaskContext`); 0: none.
        name: model name.

    Returns:
        A `keras.Sequential` model mapping `[batch, inputs]` to `[batch, outputs]`.
    """
    layers = [keras.Input((inputs,))]
    if context:
        layers.append(TaskContext(context))
    layers += [keras.layers.Dense(width, activation=activation) for width in hidden]
    layers += [keras.layers.Dense(outputs)]
    return keras.Sequential(layers, name=name)


def conv4(num_classes, input_shape=(28, 28, 1), filters=64, blocks=4, downsample="max_pool",
          normalization="batch", context=0, name="conv4"):
    """The few-shot classification backbone of the MAML papers.

    `blocks` x [3x3 convolution, normalization, ReLU, 2x2 down-sampling],
    then a dense layer of `num_classes` logits. 64 filters for Omniglot, 32 for
    mini-ImageNet-like data; the original Omniglot code down-sampled with
    stride-2 convolutions (`downsample="stride"`) instead of max-pooling.

    Args:
        num_classes: logits per example (the number of ways).
        input_shape: shape of one image.
        filters: filters per convolution.
        blocks: number of convolutional blocks.
        downsample: `"max_pool"` or `"stride"`.
        normalization: `"batch"` (BatchNormalization, as the papers) or
            `"task"` (`tf_maml.layers.TaskNormalization`, TaskNorm-I: queries
            normalized with the support set's moments blended with their own).
        context: CAVIA's context parameters (`tf_maml.layers.TaskContext`)
            appended as constant channels to the feature maps entering the
            third block (where CAVIA's paper conditions); 0: none.
        name: model name.

    Returns:
        A `keras.Sequential` model returning logits.
    """
    layers = [keras.Input(input_shape)]
    layers += _conv_blocks(filters, blocks, downsample, normalization, context)
    layers += [keras.layers.Flatten(), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name=name)


def _conv_blocks(filters, blocks, downsample, normalization, context):
    """conv4's blocks: [3x3 convolution, normalization, ReLU, 2x2 down-sampling] each."""
    if downsample not in ("max_pool", "stride"):
        raise ValueError(f"`downsample` must be 'max_pool' or 'stride'; received {downsample!r}.")
    norm = _normalization_layer(normalization)
    layers = []
    for block in range(blocks):
        if context and block == min(2, blocks - 1):
            # CAVIA's place (its FiLM before the third block): constant context channels
            # there give that block's convolution a shift per channel and task.
            layers.append(TaskContext(context))
        strides = 2 if downsample == "stride" else 1
        layers += [
            keras.layers.Conv2D(filters, 3, strides=strides, padding="same"),
            norm(),
            keras.layers.ReLU(),
        ]
        if downsample == "max_pool":
            layers.append(keras.layers.MaxPooling2D(2))
    return layers


def keyword_convnet(num_classes, sample_rate=16000, duration=1.0, num_mel_bins=40,
                    frame_length=0.025, frame_step=0.01, filters=64, blocks=4,
                    normalization="batch", augment=None, context=0, name="keyword_convnet"):
    """A keyword spotter from raw waveforms: log-mel spectrogram, then conv4's blocks.

    The front end is `keras.layers.MelSpectrogram` (log-mel energies in dB,
    each example on its own: no cut-off relative to the batch's loudest),
    scaled to about unit range, then `tf_maml.layers.SpecAugment` when
    `augment` is given (training only), then `blocks` convolutional blocks
    as `conv4` and a dense layer of logits. The model takes
    `[batch, duration * sample_rate]` float waveforms in [-1, 1], so a served
    model needs no feature code.

    Args:
        num_classes: logits per example (the number of ways).
        sample_rate, duration: of the waveforms.
        num_mel_bins: mel bands.
        frame_length, frame_step: seconds per analysis window, and between windows.
        filters, blocks, normalization, context: as `conv4`.
        augment: None, or the `SpecAugment` arguments as a dict, e.g.
            `{"frequency_masks": 2, "max_frequency_width": 8, "time_masks": 2,
            "max_time_width": 10}`.
        name: model name.
    """
    samples = int(round(sample_rate * duration))
    window, step = int(round(frame_length * sample_rate)), int(round(frame_step * sample_rate))
    if not 1 <= step <= window <= samples:
        raise ValueError(f"Frames must fit: 1 <= frame_step ({step} samples) <= frame_length "
                         f"({window} samples) <= duration ({samples} samples).")
    fft_length = 1 << (window - 1).bit_length()
    mel = keras.layers.MelSpectrogram(
        fft_length=fft_length, sequence_stride=step, sequence_length=window,
        sampling_rate=sample_rate, num_mel_bins=num_mel_bins,
        # The cut-off top_db is relative to the whole batch's maximum: made inactive so
        # an example's features do not depend on the examples beside it.
        top_db=1e9)
    frames = samples // step + 1
    layers = [keras.Input((samples,)), mel,
              # dB of 16-bit speech lie in about [-100, 25]: scaled to about [-1, 1.5].
              keras.layers.Rescaling(1.0 / 50.0, offset=1.0),
              keras.layers.Reshape((num_mel_bins, frames, 1))]
    if augment:
        layers.append(SpecAugment(**dict(augment)))
    layers += _conv_blocks(filters, blocks, "max_pool", normalization, context)
    layers += [keras.layers.Flatten(), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name=name)


def resnet12(num_classes, input_shape=(84, 84, 3), filters=(64, 160, 320, 640),
             normalization="batch", negative_slope=0.1, name="resnet12"):
    """ResNet-12, the backbone of MetaOptNet and TADAM and of most later few-shot papers.

    Four residual blocks, each three [3x3 convolution, normalization] with a
    leaky ReLU between them, a 1x1 convolution + normalization shortcut, a
    leaky ReLU after the sum and 2x2 max-pooling; then global average pooling
    and a dense layer of `num_classes` logits. (MetaOptNet adds DropBlock
    regularization, left out here: add Dropout layers to a copy if wanted.)

    Args:
        num_classes: logits per example (the number of ways).
        input_shape: shape of one image (84x84x3 for mini-ImageNet, 32x32x3 for CIFAR-FS).
        filters: channels of the four blocks.
        normalization: `"batch"` or `"task"` (see `conv4`).
        negative_slope: of the leaky ReLUs.
        name: model name.

    Returns:
        A functional `keras.Model` returning logits.
    """
    if len(filters) != 4:
        raise ValueError(f"`filters` must give the channels of 4 blocks; received {filters!r}.")
    norm = _normalization_layer(normalization)
    images = keras.Input(input_shape)
    x = images
    for block, channels in enumerate(filters, start=1):
        shortcut = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"block{block}_shortcut")(x)
        shortcut = norm(name=f"block{block}_shortcut_norm")(shortcut)
        for conv in range(1, 4):
            x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                    name=f"block{block}_conv{conv}")(x)
            x = norm(name=f"block{block}_norm{conv}")(x)
            if conv < 3:
                x = keras.layers.LeakyReLU(negative_slope)(x)
        x = keras.layers.LeakyReLU(negative_slope)(keras.layers.Add()([x, shortcut]))
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def without_head(model, name=None):
    """`model` up to its last layer, as a functional model sharing its layers: the
    embedding of a classifier (e.g. for `tf_maml.ProtoMAML`, which makes its own head).

    `model` must be Sequential or functional with an input (the nets here are).
    """
    if not getattr(model, "inputs", None) or len(model.layers) < 2:
        raise ValueError(
            f"without_head() takes a Sequential or functional model with an Input and at least "
            f"two layers; {model.name!r} has {'no input' if not getattr(model, 'inputs', None) else 'one layer'}.")
    # The last layer's input, not the layer before's output: a functional model's last
    # layer need not follow the layer listed before it.
    return keras.Model(model.inputs, model.layers[-1].input, name=name or f"{model.name}_embedding")
