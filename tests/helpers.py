"""Small models and episodes shared by the tests."""

import keras
import numpy as np


def as_float32(episode):
    return tuple(
        tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in pair) for pair in episode
    )


def classification_episode(rng, tasks=2, ways=3, shots=2, queries=2, image=(8, 8, 1)):
    def draw(per_class):
        x = rng.standard_normal((tasks, ways * per_class) + image)
        y = np.tile(np.repeat(np.arange(ways), per_class), (tasks, 1))
        return x, y.astype(np.int32)

    return draw(shots), draw(queries)


def regression_episode(rng, tasks=3, shots=6, queries=5, features=4, dtype=np.float64):
    def draw(n):
        x = rng.standard_normal((tasks, n, features)).astype(dtype)
        y = rng.standard_normal((tasks, n, 1)).astype(dtype)
        return x, y

    return draw(shots), draw(queries)


def conv_bn_pool_net(classes=3, image=(8, 8, 1), dropout=0.0):
    layers = [keras.Input(image)]
    for _ in range(2):
        layers += [
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [keras.layers.Flatten()]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers)


def sparse_ce():
    # Created inside each test: a loss object takes floatx at construction.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
