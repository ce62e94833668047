"""Few-shot episodes from class pools: sampling, labels, rotation, bad input."""

import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.data import ClassPool, few_shot_episodes


def labelled_pool(classes=12, examples=6, size=4):
    """Example e of class c is an image filled with the value 10 * c + e."""
    values = 10 * np.arange(classes)[:, None] + np.arange(examples)[None, :]
    images = np.broadcast_to(values[:, :, None, None, None], (classes, examples, size, size, 1))
    return ClassPool(images.astype(np.uint8))


def first_batch(pool, **kwargs):
    episodes = few_shot_episodes(pool, scale=1.0, num_batches=1, **kwargs)
    (sx, sy), (qx, qy) = next(iter(episodes))
    return sx.numpy(), sy.numpy(), qx.numpy(), qy.numpy()


def test_episode_structure_and_label_consistency():
    sx, sy, qx, qy = first_batch(labelled_pool(), ways=3, shots=2, queries=3, meta_batch_size=4)
    assert sx.shape == (4, 6, 4, 4, 1) and qx.shape == (4, 9, 4, 4, 1)
    assert sy.dtype == np.int32 and sx.dtype == np.float32
    for t in range(4):
        values_s = sx[t, :, 0, 0, 0].astype(int)
        values_q = qx[t, :, 0, 0, 0].astype(int)
        classes = {}
        for value, label in zip(np.concatenate([values_s, values_q]), np.concatenate([sy[t], qy[t]])):
            classes.setdefault(int(label), set()).add(value // 10)
        # Each label is one class, different labels different classes.
        assert sorted(classes) == [0, 1, 2]
        assert all(len(c) == 1 for c in classes.values())
        assert len(set.union(*classes.values())) == 3
        # Examples drawn without replacement across support and query.
        assert len(set(values_s) | set(values_q)) == len(values_s) + len(values_q)


def test_labels_are_remapped_in_random_order_and_tasks_differ():
    sx, sy, _, _ = first_batch(labelled_pool(), ways=5, shots=1, queries=1, meta_batch_size=32)
    class_of_label0 = {int(sx[t, list(sy[t]).index(0), 0, 0, 0]) // 10 for t in range(32)}
    assert len(class_of_label0) > 3
    assert len({tuple(sx[t, :, 0, 0, 0]) for t in range(32)}) > 20


def test_reproducible_from_seed_and_resumable():
    pool = labelled_pool()
    a = list(few_shot_episodes(pool, 3, 1, 1, 2, seed=5, num_batches=3))
    b = list(few_shot_episodes(pool, 3, 1, 1, 2, seed=5, num_batches=3))
    c = list(few_shot_episodes(pool, 3, 1, 1, 2, seed=5, num_batches=1, start_batch=2))
    np.testing.assert_array_equal(a[1][0][0], b[1][0][0])
    np.testing.assert_array_equal(a[2][0][0], c[0][0][0])
    assert not np.array_equal(a[0][0][0], a[1][0][0])


def test_classes_of_unequal_size_never_yield_padding():
    rng = np.random.default_rng(0)
    classes = [np.full((n, 2, 2, 1), 10 * c + 1, np.uint8) for c, n in enumerate([3, 7, 4, 5])]
    pool = ClassPool(classes)
    assert list(pool.counts) == [3, 7, 4, 5]
    for batch in few_shot_episodes(pool, 4, 1, 2, 8, scale=1.0, num_batches=5, seed=int(rng.integers(9))):
        (sx, _), (qx, _) = batch
        assert np.all(sx.numpy() % 10 == 1) and np.all(qx.numpy() % 10 == 1)


def test_per_class_rotation_rotates_whole_classes_by_multiples_of_90_degrees():
    base = np.arange(9, dtype=np.uint8).reshape(3, 3)
    images = np.broadcast_to(base[None, None, :, :, None], (6, 4, 3, 3, 1))
    sx, sy, qx, qy = first_batch(
        ClassPool(images), ways=3, shots=2, queries=2, meta_batch_size=16, rotation="per_class"
    )
    rotations = [np.rot90(base, k) for k in range(4)]
    seen = set()
    for t in range(16):
        for label in range(3):
            members = np.concatenate([sx[t][sy[t] == label], qx[t][qy[t] == label]])[..., 0]
            k = [i for i, r in enumerate(rotations) if np.array_equal(members[0], r)]
            assert len(k) == 1
            assert all(np.array_equal(m, rotations[k[0]]) for m in members)
            seen.add(k[0])
    assert seen == {0, 1, 2, 3}


def test_rotations_as_extra_classes_quadruple_the_pool():
    base = np.arange(9, dtype=np.uint8).reshape(3, 3)  # no rotation maps it onto itself
    images = np.broadcast_to(10 * np.arange(3)[:, None, None] + base, (2, 3, 3, 3))
    images = np.ascontiguousarray(images.transpose(1, 0, 2, 3)[..., None])  # 3 classes, 2 examples
    pool = ClassPool(images).with_rotations()
    assert pool.num_classes == 12
    for c in range(3):
        for k in range(4):
            np.testing.assert_array_equal(pool.images[4 * c + k], np.rot90(images[c], k, axes=(1, 2)))

    def class_and_rotation(image):
        c = int(image.min()) // 10
        (k,) = [k for k in range(4) if np.array_equal(image[..., 0], np.rot90(base + 10 * c, k))]
        return c, k

    sx, sy, qx, qy = first_batch(ClassPool(images), ways=10, shots=1, queries=1,
                                 meta_batch_size=2, rotation="extra_classes")
    assert sx.shape == (2, 10, 3, 3, 1)
    for t in range(2):
        support = {int(y): class_and_rotation(x) for x, y in zip(sx[t], sy[t])}
        assert len(set(support.values())) == 10  # ten distinct rotated classes
        assert all(support[int(y)] == class_and_rotation(x) for x, y in zip(qx[t], qy[t]))


def test_split_is_disjoint_and_seeded():
    pool = labelled_pool(classes=20)
    a, b, c = pool.split([10, 5, 5], seed=3)
    ids = [set(p.class_ids) for p in (a, b, c)]
    assert [len(i) for i in ids] == [10, 5, 5] and set.union(*ids) == set(range(20))
    assert set(pool.split([10, 5, 5], seed=3)[0].class_ids) == ids[0]


@pytest.mark.parametrize(
    "sizes, message",
    [
        ([-2, 5], r"`sizes\[0\]` must be an integer >= 1 \(the classes of pool 0\); "
                  r"received -2 in sizes=\[-2, 5\]\. Give every pool at least one class\."),
        ([5, 0], r"`sizes\[1\]` must be an integer >= 1 .*received 0 in sizes=\[5, 0\]"),
        ([4, 2.5], r"`sizes\[1\]` must be an integer >= 1 .*received 2\.5"),
        ([], r"`sizes` must list at least one pool size; received \[\]\."),
        ([8, 5], r"Cannot split 10 classes into \[8, 5\] \(total 13\); `sizes` may total at most 10\."),
    ],
)
def test_bad_split_sizes_are_rejected(sizes, message):
    with pytest.raises(ValueError, match=message):
        labelled_pool(classes=10).split(sizes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ways": 13}, r"ways=13 exceeds the 12 classes"),
        ({"shots": 4, "queries": 3}, r"shots \+ queries = 7 exceeds the examples of 12 class"),
        ({"rotation": "sideways"}, "`rotation` must be one of"),
        ({"ways": 0}, r"`ways` must be an integer >= 1 \(classes per task\); received 0\."),
        ({"shots": 0}, r"`shots` must be an integer >= 1 \(support examples per class\); received 0\."),
        ({"queries": 0}, r"`queries` must be an integer >= 1 \(query examples per class, on which "
                         r"the meta-loss is computed\); received 0\."),
        ({"meta_batch_size": 0}, r"`meta_batch_size` must be an integer >= 1 \(tasks per batch\); "
                                 r"received 0\."),
        ({"shots": True}, r"`shots` must be an integer >= 1 .*received True\."),
    ],
)
def test_bad_sampling_arguments_are_rejected(kwargs, message):
    arguments = {"ways": 3, "shots": 1, "queries": 1, "meta_batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        few_shot_episodes(labelled_pool(), **arguments)


def test_sinusoid_sizes_are_checked_like_the_pools():
    # Kept here (tests/test_sinusoid.py belongs to another change): queries=0 is refused too.
    with pytest.raises(ValueError, match=r"`queries` must be an integer >= 1 \(query points per "
                                         r"task, on which the meta-loss is computed\); received 0\."):
        tf_maml.data.sinusoid_episodes(queries=0)
    ((sx, _), _), = list(tf_maml.data.sinusoid_episodes(shots=np.int64(3), meta_batch_size=2,
                                                        num_batches=1))
    assert sx.shape == (2, 3, 1)


def constant_batch(pool, **kwargs):
    (sx, _), (qx, _) = next(iter(few_shot_episodes(pool, 2, 1, 1, 1, num_batches=1, **kwargs)))
    return np.concatenate([sx.numpy().ravel(), qx.numpy().ravel()])


def test_default_scale_follows_the_pool_dtype():
    uint8 = ClassPool(np.full((3, 2, 2, 2, 1), 255, np.uint8))
    float32 = ClassPool(np.ones((3, 2, 2, 2, 1), np.float32))
    np.testing.assert_array_equal(constant_batch(uint8), 1.0)  # 255 * (1 / 255)
    np.testing.assert_array_equal(constant_batch(float32), 1.0)  # already in [0, 1]
    np.testing.assert_array_equal(constant_batch(uint8, scale=0.5), 127.5)
    np.testing.assert_array_equal(constant_batch(float32, scale=2.0), 2.0)


def test_images_of_mixed_shapes_are_rejected():
    with pytest.raises(ValueError, match="All examples must share one shape"):
        ClassPool([np.zeros((3, 4, 4, 1)), np.zeros((3, 5, 5, 1))])


def test_rotation_needs_square_images():
    pool = ClassPool(np.zeros((4, 3, 4, 5, 1), np.uint8))
    with pytest.raises(ValueError, match="need square images"):
        few_shot_episodes(pool, 2, 1, 1, 2, rotation="per_class")


def test_episodes_meta_train_a_classifier():
    pool = labelled_pool(classes=8, examples=6, size=8)
    episodes = few_shot_episodes(pool, 3, 1, 2, 4, num_batches=3)
    maml = tf_maml.MAML(tf_maml.nets.conv4(3, input_shape=(8, 8, 1), filters=4, blocks=2),
                        inner_lr=0.4)
    maml.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    kernel = maml.model.weights[0].numpy()
    history = maml.fit(episodes, verbose=0)
    assert not np.array_equal(maml.model.weights[0].numpy(), kernel)
    assert int(maml.optimizer.iterations) == 3 and np.isfinite(history.history["loss"]).all()


def class_datasets(classes=6, examples=5):
    """Class c yields examples whose pixels all equal 10 * c + e."""
    return [
        tf.data.Dataset.from_tensor_slices(
            np.full((examples, 3, 3, 1), 10 * c, np.uint8) + np.arange(examples, dtype=np.uint8)[:, None, None, None]
        )
        for c in range(classes)
    ]


def test_episodes_from_class_datasets_are_consistent_and_seeded():
    from tf_maml.data import few_shot_episodes_from_class_datasets

    episodes = few_shot_episodes_from_class_datasets(class_datasets(), 3, 2, 2, 4, seed=1, scale=1)
    batches = list(episodes.take(6))
    for (sx, sy), (qx, qy) in batches:
        assert sx.shape == (4, 6, 3, 3, 1) and qy.shape == (4, 6)
        for t in range(4):
            values = np.concatenate([sx[t, :, 0, 0, 0], qx[t, :, 0, 0, 0]]).astype(int)
            labels = np.concatenate([sy[t], qy[t]])
            assert len(set(values)) == len(values)  # no example twice in a task
            for label in range(3):  # one class per label, distinct classes
                assert len({v // 10 for v in values[labels == label]}) == 1
            assert len({v // 10 for v in values}) == 3
    again = list(few_shot_episodes_from_class_datasets(class_datasets(), 3, 2, 2, 4, seed=1, scale=1).take(6))
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a[0][0], b[0][0])
    maml = tf_maml.MAML(tf_maml.nets.mlp(inputs=9, outputs=3), inner_lr=0.1)
    flat = episodes.map(lambda s, q: ((tf.reshape(s[0], [-1, 6, 9]), s[1]), (tf.reshape(q[0], [-1, 6, 9]), q[1])))
    maml.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(maml.fit(flat, steps_per_epoch=2, verbose=0).history["loss"][0])
    assert int(maml.optimizer.iterations) == 2


def test_class_datasets_need_enough_classes():
    from tf_maml.data import few_shot_episodes_from_class_datasets

    with pytest.raises(ValueError, match="ways=7 exceeds the 6 class datasets"):
        few_shot_episodes_from_class_datasets(class_datasets(), 7, 1, 1, 2)


@pytest.mark.parametrize(
    "datasets, sizes, message",
    [
        ("six", (3, 0, 1, 2), r"`shots` must be an integer >= 1 \(support examples per class\); "
                              r"received 0\."),
        ("six", (3, 1, 0, 2), r"`queries` must be an integer >= 1 .*received 0\."),
        ("six", (0, 1, 1, 2), r"`ways` must be an integer >= 1 .*received 0\."),
        ("six", (3, 1, 1, 0), r"`meta_batch_size` must be an integer >= 1 .*received 0\."),
        ("none", (3, 1, 1, 2), r"`class_datasets` must hold at least one dataset \(one per class\); "
                               r"received none\."),
        ("array", (3, 1, 1, 2), r"`class_datasets\[0\]` must be a tf.data.Dataset of one class's "
                                r"examples; received ndarray\."),
        ("six", (3, 3, 3, 2), r"`class_datasets\[0\]` holds 5 examples, fewer than shots \+ queries = 6, "
                              r"so it could never fill a task; lower `shots` or `queries`, or drop "
                              r"that class\."),
    ],
)
def test_class_datasets_reject_bad_sizes(datasets, sizes, message):
    from tf_maml.data import few_shot_episodes_from_class_datasets

    datasets = {"six": class_datasets(), "none": [], "array": [np.zeros((5, 3, 3, 1))]}[datasets]
    with pytest.raises(ValueError, match=message):
        few_shot_episodes_from_class_datasets(datasets, *sizes)
