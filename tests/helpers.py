"""Small models, episodes and gradient checks shared by the tests."""

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


def meta_gradient(maml, episode, jit_compile=False, loss="mse"):
    maml.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, jit_compile=jit_compile)
    variables = maml.trainable_variables  # the model's, and learned step sizes if any
    before = [v.numpy() for v in variables]
    maml.train_on_batch(*episode)
    grads = [b - v.numpy() for b, v in zip(before, variables)]
    for v, b in zip(variables, before):
        v.assign(b)
    return grads


def finite_difference_gradient(maml, episode, eps=1e-6, loss="mse"):
    assert all(v.dtype == "float64" for v in maml.weights), "finite differences need float64"
    maml.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, jit_compile=False)
    variables = maml.trainable_variables
    grads = []
    for variable in variables:
        base = variable.numpy()
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                values.append(maml.test_on_batch(*episode, return_dict=True)["loss"])
            grad[index] = (values[0] - values[1]) / (2 * eps)
        variable.assign(base)
        grads.append(grad)
    return grads


def assert_gradients_close(actual, expected, rtol=1e-5):
    scale = max(np.abs(g).max() for g in expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def linear_model(features, l2=0.0):
    regularizer = keras.regularizers.L2(l2) if l2 else None
    dense = keras.layers.Dense(1, use_bias=False, kernel_regularizer=regularizer)
    return keras.Sequential([keras.Input((features,)), dense])


def tanh_mlp():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


def directional_derivatives(maml, episode, directions=3, eps=1e-5, loss="mse", seed=0):
    """`(analytic, numeric)` derivatives of the meta-loss along random directions.

    Analytic: the meta-gradient (one `train_on_batch`) dotted with each
    direction; numeric: central differences of the meta-loss
    (`test_on_batch`) along it. Two evaluations per direction instead of two
    per weight entry, so any model can be checked (float64 needed).
    """
    assert all(v.dtype == "float64" for v in maml.weights), "finite differences need float64"
    grads = meta_gradient(maml, episode, loss=loss)
    variables = maml.trainable_variables
    base = [v.numpy() for v in variables]
    rng = np.random.default_rng(seed)
    analytic, numeric = [], []
    for _ in range(directions):
        direction = [rng.standard_normal(b.shape) for b in base]
        norm = np.sqrt(sum(np.sum(d * d) for d in direction))
        direction = [d / norm for d in direction]
        analytic.append(sum(np.sum(g * d) for g, d in zip(grads, direction)))
        values = []
        for sign in (1.0, -1.0):
            for v, b, d in zip(variables, base, direction):
                v.assign(b + sign * eps * d)
            values.append(maml.test_on_batch(*episode, return_dict=True)["loss"])
        numeric.append((values[0] - values[1]) / (2 * eps))
    for v, b in zip(variables, base):
        v.assign(b)
    return np.array(analytic), np.array(numeric)
