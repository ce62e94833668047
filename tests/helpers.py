"""Shared by the tests: small models, episodes, gradient checks, tiny runs of the scripts."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The official Omniglot zips; the tests that read them skip (and say so at the end of the
# run) when they are not here. Elsewhere: TF_MAML_OMNIGLOT_DIR=DIR.
OMNIGLOT_DIR = os.environ.get("TF_MAML_OMNIGLOT_DIR",
                              os.path.join(ROOT, "..", "shared", "data", "omniglot"))
OMNIGLOT_SKIP_REASON = (f"needs the Omniglot zips (images_background.zip, "
                        f"images_evaluation.zip) in {OMNIGLOT_DIR} (elsewhere: "
                        "TF_MAML_OMNIGLOT_DIR=DIR)")
needs_omniglot = pytest.mark.skipif(not os.path.isdir(OMNIGLOT_DIR), reason=OMNIGLOT_SKIP_REASON)
SINUSOID_CONFIG = f"--config={os.path.join(ROOT, 'configs', 'sinusoid.py')}"
# configs/ is not a package that pip installs: the scripts and the tests read it from here.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The sinusoid config made tiny, as flags of the scripts and as a config.
TINY = [
    "--config.meta_steps=20",
    "--config.steps_per_epoch=10",
    "--config.steps_per_execution=5",
    "--config.meta_batch_size=5",
    "--config.validation_batches=2",
    "--config.eval_tasks=30",
    "--config.eval_max_steps=3",
    "--config.model.hidden=(8,)",
    "--config.verbose=0",
]


def tiny_config(**overrides):
    from configs import sinusoid  # noqa: PLC0415

    config = sinusoid.get_config()
    config.update(
        {
            "meta_steps": 30, "steps_per_epoch": 10, "steps_per_execution": 5,
            "meta_batch_size": 5, "validation_batches": 2, "eval_tasks": 30,
            "eval_max_steps": 3, "verbose": 0, **overrides,
        }
    )
    config.model.hidden = (8,)
    return config


def run_python(args, *, cwd=ROOT, returncode=0, timeout=None):
    """The one way the tests start a Python process: `python *args`, output captured.

    The exit code must be `returncode` (the end of stderr is shown if not).
    Tests start one only where a process is the point: a real kill, an import
    into a fresh interpreter, a script's command line, several workers.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=timeout)
    assert result.returncode == returncode, result.stderr[-3000:]
    return result


