"""Any tensorflow-datasets image classification dataset as class pools split by class."""

import numpy as np
import tensorflow as tf

from tf_maml.data.class_pool import ClassPool


def tfds_class_pool(name, split="all", data_dir=None, image_key="image", label_key="label",
                    image_size=None, download=True):
    """All examples of a tensorflow-datasets dataset, grouped by label.

    Args:
        name: the tfds name, e.g. `"cifar100"`.
        split: tfds split expression; `"all"` joins every split, since few-shot
            protocols split by class, not by example.
        data_dir: tfds data directory (`None`: tfds' default).
        image_key, label_key: feature names of the image and the class label.
        image_size: `(height, width)` to resize to (area interpolation), or
            `None` to keep the dataset's size (which must then be fixed).
        download: let tfds download and prepare the dataset if it is missing.

    Returns:
        A `ClassPool` (uint8 images when the dataset's are), with the
        dataset's labels as `class_ids`.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (optional at import time)

    builder = tfds.builder(name, data_dir=data_dir)
    for key in (image_key, label_key):
        if key not in builder.info.features:
            raise ValueError(
                f"tfds dataset {name!r} has no feature {key!r}; its features are "
                f"{sorted(builder.info.features.keys())}."
            )
    if download:
        builder.download_and_prepare()
    dataset = builder.as_dataset(split=split)
    if image_size is not None:

        def resize(example):
            image = tf.image.resize(example[image_key], image_size, method="area")
            return {image_key: tf.cast(tf.round(image), example[image_key].dtype),
                    label_key: example[label_key]}

        dataset = dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    by_label = {}
    for example in tfds.as_numpy(dataset.batch(1024)):
        for image, label in zip(example[image_key], example[label_key]):
            by_label.setdefault(int(label), []).append(image)
    labels = sorted(by_label)
    return ClassPool([np.stack(by_label[label]) for label in labels], class_ids=labels)


def tfds_class_splits(name, classes=(64, 16, 20), seed=0, **kwargs):
    """Disjoint train / validation / test class pools of a tfds dataset.

    Args:
        name: the tfds name, e.g. `"cifar100"` (64 / 16 / 20 classes, as
            CIFAR-FS).
        classes: classes per split, in order train, validation, test.
        seed: seed of the class shuffle.
        **kwargs: passed to `tfds_class_pool`.

    Returns:
        A dict `{"train": pool, "validation": pool, "test": pool}`.
    """
    if len(classes) != 3:
        raise ValueError(f"`classes` must give 3 split sizes; received {classes!r}.")
    pool = tfds_class_pool(name, **kwargs)
    return dict(zip(("train", "validation", "test"), pool.split(classes, seed=seed)))
