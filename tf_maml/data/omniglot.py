"""Omniglot (Lake et al., 2015) as class pools and few-shot episodes.

Reads the official `images_background.zip` and `images_evaluation.zip` from a
directory (or, with no directory, tensorflow-datasets' `omniglot`), resizes
every 105x105 image to 28x28 with LANCZOS and inverts it so ink = 1, as the
MAML papers did. The decoded arrays are cached, so later loads take seconds.
"""

import functools
import hashlib
import io
import os
import random
import zipfile
import zlib

import numpy as np
from absl import logging

from tf_maml.data.class_pool import ClassPool, few_shot_episodes

ZIP_FILES = ("images_background.zip", "images_evaluation.zip")
NUM_CHARACTERS = 1623
DRAWERS = 20
PROTOCOLS = ("maml", "lake")
SPLITS = ("train", "validation", "test")


def _cache_dir(cache_dir):
    if cache_dir is None:
        cache_dir = os.environ.get("TF_MAML_CACHE", os.path.join("~", ".cache", "tf_maml"))
    return os.path.expanduser(cache_dir)


def _resize(image, image_size):
    """A PIL image -> uint8 [size, size] with ink high (255 - luminance)."""
    from PIL import Image  # noqa: PLC0415  (only needed when decoding)

    image = image.convert("L").resize((image_size, image_size), Image.LANCZOS)
    return 255 - np.asarray(image, np.uint8)


def _decode_zips(data_dir, image_size):
    """Characters of both zips, sorted by (set, alphabet, character)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    characters = {}
    for name in ZIP_FILES:
        path = os.path.join(data_dir, name)
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path} is not a valid zip file ({error}).") from error
        with archive:
            for entry in sorted(archive.namelist()):
                if not entry.endswith(".png"):
                    continue
                parts = entry.split("/")
                if len(parts) != 4:
                    raise ValueError(
                        f"{path}: unexpected entry {entry!r}; expected "
                        "<set>/<alphabet>/<character>/<image>.png."
                    )
                try:
                    with Image.open(io.BytesIO(archive.read(entry))) as image:
                        pixels = _resize(image, image_size)
                except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as error:
                    raise ValueError(f"{path}: cannot decode {entry!r} ({error}).") from error
                characters.setdefault(tuple(parts[:3]), []).append(pixels)
    return characters


def _check_complete(characters, source):
    counts = {len(images) for images in characters.values()}
    if len(characters) != NUM_CHARACTERS or counts != {DRAWERS}:
        raise ValueError(
            f"{source} holds {len(characters)} characters with {sorted(counts)} images each; "
            f"Omniglot has {NUM_CHARACTERS} characters of {DRAWERS} images."
        )


def load_omniglot(data_dir=None, image_size=28, cache_dir=None):
    """All 1623 Omniglot characters as one `ClassPool`.

    Args:
        data_dir: directory holding `images_background.zip` and
            `images_evaluation.zip`; `None` to use tensorflow-datasets.
        image_size: side of the resized square images.
        cache_dir: where decoded arrays are cached (default `$TF_MAML_CACHE`
            or `~/.cache/tf_maml`). A damaged cache file (unreadable, missing
            arrays, wrong shapes) is logged as a warning and rebuilt.

    Returns:
        `(pool, characters)`: a pool of uint8 images `[1623, 20, size, size, 1]`
        (ink = 255), and one `(set, alphabet, character)` tuple per class.

    Raises:
        FileNotFoundError: `data_dir` or a zip is missing.
        ValueError: a zip is corrupt or does not hold Omniglot.
    """
    if data_dir is None:
        return _load_from_tfds(image_size)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Omniglot data directory {data_dir!r} does not exist.")
    missing = [n for n in ZIP_FILES if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise FileNotFoundError(
            f"{data_dir!r} lacks {', '.join(missing)}: expected the official Omniglot zips "
            f"{ZIP_FILES[0]} and {ZIP_FILES[1]}."
        )
    cache = _cache_path(data_dir, image_size, cache_dir)
    cached = _read_cache(cache, image_size) if os.path.exists(cache) else None
    if cached is not None:
        return cached

    decoded = _decode_zips(data_dir, image_size)
    _check_complete(decoded, data_dir)
    characters = sorted(decoded)
    images = np.stack([np.stack(decoded[c]) for c in characters])[..., None]
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    partial = cache + ".partial.npz"
    np.savez(partial, images=images, characters=np.array(characters))
    os.replace(partial, cache)
    return ClassPool(images), characters


def _cache_path(data_dir, image_size, cache_dir):
    """The cache file of `data_dir`'s zips, named after their sizes and times."""
    stamp = hashlib.sha1()
    for name in ZIP_FILES:
        info = os.stat(os.path.join(data_dir, name))
        stamp.update(f"{name}:{info.st_size}:{int(info.st_mtime)}".encode())
    return os.path.join(
        _cache_dir(cache_dir), f"omniglot_{image_size}_{stamp.hexdigest()[:12]}.npz"
    )


