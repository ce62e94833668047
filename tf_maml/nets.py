"""The backbones of the MAML papers, as plain Keras models."""

import keras

from tf_maml.layers import TaskNormalization

NORMALIZATIONS = ("batch", "task")


def mlp(inputs=1, hidden=(40, 40), outputs=1, activation="relu", name="mlp"):
    """The sinusoid regression network of the MAML paper (1-40-40-1, ReLU).

    Args:
        inputs: features per example.
        hidden: widths of the hidden layers.
        outputs: outputs per example.
        activation: activation of the hidden layers.
        name: model name.

    Returns:
        A `keras.Sequential` model mapping `[batch, inputs]` to `[batch, outputs]`.
    """
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(width, activation=activation) for width in hidden]
    layers += [keras.layers.Dense(outputs)]
    return keras.Sequential(layers, name=name)


def conv4(num_classes, input_shape=(28, 28, 1), filters=64, blocks=4, downsample="max_pool",
          normalization="batch", name="conv4"):
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
        name: model name.

    Returns:
        A `keras.Sequential` model returning logits.
    """
    if downsample not in ("max_pool", "stride"):
        raise ValueError(f"`downsample` must be 'max_pool' or 'stride'; received {downsample!r}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}; received {normalization!r}."
        )
    norm = keras.layers.BatchNormalization if normalization == "batch" else TaskNormalization
    layers = [keras.Input(input_shape)]
    for _ in range(blocks):
        strides = 2 if downsample == "stride" else 1
        layers += [
            keras.layers.Conv2D(filters, 3, strides=strides, padding="same"),
            norm(),
            keras.layers.ReLU(),
        ]
        if downsample == "max_pool":
            layers.append(keras.layers.MaxPooling2D(2))
    layers += [keras.layers.Flatten(), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name=name)
