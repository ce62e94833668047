import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs, so tf.distribute strategies can be tested on one CPU.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import tf_maml  # noqa: E402,F401

from helpers import train  # noqa: E402


@contextlib.contextmanager
def precision(dtype):
    """Layers, losses and metrics made inside use `dtype`.

    Keras caches its global dtype policy, so floatx alone is not enough.
    """
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")


@pytest.fixture
def float64():
    """Runs a test in float64 (for finite differences)."""
    with precision("float64"):
        yield


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`(workdir, stdout)` of scripts/train.py on the tiny sinusoid config, run once.

    Tests read it and never write into it (copy it first).
    """
    workdir = tmp_path_factory.mktemp("tiny_run")
    return workdir, train(workdir).stdout


def pytest_terminal_summary(terminalreporter):
    """Says why tests skipped for want of the Omniglot zips, even with -q (issue 27)."""
    from helpers import OMNIGLOT_SKIP_REASON  # noqa: PLC0415

    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if OMNIGLOT_SKIP_REASON in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped: each {OMNIGLOT_SKIP_REASON}.")
