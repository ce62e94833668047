"""Package-level behaviour: the backend guard."""

from helpers import run_python


def test_import_fails_clearly_on_another_keras_backend():
    # Other backends need their framework installed (jax, torch), which the
    # test machine lacks; Keras is made to report one instead.
    code = "import keras; keras.backend.backend = lambda: 'jax'; import tf_maml"
    result = run_python(["-c", code], returncode=1)
    assert "tf_maml needs Keras on the TensorFlow backend" in result.stderr
    assert "'jax'" in result.stderr


def test_import_selects_the_tensorflow_backend_by_default():
    code = ("import os; os.environ.pop('KERAS_BACKEND', None); "
            "import tf_maml, keras; print(keras.backend.backend())")
    result = run_python(["-c", code])
    assert result.stdout.strip() == "tensorflow"
