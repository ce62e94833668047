import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import tf_maml  # noqa: E402,F401


@pytest.fixture
def float64():
    """Runs a test with float64 Keras variables (for finite differences)."""
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)
