"""Class pools and per-class streams from directory trees and labelled tf.data datasets."""

import os

import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.data import ClassPool, class_datasets_from_directory, few_shot_episodes
from tf_maml.data import few_shot_episodes_from_class_datasets


def write_image(path, image):
    """Writes a uint8 [h, w, c] array as PNG (or JPEG for a .jpg path)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if path.endswith(".jpg") else tf.io.encode_png
    tf.io.write_file(path, encode(image))


def image_of(class_index, example, size=(6, 5), channels=3):
    """An image whose pixels encode its class and example (PNG keeps them exactly)."""
    return np.full(size + (channels,), 40 * class_index + example, np.uint8)


def make_tree(root, counts=(3, 4, 3), size=(6, 5), channels=3):
    """root/class_<c>/<e>.png with image_of(c, e); returns the class names."""
    names = [f"class_{c}" for c in range(len(counts))]
    for c, count in enumerate(counts):
        for e in range(count):
            write_image(os.path.join(root, names[c], f"{e}.png"), image_of(c, e, size, channels))
    return names


def test_pool_from_directory_reads_every_class_and_image(tmp_path):
    names = make_tree(str(tmp_path), counts=(3, 4, 3))
    os.makedirs(tmp_path / "class_1" / "more")
    write_image(str(tmp_path / "class_1" / "more" / "9.png"), image_of(1, 9))
    (tmp_path / "notes.txt").write_text("a file beside the classes is not a class")
    (tmp_path / "class_0" / "labels.csv").write_text("not an image: skipped")
    pool = ClassPool.from_directory(str(tmp_path))
    assert list(pool.class_ids) == names and list(pool.counts) == [3, 5, 3]
    assert pool.images.dtype == np.uint8 and pool.example_shape == (6, 5, 3)
    for c, count in enumerate(pool.counts):
        values = sorted(int(pool.images[c, e, 0, 0, 0]) for e in range(count))
        expected = sorted(40 * c + e for e in (range(count) if c != 1 else [0, 1, 2, 3, 9]))
        assert values == expected
    gray = ClassPool.from_directory(str(tmp_path), color_mode="grayscale")
    assert gray.example_shape == (6, 5, 1)
    np.testing.assert_array_equal(gray.images[..., 0], pool.images[..., 0])
    # GIF and BMP (decoders that refuse some channel counts), in every color mode.
    from PIL import Image  # noqa: PLC0415  (pillow comes with matplotlib and tensorboard)

    for suffix, mode in ((".gif", "L"), (".bmp", "RGB")):
        Image.fromarray(image_of(2, 7)[..., 0]).convert(mode).save(tmp_path / "class_2" / f"z{suffix}")
    for color_mode, channels in (("grayscale", 1), ("rgb", 3), ("rgba", 4)):
        mixed = ClassPool.from_directory(str(tmp_path), color_mode=color_mode)
        assert list(mixed.counts) == [3, 5, 5] and mixed.example_shape == (6, 5, channels)
        assert (mixed.images[2, 3:5, ..., 0] == 40 * 2 + 7).all()  # z.bmp, z.gif: last in order
    for suffix in (".gif", ".bmp"):
        (tmp_path / "class_2" / f"z{suffix}").unlink()
    resized = ClassPool.from_directory(str(tmp_path), image_size=(4, 3), color_mode="rgba")
    assert resized.example_shape == (4, 3, 4) and resized.images.dtype == np.uint8
    # Constant images stay constant under area interpolation; alpha is opaque.
    np.testing.assert_array_equal(resized.images[..., :3], pool.images[:, :, :4, :3, :3])
    assert (resized.images[: 1, :3, ..., 3] == 255).all()


def test_episodes_from_a_directory_pool_meta_train(tmp_path):
    make_tree(str(tmp_path), counts=(4, 4, 4, 4), size=(4, 4))
    write_image(str(tmp_path / "class_2" / "x.jpg"), image_of(2, 0, (4, 4)))
    pool = ClassPool.from_directory(str(tmp_path), color_mode="grayscale")
    episodes = few_shot_episodes(pool, ways=3, shots=1, queries=2, meta_batch_size=2, num_batches=2)
    (support_x, support_y), _ = next(iter(episodes))
    assert support_x.shape == (2, 3, 4, 4, 1) and support_x.dtype == tf.float32
    assert float(tf.reduce_max(support_x)) <= 1.0  # uint8 scaled to 0..1
    maml = tf_maml.MAML(tf_maml.nets.conv4(3, input_shape=(4, 4, 1), filters=4, blocks=1),
                        inner_lr=0.1)
    maml.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(maml.fit(episodes, verbose=0).history["loss"]).all()
    with pytest.raises(ValueError, match=r"shots \+ queries = 5 exceeds the examples of 3 "
                                         r"class\(es\), e.g. \['class_0', 'class_1', 'class_3'\]"):
        few_shot_episodes(pool, ways=3, shots=2, queries=3, meta_batch_size=2)


def test_directory_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        ClassPool.from_directory(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="has no subfolders"):
        ClassPool.from_directory(str(tmp_path))
    make_tree(str(tmp_path), counts=(2, 2))
    os.makedirs(tmp_path / "class_9")
    (tmp_path / "class_9" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"Class 'class_9' .* holds no image file"):
        ClassPool.from_directory(str(tmp_path))
    with pytest.raises(ValueError, match=r"Class 'class_9' .* holds no image file"):
        class_datasets_from_directory(str(tmp_path))
    (tmp_path / "class_9" / "readme.txt").unlink()
    write_image(str(tmp_path / "class_9" / "big.png"), image_of(5, 0, size=(8, 8)))
    with pytest.raises(ValueError, match=r"Images differ in size: .*class_0/0.png' is \(6, 5\), "
                                         r".*class_9/big.png' is \(8, 8\); pass image_size"):
        ClassPool.from_directory(str(tmp_path))
    assert ClassPool.from_directory(str(tmp_path), image_size=(8, 8)).example_shape == (8, 8, 3)
    (tmp_path / "class_1" / "broken.png").write_bytes(b"this is no png")
    with pytest.raises(ValueError, match=r"Cannot read image '.*class_1/broken.png'"):
        ClassPool.from_directory(str(tmp_path), image_size=(8, 8))
    for bad, message in [(dict(image_size=(0, 3)), "`image_size` must be None or"),
                         (dict(color_mode="cmyk"), "`color_mode` must be one of")]:
        with pytest.raises(ValueError, match=message):
            ClassPool.from_directory(str(tmp_path), **bad)


def test_class_datasets_from_directory_stream_episodes(tmp_path):
    names = make_tree(str(tmp_path), counts=(3, 3, 4), size=(6, 5))
    streams = class_datasets_from_directory(str(tmp_path))
    assert list(streams) == names
    images = sorted(int(image[0, 0, 0]) for image in streams["class_2"].as_numpy_iterator())
    assert images == [80, 81, 82, 83]
    episodes = few_shot_episodes_from_class_datasets(streams, ways=2, shots=1, queries=2,
                                                     meta_batch_size=3, seed=0)
    (support_x, _), (query_x, query_y) = next(iter(episodes))
    assert support_x.shape == (3, 2, 6, 5, 3) and query_y.shape == (3, 4)
    pixels = np.round(np.concatenate([support_x, query_x], 1)[..., 0, 0, 0] * 255)
    assert set(np.unique(pixels)) <= {0, 1, 2, 40, 41, 42, 80, 81, 82, 83}
    with pytest.raises(ValueError, match=r"`class_datasets\['class_0'\]` holds 3 examples, "
                                         r"fewer than shots \+ queries = 4"):
        few_shot_episodes_from_class_datasets(streams, ways=2, shots=2, queries=2,
                                              meta_batch_size=1)
    # Files are read as they stream: a bad file or size fails naming it then.
    write_image(str(tmp_path / "class_0" / "big.png"), image_of(0, 3, size=(7, 7)))
    (tmp_path / "class_1" / "broken.png").write_bytes(b"no image")
    streams = class_datasets_from_directory(str(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Image size differs(.|\n)*big.png"):
        list(streams["class_0"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Not a readable image(.|\n)*broken"):
        list(streams["class_1"])
    resized = class_datasets_from_directory(str(tmp_path / "."), image_size=(3, 3))
    assert next(iter(resized["class_0"])).shape == (3, 3, 3)


def test_pool_from_dataset_groups_by_label():
    examples = np.arange(7 * 2 * 2, dtype=np.float32).reshape(7, 2, 2)
    labels = np.array([3, 1, 3, 1, 1, 7, 7])
    pool = ClassPool.from_dataset(tf.data.Dataset.from_tensor_slices((examples, labels)))
    assert list(pool.class_ids) == [1, 3, 7] and list(pool.counts) == [3, 2, 2]
    np.testing.assert_array_equal(pool.images[0, :3], examples[[1, 3, 4]])
    np.testing.assert_array_equal(pool.images[2, :2], examples[[5, 6]])
    named = ClassPool.from_dataset(
        tf.data.Dataset.from_tensor_slices((examples, ["b", "a", "b", "a", "a", "c", "c"])))
    assert list(named.class_ids) == ["a", "b", "c"]
    train, test = named.split([["c", "a"], ["b"]])
    assert list(train.class_ids) == ["c", "a"] and list(test.class_ids) == ["b"]
    np.testing.assert_array_equal(train.images[0, :2], examples[[5, 6]])


@pytest.mark.parametrize("dataset, message", [
    (lambda: np.zeros((3, 2)), "must be a tf.data.Dataset of \\(example, label\\) pairs"),
    (lambda: tf.data.Dataset.from_tensor_slices(np.zeros((3, 2))), "must yield \\(example, label\\)"),
    (lambda: tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), np.zeros((4, 2)))).batch(2),
     "Labels must be scalars"),
    (lambda: tf.data.Dataset.from_tensor_slices((np.zeros((3, 2)), [0, 1, 2])).repeat(),
     "is infinite"),
    (lambda: tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros(2), 0), (np.zeros(3), 1)]),
        output_signature=(tf.TensorSpec([None]), tf.TensorSpec([], tf.int32))),
     r"Examples differ in shape: \(2,\) \(label 0\), \(3,\) \(label 1\)"),
    (lambda: tf.data.Dataset.from_tensor_slices((np.zeros((0, 2)), np.zeros(0))), "no examples"),
])
def test_pool_from_dataset_refuses_bad_datasets(dataset, message):
    with pytest.raises(ValueError, match=message):
        ClassPool.from_dataset(dataset())


def test_splits_by_class_lists():
    pool = ClassPool(np.zeros((5, 2, 3, 3, 1)), class_ids=["n01", "n02", "n03", "n04", "n05"])
    train, val = pool.split([["n03", "n01"], np.array(["n05"])])
    assert list(train.class_ids) == ["n03", "n01"] and list(val.class_ids) == ["n05"]
    with pytest.raises(ValueError, match=r"1 class id\(s\) not in the pool, e.g. \['n09'\]"):
        pool.split([["n01"], ["n09"]])
    with pytest.raises(ValueError, match="The class lists overlap"):
        pool.split([["n01", "n02"], ["n02"]])
    with pytest.raises(ValueError, match="listed twice"):
        pool.select(["n01", "n01"])
    with pytest.raises(ValueError, match="Class 1 holds no examples"):
        ClassPool([np.zeros((2, 3)), np.zeros((0, 3))])
