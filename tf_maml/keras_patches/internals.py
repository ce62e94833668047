"""The private Keras functions and attributes tf_maml reads, each behind one name.

Written for Keras 3.15 (`tf_maml.keras_patches.WRITTEN_FOR`); where Keras has
a public API for the job, tf_maml uses that instead.
"""

from keras.src import backend as keras_backend
from keras.src.backend.tensorflow import trainer as keras_tf_trainer
from keras.src.losses import loss as loss_module

# A symbolic call (KerasTensors in, specs out) that also builds what it calls.
compute_output_spec = keras_backend.compute_output_spec

# Keras divides a loss by the number of replicas under tf.distribute.
unscale_loss_for_distribution = loss_module.unscale_loss_for_distribution
scale_loss_for_distribution = loss_module.scale_loss_for_distribution


def is_multi_worker(strategy):
    """Whether Keras reduces logs across workers (its MultiWorkerMirrored path)."""
    return keras_tf_trainer._collective_all_reduce_multi_worker(strategy)


def all_layers(model):
    """Every layer nested in `model`, not `model` itself."""
    return list(model._flatten_layers(include_self=False))


def leaf_layers(model):
    """Layers with trainable weights that hold no layers themselves (Dense, Conv2D, ...)."""
    return [
        layer for layer in all_layers(model)
        if layer.trainable_variables and not layer._flatten_layers(include_self=False)
    ]


def call_has_training_arg(model):
    """Whether `model.call` takes `training` (Keras passes it only then)."""
    return model._call_has_training_arg
