"""Episode pipelines (tf.data) in the format of `tf_maml.episodes`."""

from tf_maml.data.class_pool import ClassPool, few_shot_episodes
from tf_maml.data.class_streams import few_shot_episodes_from_class_datasets
from tf_maml.data.directories import class_datasets_from_directory
from tf_maml.data.omniglot import load_omniglot, omniglot_episodes, omniglot_split
from tf_maml.data.sinusoid import sinusoid_episodes
from tf_maml.data.tfds_pools import tfds_class_pool, tfds_class_splits
from tf_maml.data.variable_sampler import variable_episodes

__all__ = [
    "ClassPool",
    "class_datasets_from_directory",
    "few_shot_episodes",
    "few_shot_episodes_from_class_datasets",
    "load_omniglot",
    "omniglot_episodes",
    "omniglot_split",
    "sinusoid_episodes",
    "tfds_class_pool",
    "tfds_class_splits",
    "variable_episodes",
]
