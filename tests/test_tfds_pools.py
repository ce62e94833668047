"""tensorflow-datasets image classification sets as class pools, without network."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_maml.data import few_shot_episodes, tfds_class_pool, tfds_class_splits


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    """A 10-class, 8x8 RGB dataset stored as tfds in a temporary data dir."""
    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 7)
    images = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = labels  # each image carries its label in one pixel
    features = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(8, 8, 3)),
         "label": tfds.features.ClassLabel(num_classes=10)}
    )
    splits = {
        "train": tf.data.Dataset.from_tensor_slices({"image": images[:50], "label": labels[:50]}),
        "test": tf.data.Dataset.from_tensor_slices({"image": images[50:], "label": labels[50:]}),
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_classes", version="1.0.0", features=features, split_datasets=splits,
        data_dir=str(data_dir),
    )
    return str(data_dir)


def test_all_splits_are_grouped_by_label(local_dataset):
    pool = tfds_class_pool("tiny_classes", data_dir=local_dataset, download=False)
    assert pool.num_classes == 10 and list(pool.counts) == [7] * 10
    assert pool.example_shape == (8, 8, 3)
    for label, images in zip(pool.class_ids, pool.images):
        assert np.all(images[:, 0, 0, 0] == label)


def test_class_splits_are_disjoint_and_sample_episodes(local_dataset):
    pools = tfds_class_splits("tiny_classes", classes=(6, 2, 2), data_dir=local_dataset,
                              download=False, image_size=(4, 4))
    ids = [set(pools[s].class_ids) for s in ("train", "validation", "test")]
    assert [len(i) for i in ids] == [6, 2, 2] and len(set.union(*ids)) == 10
    assert pools["train"].example_shape == (4, 4, 3)
    (sx, sy), (qx, qy) = next(iter(few_shot_episodes(pools["train"], 5, 2, 3, 4, num_batches=1)))
    assert sx.shape == (4, 10, 4, 4, 3) and qy.shape == (4, 15)


def test_unknown_feature_is_reported(local_dataset):
    with pytest.raises(ValueError, match="no feature 'fine_label'"):
        tfds_class_pool("tiny_classes", data_dir=local_dataset, label_key="fine_label")
