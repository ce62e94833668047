"""Image classes from a directory tree: one subfolder per class, image files inside
(audio files: `tf_maml.data.audio`)."""

import os

import numpy as np
import tensorflow as tf

# The formats tf.io.decode_image reads (as keras.utils.image_dataset_from_directory).
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
# Leading bytes of each format: a file without one is named before decoding.
_SIGNATURES = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")


def _check_image_size(image_size):
    if image_size is None:
        return None
    if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
            or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in image_size)):
        raise ValueError(
            f"`image_size` must be None or (height, width), two integers >= 1; received "
            f"{image_size!r}."
        )
    return tuple(int(s) for s in image_size)


def image_files_by_class(path):
    """`{class name: sorted image file paths}` of the subfolders of `path`, by name.

    Raises:
        ValueError: `path` is not a directory, has no subfolder, or a subfolder
            (named) holds no image file.
    """
    return files_by_class(path, IMAGE_FORMATS, "image")


def files_by_class(path, extensions, kind):
    """`{class name: sorted paths of the files ending in `extensions`}` of the subfolders
    of `path` (subfolders nested in a class belong to it); `kind` names the files in
    errors ("image", "audio")."""
    if not tf.io.gfile.isdir(path):
        raise ValueError(f"{path!r} is not a directory; give the folder holding one "
                         f"subfolder of {kind} files per class.")
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path)
                   if tf.io.gfile.isdir(os.path.join(path, n)))
    if not names:
        raise ValueError(f"{path!r} has no subfolders; each class must be a subfolder of "
                         f"{kind} files.")
    files = {}
    for name in names:
        folder = os.path.join(path, name)
        found = sorted(
            os.path.join(root, f)
            for root, _, found in tf.io.gfile.walk(folder)
            for f in found if f.lower().endswith(extensions)
        )
        if not found:
            raise ValueError(f"Class {name!r} ({folder}) holds no {kind} file "
                             f"({', '.join(extensions)}); remove the folder or add files.")
        files[name] = found
    return files


