"""Episode pipelines (tf.data) in the format of `tf_maml.episodes`."""

from tf_maml.data.sinusoid import sinusoid_episodes

__all__ = ["sinusoid_episodes"]
