"""docs/family.md's "Writing a member" runs as written, with public names only, and its
member (Meta-MinibatchProx) updates as its closed form says."""

import os
import re
import types

import keras
import numpy as np
import pytest

from helpers import ROOT, linear_model, regression_episode


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    """The namespace of the docs' code block, run on fewer tasks in a temporary directory."""
    text = open(os.path.join(ROOT, "docs", "family.md"), encoding="utf-8").read()
    section = text.split("## Writing a member", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert not re.search(r"\._(?!_)", code), "the docs member reaches into a private name"
    code = re.sub(r"^META_TASKS = \d+$", "META_TASKS = 20", code, flags=re.M)
    directory = tmp_path_factory.mktemp("member")
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        namespace = {}
        exec(compile(code, "docs/family.md", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    return types.SimpleNamespace(directory=directory, **namespace)


def test_the_docs_member_trains_saves_and_loads(member):
    assert member.prox.optimizer.iterations.numpy() == 2
    assert np.isfinite(member.history.history["loss"]).all()
    loaded = keras.models.load_model(member.directory / "prox.keras")
    assert type(loaded) is member.MinibatchProx
    assert loaded.proximal_weight == 0.5 and loaded.step_size == 0.02
    for a, b in zip(loaded.get_weights(), member.prox.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_docs_member_update_is_the_moreau_envelope_gradient(member, float64):
    """Two proximal SGD steps per task from theta, then theta -= mean_t lambda (theta - phi_t):
    computed here in NumPy for a linear model and the mean squared error."""
    (support_x, support_y), query = regression_episode(np.random.default_rng(0), features=3)
    net = linear_model(3)
    prox = member.MinibatchProx(net, inner_lr=0.1, inner_steps=2, proximal_weight=0.5)
    prox.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    theta = net.get_weights()[0]
    prox.train_on_batch((support_x, support_y), query)
    meta_gradient = np.zeros_like(theta)
    for x, y in zip(support_x, support_y):
        phi = theta.copy()
        for _ in range(2):
            grad = 2.0 / len(x) * x.T @ (x @ phi - y) + 0.5 * (phi - theta)
            phi = phi - 0.1 * grad
        meta_gradient += 0.5 * (theta - phi) / len(support_x)
    np.testing.assert_allclose(net.get_weights()[0], theta - meta_gradient, rtol=1e-10)
