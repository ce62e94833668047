"""Omniglot from the official zips: preprocessing, splits, bad data directories."""

import os
import re
import shutil
import zipfile

import numpy as np
import pytest

from tf_maml.data import load_omniglot, omniglot_episodes, omniglot_split

from helpers import OMNIGLOT_DIR as DATA_DIR
from helpers import needs_omniglot as needs_data


@pytest.fixture(scope="module")
def omniglot():
    # The default cache, which the script tests reuse: decoding takes ~15 s.
    return load_omniglot(DATA_DIR)


@needs_data
def test_all_characters_decoded_like_the_papers(omniglot):
    pool, characters = omniglot
    assert pool.images.shape == (1623, 20, 28, 28, 1) and pool.images.dtype == np.uint8
    assert len(characters) == 1623
    assert sum(c[0] == "images_background" for c in characters) == 964
    # Ink = high: strokes are a minority of pixels, the background is zero.
    images = pool.images.astype(np.float32) / 255
    assert 0.02 < images.mean() < 0.25
    assert np.median(images) == 0.0


@needs_data
@pytest.mark.parametrize(
    "protocol, sizes", [("maml", (1100, 100, 423)), ("lake", (864, 100, 659))]
)
def test_splits_are_disjoint_with_the_protocols_sizes(omniglot, protocol, sizes):
    pool, characters = omniglot
    parts = [omniglot_split(pool, characters, s, protocol) for s in ("train", "validation", "test")]
    assert tuple(p.num_classes for p in parts) == sizes
    ids = [set(p.class_ids) for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    if protocol == "lake":
        assert all(characters[i][0] == "images_evaluation" for i in ids[2])


@needs_data
def test_damaged_cache_is_rebuilt_and_a_second_load_reads_the_cache(
    omniglot, tmp_path, caplog, monkeypatch
):
    import tf_maml.data.omniglot as module

    cache = module._cache_path(DATA_DIR, 28, str(tmp_path))
    with open(cache, "wb") as file:  # e.g. a disk filled while copying the cache
        file.write(b"garbage, not an npz archive")
    pool, characters = load_omniglot(DATA_DIR, cache_dir=str(tmp_path))
    assert f"Omniglot cache {cache} is damaged: it cannot be read" in caplog.text
    assert "rebuilding it from the zips" in caplog.text
    np.testing.assert_array_equal(pool.images, omniglot[0].images)
    assert characters == omniglot[1]
    assert os.listdir(tmp_path) == [os.path.basename(cache)]  # replaced, no partial file left
    rebuilt, _ = module._read_cache(cache, 28)
    np.testing.assert_array_equal(rebuilt.images, omniglot[0].images)

    monkeypatch.setattr(module, "_decode_zips", lambda *a: pytest.fail("decoded again"))
    pool, _ = load_omniglot(DATA_DIR, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(pool.images, omniglot[0].images)


def small_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "arrays, problem",
    [
        ({"images": np.zeros((1623, 20, 28, 28, 1), np.uint8)}, r"it lacks the arrays \['characters'\]"),
        ({"images": np.zeros((3, 20, 28, 28, 1), np.uint8), "characters": np.zeros((3, 3), str)},
         r"its images are uint8 \(3, 20, 28, 28, 1\), not uint8 \(1623, 20, 28, 28, 1\)"),
        ({"images": np.zeros((1623, 20, 28, 28, 1), np.uint8), "characters": np.zeros((1623,), str)},
         r"its characters have shape \(1623,\), not \(1623, 3\)"),
    ],
)
def test_cache_with_wrong_arrays_is_reported_damaged(tmp_path, caplog, arrays, problem):
    import tf_maml.data.omniglot as module

    path = small_npz(tmp_path / "cache.npz", **arrays)
    assert module._read_cache(path, 28) is None
    assert re.search(rf"Omniglot cache .*cache.npz is damaged: {problem}; rebuilding", caplog.text)


def test_truncated_cache_is_reported_damaged(tmp_path, caplog):
    import tf_maml.data.omniglot as module

    path = small_npz(tmp_path / "cache.npz", images=np.zeros((5, 4), np.uint8))
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)
    assert module._read_cache(path, 28) is None
    assert "cache.npz is damaged: it cannot be read (BadZipFile" in caplog.text


@needs_data
def test_omniglot_episodes(omniglot):
    episodes = omniglot_episodes("test", ways=20, shots=1, queries=5, meta_batch_size=2,
                                 data_dir=DATA_DIR, num_batches=1)
    (sx, sy), (qx, qy) = next(iter(episodes))
    assert sx.shape == (2, 20, 28, 28, 1) and qx.shape == (2, 100, 28, 28, 1)
    assert 0.0 <= float(np.min(sx)) and float(np.max(sx)) <= 1.0
    assert sorted(set(sy.numpy().ravel())) == list(range(20))


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_omniglot(str(tmp_path / "nowhere"))


def test_directory_without_omniglot_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks images_background.zip, images_evaluation.zip"):
        load_omniglot(str(tmp_path))


def test_corrupt_zip_is_reported(tmp_path):
    for name in ("images_background.zip", "images_evaluation.zip"):
        (tmp_path / name).write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="images_background.zip is not a valid zip file"):
        load_omniglot(str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_undecodable_image_is_reported(tmp_path):
    for name in ("images_background.zip", "images_evaluation.zip"):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr("images_background/Alpha/character01/0001_01.png", b"garbage")
    with pytest.raises(ValueError, match="cannot decode 'images_background/Alpha/character01"):
        load_omniglot(str(tmp_path), cache_dir=str(tmp_path / "cache"))


@needs_data
def test_incomplete_data_is_reported(tmp_path):
    shutil.copy(os.path.join(DATA_DIR, "images_background.zip"), tmp_path)
    with zipfile.ZipFile(tmp_path / "images_evaluation.zip", "w") as archive:
        with zipfile.ZipFile(os.path.join(DATA_DIR, "images_evaluation.zip")) as source:
            for entry in source.namelist()[:50]:
                archive.writestr(entry, source.read(entry))
    with pytest.raises(ValueError, match="holds .* characters .*Omniglot has 1623"):
        load_omniglot(str(tmp_path), cache_dir=str(tmp_path / "cache"))