def _read_cache(path, image_size):
    """`(pool, characters)` from the cache file, or `None` (logged) if it is damaged."""
    try:
        arrays = np.load(path)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            problem = "it is a single .npy array, not an .npz archive"
        else:
            with arrays:
                problem, cached = _check_cache_arrays(arrays, image_size)
            if cached is not None:
                return cached
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        problem = f"it cannot be read ({type(error).__name__}: {error})"
    logging.warning("Omniglot cache %s is damaged: %s; rebuilding it from the zips.",
                    path, problem)
    return None


def _check_cache_arrays(arrays, image_size):
    """`(problem, None)` if the cache's arrays are wrong, else `(None, (pool, characters))`."""
    missing = {"images", "characters"} - set(arrays.files)
    if missing:
        return f"it lacks the arrays {sorted(missing)}", None
    images, characters = arrays["images"], arrays["characters"]
    images_shape = (NUM_CHARACTERS, DRAWERS, image_size, image_size, 1)
    if images.shape != images_shape or images.dtype != np.uint8:
        return f"its images are {images.dtype} {images.shape}, not uint8 {images_shape}", None
    if characters.shape != (NUM_CHARACTERS, 3):
        return f"its characters have shape {characters.shape}, not {(NUM_CHARACTERS, 3)}", None
    return None, (ClassPool(images), [tuple(c) for c in characters])


def _load_from_tfds(image_size):
    images, characters = _decode_tfds(image_size)
    return ClassPool(images), list(characters)


@functools.lru_cache(maxsize=2)
def _decode_tfds(image_size):
    """tensorflow-datasets' Omniglot decoded and resized, once per process (it has no file
    cache: each split of a run reads it)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    try:
        dataset = tfds.load("omniglot", split="train+test", as_supervised=False)
    except Exception as error:  # download or preparation failed
        raise FileNotFoundError(
            "No Omniglot directory was given and tensorflow-datasets could not provide "
            f"'omniglot' ({error}). Pass data_dir= a directory with {ZIP_FILES[0]} and "
            f"{ZIP_FILES[1]}."
        ) from error
    decoded = {}
    for example in tfds.as_numpy(dataset):
        image = Image.fromarray(example["image"])
        key = ("tfds", str(example["alphabet"]), str(example["label"]))
        decoded.setdefault(key, []).append(_resize(image, image_size))
    _check_complete(decoded, "tensorflow-datasets' omniglot")
    characters = sorted(decoded)
    images = np.stack([np.stack(decoded[c]) for c in characters])[..., None]
    images.setflags(write=False)
    return images, tuple(characters)


def omniglot_split(pool, characters, split, protocol="maml", seed=1):
    """The classes of `split` under `protocol`, as a `ClassPool`.

    `"maml"`: all 1623 characters shuffled with `seed`, then 1100 train,
    100 validation, 423 test (the original MAML code's protocol).
    `"lake"`: background characters for meta-training and validation (100
    of them, chosen with `seed`), evaluation characters for testing.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; received {protocol!r}.")
    if protocol == "maml":
        order = list(range(pool.num_classes))
        random.Random(seed).shuffle(order)
        parts = {"train": order[:1100], "validation": order[1100:1200], "test": order[1200:]}
    else:
        background = [i for i, c in enumerate(characters) if c[0] == "images_background"]
        evaluation = [i for i, c in enumerate(characters) if c[0] != "images_background"]
        random.Random(seed).shuffle(background)
        parts = {"train": background[100:], "validation": background[:100], "test": evaluation}
    return pool.subset(sorted(parts[split]))


def omniglot_episodes(
    split,
    ways=5,
    shots=1,
    queries=15,
    meta_batch_size=32,
    data_dir=None,
    protocol="maml",
    rotation="per_class",
    seed=0,
    num_batches=None,
    start_batch=0,
    image_size=28,
    cache_dir=None,
):
    """Omniglot few-shot episodes for `split` ("train", "validation", "test").

    Images are float32 `[image_size, image_size, 1]` with ink = 1. By default
    each class of a task is rotated by a random multiple of 90 degrees, as in
    the original MAML code; `rotation="extra_classes"` makes each rotation a
    class of its own, `None` turns rotation off. See `few_shot_episodes` for
    the sampling and `omniglot_split` for the protocols.

    Example:

    ```python
    train = tf_maml.data.omniglot_episodes(
        "train", ways=5, shots=1, queries=15, meta_batch_size=32,
        data_dir="../shared/data/omniglot")
    ```
    """
    pool, characters = load_omniglot(data_dir, image_size=image_size, cache_dir=cache_dir)
    return few_shot_episodes(
        omniglot_split(pool, characters, split, protocol),
        ways=ways,
        shots=shots,
        queries=queries,
        meta_batch_size=meta_batch_size,
        seed=seed,
        rotation=rotation,
        num_batches=num_batches,
        start_batch=start_batch,
    )
