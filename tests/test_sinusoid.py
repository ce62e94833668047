"""The sinusoid episode pipeline (MAML paper, section 5.1)."""

import numpy as np
import pytest

import tf_maml


def batches(**kwargs):
    return list(tf_maml.data.sinusoid_episodes(**kwargs))


def test_shapes_ranges_and_targets():
    ((sx, sy), (qx, qy)), = batches(shots=5, queries=7, meta_batch_size=3, num_batches=1)
    assert sx.shape == (3, 5, 1) and qx.shape == (3, 7, 1) and sy.shape == (3, 5, 1)
    assert sx.dtype.name == "float32"
    x = np.concatenate([sx, qx], axis=1)[..., 0]
    y = np.concatenate([sy, qy], axis=1)[..., 0]
    assert x.min() >= -5 and x.max() <= 5
    # Each task is A sin(x - phase): recover A and phase by least squares.
    for xt, yt in zip(x, y):
        design = np.stack([np.sin(xt), -np.cos(xt)], axis=1)
        (a_cos, a_sin), *_ = np.linalg.lstsq(design, yt, rcond=None)
        np.testing.assert_allclose(design @ [a_cos, a_sin], yt, atol=1e-4)
        amplitude, phase = np.hypot(a_cos, a_sin), np.arctan2(a_sin, a_cos)
        assert 0.1 - 1e-4 <= amplitude <= 5 + 1e-4
        assert -1e-4 <= phase <= np.pi + 1e-4


def test_reproducible_from_seed_and_resumable_by_index():
    first = batches(seed=3, num_batches=4)
    again = batches(seed=3, num_batches=4)
    other = batches(seed=4, num_batches=1)
    later = batches(seed=3, num_batches=2, start_batch=2)
    for a, b in zip(np.array(first, dtype=object).ravel(), np.array(again, dtype=object).ravel()):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0][0][1], other[0][0][1])
    assert not np.allclose(first[0][0][1], first[1][0][1])  # new tasks every batch
    np.testing.assert_array_equal(later[0][0][0], first[2][0][0])


def test_amplitudes_cover_the_range():
    ((_, sy), (_, qy)), = batches(shots=50, meta_batch_size=400, num_batches=1)
    peak = np.abs(np.concatenate([sy, qy], axis=1)).max(axis=(1, 2))
    assert peak.max() > 4.5 and peak.min() < 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [({"shots": 0}, "shots"), ({"meta_batch_size": 2.5}, "meta_batch_size"),
     ({"x_range": (5, -5)}, "x_range")],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tf_maml.data.sinusoid_episodes(**kwargs)
