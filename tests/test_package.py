"""Package-level behaviour: the backend guard."""

import os
import subprocess
import sys


def test_import_fails_clearly_on_another_keras_backend():
    # Other backends need their framework installed (jax, torch), which the
    # test machine lacks; Keras is made to report one instead.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    code = "import keras; keras.backend.backend = lambda: 'jax'; import tf_maml"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "tf_maml needs Keras on the TensorFlow backend" in result.stderr
    assert "'jax'" in result.stderr


def test_import_selects_the_tensorflow_backend_by_default():
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "import tf_maml, keras; print(keras.backend.backend())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tensorflow"