def image_loader(image_size=None, color_mode="rgb"):
    """A TensorFlow function: file path -> uint8 image `[height, width, channels]`.

    A file that is no image (by its leading bytes) fails naming its path; with
    `image_size`, images are resized (area interpolation, rounded to uint8).
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(f"`color_mode` must be one of {sorted(COLOR_MODES)}; received "
                         f"{color_mode!r}.")
    image_size = _check_image_size(image_size)
    channels = COLOR_MODES[color_mode]

    def load(path):
        contents = tf.io.read_file(path)
        known = tf.reduce_any([tf.strings.substr(contents, 0, len(s)) == s for s in _SIGNATURES])
        with tf.control_dependencies([tf.debugging.Assert(known, ["Not a readable image file:",
                                                                  path])]):
            # Decoded as stored (GIF and BMP decoders refuse 1 channel, JPEG 4), then converted.
            image = tf.io.decode_image(contents, channels=0, expand_animations=False)
        image = _with_channels(image, channels)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="area")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image

    return load


def _with_channels(image, channels):
    """A uint8 image of 1 (gray), 2 (gray, alpha), 3 (RGB) or 4 (RGBA) channels as
    `channels` channels: gray from RGB by luminance, alpha dropped or made opaque."""
    stored = tf.shape(image)[-1]
    if channels == 1:
        gray = tf.cond(stored <= 2, lambda: image[..., :1],
                       lambda: tf.image.rgb_to_grayscale(image[..., :3]))
        return tf.ensure_shape(gray, [None, None, 1])
    rgb = tf.cond(stored >= 3, lambda: image[..., :3],
                  lambda: tf.image.grayscale_to_rgb(image[..., :1]))
    if channels == 3:
        return tf.ensure_shape(rgb, [None, None, 3])
    opaque = tf.fill(tf.concat([tf.shape(image)[:-1], [1]], 0), tf.constant(255, tf.uint8))
    alpha = tf.cond(tf.equal(stored % 2, 0), lambda: image[..., -1:], lambda: opaque)
    return tf.ensure_shape(tf.concat([rgb, alpha], axis=-1), [None, None, 4])


def decode_all(paths, load, kind="image"):
    """The decoded files of `paths` (in parallel), or a ValueError naming a bad file."""
    decoded = tf.data.Dataset.from_tensor_slices(paths).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
        return [value.numpy() for value in decoded]
    except tf.errors.InvalidArgumentError:
        for path in paths:  # find the file (rare: a damaged tree)
            try:
                load(tf.constant(path))
            except tf.errors.InvalidArgumentError as error:
                raise ValueError(f"Cannot read {kind} {path!r}: "
                                 f"{_failure_text(error.message)}") from None
        raise


def _failure_text(message):
    """An op error's message in one line: a failed `tf.debugging.Assert`'s own data
    ("Sample rate 22050 differs from 16000 ..."), else the first line."""
    if "Summarized data: " not in message:
        return message.splitlines()[0]
    parts = message.split("Summarized data: ", 1)[1].splitlines()
    return " ".join(p[2:-1] if p.startswith(("b'", 'b"')) else p for p in parts if p.strip())


def images_by_class(path, image_size=None, color_mode="rgb"):
    """`{class name: uint8 array [examples, height, width, channels]}` of a directory tree.

    Raises:
        ValueError: as `image_files_by_class`, an unreadable file (named), or
            images of different sizes when `image_size` is None (the first two
            sizes and files named).
    """
    load = image_loader(image_size, color_mode)
    files = image_files_by_class(path)
    flat = [f for paths in files.values() for f in paths]
    images = decode_all(flat, load)
    first = images[0].shape
    for file, image in zip(flat, images):
        if image.shape != first:
            raise ValueError(
                f"Images differ in size: {flat[0]!r} is {first[:2]}, {file!r} is "
                f"{image.shape[:2]}; pass image_size=(height, width) to resize them all."
            )
    return stack_by_class(files, images)


def stack_by_class(files, decoded):
    """`{class name: stacked array}` of `decoded`, the files of `files` (`{class name:
    paths}`) decoded in their order."""
    out, start = {}, 0
    for name, paths in files.items():
        out[name] = np.stack(decoded[start:start + len(paths)])
        start += len(paths)
    return out


def class_datasets_from_directory(path, image_size=None, color_mode="rgb"):
    """One `tf.data.Dataset` per class of a directory tree, decoding files as they stream.

    For data beyond memory: pass the values (or a selection of them) to
    `few_shot_episodes_from_class_datasets`. Folders are listed now; files are
    read as episodes draw them. Without `image_size`, the first image fixes the
    size and an image of another size fails naming its file.

    Args:
        path: a directory with one subfolder of image files per class
            (subfolders nested inside a class belong to it).
        image_size: `(height, width)` to resize to, or None to keep sizes.
        color_mode: `"grayscale"`, `"rgb"` or `"rgba"`: 1, 3 or 4 channels.

    Returns:
        A dict `{class name: dataset of uint8 images}`, in sorted name order.
    """
    load = image_loader(image_size, color_mode)
    files = image_files_by_class(path)
    if image_size is None:
        expected = tf.constant(load(tf.constant(next(iter(files.values()))[0])).shape[:2])

        def load_checked(file):
            image = load(file)
            same = tf.reduce_all(tf.shape(image)[:2] == expected)
            with tf.control_dependencies([tf.debugging.Assert(
                    same, ["Image size differs from the first image's", expected,
                           "(pass image_size to resize):", file])]):
                image = tf.identity(image)
            return tf.ensure_shape(image, [*expected.numpy(), COLOR_MODES[color_mode]])
    else:
        load_checked = load
    return {
        name: tf.data.Dataset.from_tensor_slices(paths).map(
            load_checked, num_parallel_calls=tf.data.AUTOTUNE)
        for name, paths in files.items()
    }
