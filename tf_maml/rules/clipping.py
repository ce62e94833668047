"""Clipping of inner gradients, chained before a rule that steps."""

import keras
import tensorflow as tf

from tf_maml.rules.base import GradientTransform
from tf_maml.rules.steps import _check_rate


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class ClipByValue(GradientTransform):
    """Each inner gradient entry clipped to `[-limit, limit]`."""

    def __init__(self, limit):
        super().__init__()
        self.limit = _check_rate(limit, "limit")

    def transform(self, grads, state, params, step):
        del params, step
        return [tf.clip_by_value(g, -self.limit, self.limit) for g in grads], state

    def get_config(self):
        return {"limit": self.limit}


@keras.saving.register_keras_serializable(package="tf_maml.rules")
class ClipByGlobalNorm(GradientTransform):
    """The inner gradients scaled down together so that their global norm is at most `max_norm`."""

    def __init__(self, max_norm):
        super().__init__()
        self.max_norm = _check_rate(max_norm, "max_norm")

    def transform(self, grads, state, params, step):
        del params, step
        dtype = grads[0].dtype
        squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, dtype))) for g in grads])
        # sqrt has no finite derivative at 0 (all gradients zero): no scaling is needed there.
        norm = tf.sqrt(tf.maximum(squares, tf.constant(1e-30, dtype)))
        scale = tf.minimum(tf.constant(1.0, dtype), self.max_norm / norm)
        return [g * tf.cast(scale, g.dtype) for g in grads], state

    def get_config(self):
        return {"max_norm": self.max_norm}


def clip_by_value(limit):
    """Clips every inner gradient entry to `[-limit, limit]`."""
    return ClipByValue(limit)


def clip_by_global_norm(max_norm):
    """Scales the inner gradients so that their global norm is at most `max_norm`."""
    return ClipByGlobalNorm(max_norm)