def start_python(args, *, cwd=ROOT):
    """`python *args` started in the background (a `subprocess.Popen`, stdout piped as
    text): for a process that must run while the test acts, as `run_python` says."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd)


def run_in_fresh_process(code, tmp_path):
    """Runs `code` in a new Python in `tmp_path`; returns the array it saves as out.npy."""
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(code))
    run_python([script], cwd=tmp_path)
    return np.load(tmp_path / "out.npy")


def run_script(name, *args, **kwargs):
    """Runs scripts/`name` with `args` from the repository root (see `run_python`)."""
    return run_python([os.path.join(ROOT, "scripts", name), *args], **kwargs)


def train(workdir, *extra, **kwargs):
    """scripts/train.py on the tiny sinusoid config in `workdir`."""
    return run_script("train.py", SINUSOID_CONFIG, f"--workdir={workdir}", *TINY, *extra, **kwargs)


# Every family member, each with a rule other than MAML's plain SGD where it takes one.
MEMBERS = {
    "maml": lambda net: tf_maml.MAML(net, inner_lr=0.3),
    "fomaml": lambda net: tf_maml.FOMAML(net, inner_optimizer=tf_maml.rules.momentum(0.2)),
    "meta_sgd": lambda net: tf_maml.MetaSGD(net, inner_lr=0.3),
    "anil": lambda net: tf_maml.ANIL(net, inner_optimizer=tf_maml.rules.adam(0.05)),
    "maml_plus_plus": lambda net: tf_maml.MAMLPlusPlus(net, inner_lr=0.3, inner_steps=2),
    "boil": lambda net: tf_maml.BOIL(net, inner_optimizer=tf_maml.rules.momentum(0.2)),
    "reptile_adam": lambda net: tf_maml.Reptile(net, inner_lr=0.05, inner_optimizer="adam"),
    "imaml": lambda net: tf_maml.IMAML(net, inner_optimizer=tf_maml.rules.momentum(0.2),
                                       inner_steps=2, cg_steps=2),
}


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


def conv_bn_pool_net(classes=3, image=(8, 8, 1), dropout=0.0, normalizations=None):
    """Two [conv, normalization, ReLU, max-pool] blocks, then dense logits.

    `normalizations`: a function per block making its normalization layer
    (default: BatchNormalization in both).
    """
    normalizations = normalizations or [keras.layers.BatchNormalization] * 2
    layers = [keras.Input(image)]
    for normalization in normalizations:
        layers += [
            keras.layers.Conv2D(3, 3, padding="same"),
            normalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [keras.layers.Flatten()]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers)


def assert_export_serves_like_adapt(exporter, reference, directory, task, **tolerance):
    """`exporter.export_adaptive(directory)`, loaded back, predicts what `reference.adapt` does.

    `task` is `(support_x, support_y, query_x)` of one task.
    """
    support_x, support_y, query_x = task
    exporter.export_adaptive(str(directory))
    served = tf.saved_model.load(str(directory))
    np.testing.assert_allclose(
        served.adapt_and_predict(support_x, support_y, query_x),
        reference.adapt(support_x, support_y).predict(query_x, verbose=0), **tolerance,
    )


def sparse_ce():
    # Created inside each test: a loss object takes floatx at construction.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def meta_gradient(maml, episode, jit_compile=False, loss="mse", loss_weights=None):
    """The meta-gradient of one `train_on_batch`; weights and model state are left as they were.

    The state (RNG seeds, moving statistics) is put back too, so a later
    `test_on_batch` draws the Dropout masks the gradient saw.
    """
    maml.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, loss_weights=loss_weights,
                 jit_compile=jit_compile)
    variables = maml.trainable_variables  # the model's, and learned step sizes if any
    before = [v.numpy() for v in variables]
    state = [(v, v.numpy()) for v in maml.model.non_trainable_variables]
    maml.train_on_batch(*episode)
    grads = [b - v.numpy() for b, v in zip(before, variables)]
    for v, value in state:
        v.assign(value)
    for v, b in zip(variables, before):
        v.assign(b)
    return grads


def meta_loss_function(maml, episode):
    """`() -> float`: the meta-loss of `episode` as `test_on_batch` computes it, read
    from the variables as they are at each call.

    One traced function, called hundreds of times by per-weight finite
    differences, without Keras' per-call set-up (a third of the time).
    """
    support, query = tf.nest.map_structure(tf.convert_to_tensor, episode)

    @tf.function
    def loss():
        with maml.meta_learning_ops():
            return maml._run_tasks(support, query, maml.eval_inner_steps, True,
                                   with_gradients=False)["loss"]

    return lambda: float(loss())


def finite_difference_gradient(maml, episode, eps=1e-6, loss="mse"):
    assert all(v.dtype == "float64" for v in maml.weights), "finite differences need float64"
    maml.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, jit_compile=False)
    maml.test_on_batch(*episode)  # builds the meta-learner and the compiled loss
    meta_loss = meta_loss_function(maml, episode)
    assert np.isclose(meta_loss(), maml.test_on_batch(*episode, return_dict=True)["loss"],
                      rtol=1e-12)
    variables = maml.trainable_variables
    grads = []
    for variable in variables:
        base = np.array(variable.numpy())  # scalars too
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                values.append(meta_loss())
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


def directional_derivatives(maml, episode, directions=3, eps=1e-5, loss="mse", seed=0,
                            jit_compile=False, loss_weights=None):
    """`(analytic, numeric)` derivatives of the meta-loss along random directions.

    Analytic: the meta-gradient (one `train_on_batch`) dotted with each
    direction; numeric: central differences of the meta-loss
    (`test_on_batch`) along it. Two evaluations per direction instead of two
    per weight entry, so any model can be checked (float64 needed). With
    `jit_compile`, both run under XLA.
    """
    assert all(v.dtype == "float64" for v in maml.weights), "finite differences need float64"
    grads = meta_gradient(maml, episode, loss=loss, jit_compile=jit_compile,
                          loss_weights=loss_weights)
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


def assert_directional_derivatives_match(maml, episode, rtol=1e-5, **kwargs):
    """The meta-gradient agrees with central differences along random directions.

    Also that no direction is blind to the loss (a zero derivative would make
    the check vacuous). `kwargs` go to `directional_derivatives`.
    """
    analytic, numeric = directional_derivatives(maml, episode, **kwargs)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=1e-9)
    assert np.abs(analytic).min() > 1e-6


class Bandit(tf_maml.rl.envs.TaskEnv):
    """One step; reward -(action - goal)^2; every task has the goal `goal`."""

    observation_size, task_size, horizon = 1, 1, 1
    action_space = tf_maml.rl.envs.Box(1, -np.inf, np.inf)

    def __init__(self, goal):
        self.goal = goal

    def sample_tasks(self, count, seed):
        return tf.fill([count, 1], self.goal)

    def reset(self, tasks, seeds):
        zeros = tf.zeros([tf.shape(tasks)[0], 1])
        return zeros, zeros

    def step(self, tasks, state, action):
        reward = -tf.square(action[:, 0] - tasks[:, 0])
        return state, state, reward, tf.zeros_like(reward, tf.bool)


def bandit_policy(theta, sigma):
    """`(policy, head)`: a Gaussian policy whose mean is the weight `theta` (its input is
    always 0) and whose standard deviation `sigma` is fixed."""
    head = tf_maml.rl.policies.GaussianHead(1, init_log_std=np.log(sigma))
    policy = keras.Sequential([keras.Input((1,)), head])
    head.log_std.trainable = False
    head.mean.bias.assign([theta])
    return policy, head
