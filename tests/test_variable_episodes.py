"""Meta-Dataset's variable-way, variable-shot sampler: padded episodes of one shape."""

import keras
import numpy as np
import pytest

import tf_maml
import tf_maml.runs.experiment
from tf_maml.data import ClassPool, variable_episodes

from helpers import OMNIGLOT_DIR, needs_omniglot, sparse_ce


def numbered_pool(counts, seed=0):
    """A pool whose example e of class c is a 2x2 image of the number 1000 * c + e + 1."""
    images = [np.full((n, 2, 2, 1), 0.0) + (1000 * c + np.arange(n) + 1)[:, None, None, None]
              for c, n in enumerate(counts)]
    return ClassPool([i.astype(np.float32) for i in images])


def tasks_of(episodes, batches):
    """Each task of the first batches: (support x, y, w, query x, y, w) as numpy."""
    for support, query in episodes.take(batches):
        for t in range(support[0].shape[0]):
            yield [a[t].numpy() for a in (*support, *query)]


def test_tasks_follow_meta_datasets_rules():
    counts = np.random.default_rng(0).integers(12, 40, size=30)
    pool = numbered_pool(counts)
    episodes = variable_episodes(pool, min_ways=3, max_ways=8, max_support=40, queries=2,
                                 meta_batch_size=4, seed=0, num_batches=25)
    ways_seen, support_sizes, shots_by_size = set(), set(), []
    for sx, sy, sw, qx, qy, qw in tasks_of(episodes, 25):
        assert sx.shape == (40, 2, 2, 1) and qx.shape == (16, 2, 2, 1)
        ids = {"support": sx[sw > 0, 0, 0, 0].astype(int), "query": qx[qw > 0, 0, 0, 0].astype(int)}
        # Padding: zeros, label 0, weight 0, after the real examples.
        for x, y, w in ((sx, sy, sw), (qx, qy, qw)):
            real = int(w.sum())
            assert set(np.unique(w)) <= {0.0, 1.0} and (w[:real] == 1).all()
            assert (x[real:] == 0).all() and (y[real:] == 0).all()
        ways = len(np.unique(sy[sw > 0]))
        assert 3 <= ways <= 8 and sorted(np.unique(sy[sw > 0])) == list(range(ways))
        assert sorted(np.unique(qy[qw > 0])) == list(range(ways))
        assert (np.bincount(qy[qw > 0]) == 2).all()  # fixed queries per class
        all_ids = np.concatenate([ids["support"], ids["query"]]) - 1
        assert len(set(all_ids)) == len(all_ids)  # no example twice in a task
        labels = np.concatenate([sy[sw > 0], qy[qw > 0]])
        classes = all_ids // 1000
        for label in range(ways):  # one class per label, distinct classes
            assert len(set(classes[labels == label])) == 1
        assert len(set(classes)) == ways
        for label in range(ways):
            size = counts[classes[labels == label][0]]
            shots = int((sy[sw > 0] == label).sum())
            assert 1 <= shots <= size - 2
            shots_by_size.append((size, shots))
        ways_seen.add(ways)
        support_sizes.add(len(ids["support"]))
    assert {3, 8} <= ways_seen and len(support_sizes) > 10
    sizes, shots = np.array(shots_by_size).T
    assert np.corrcoef(sizes, shots)[0, 1] > 0  # larger classes get more shots


def test_streams_are_seeded_and_resume_at_a_batch():
    pool = numbered_pool([15] * 12)
    make = lambda seed, start, n: variable_episodes(  # noqa: E731
        pool, min_ways=2, max_ways=5, max_support=12, queries=3, meta_batch_size=2, seed=seed,
        start_batch=start, num_batches=n)
    whole = list(tasks_of(make(1, 0, 4), 4))
    resumed = list(tasks_of(make(1, 2, 2), 2))
    for a, b in zip(whole[4:], resumed):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    other = list(tasks_of(make(2, 0, 1), 1))
    assert not np.array_equal(other[0][0], whole[0][0])


def test_meta_learning_on_variable_episodes_traces_one_step():
    pool = numbered_pool([10] * 12)
    pool.images = pool.images / 12_000.0
    episodes = variable_episodes(pool, min_ways=2, max_ways=4, max_support=10, queries=2,
                                 meta_batch_size=2, seed=3, num_batches=4)
    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(8), keras.layers.BatchNormalization(),
                            keras.layers.ReLU(), keras.layers.Dense(4)])
    traces = []

    class CountingMAML(tf_maml.MAML):
        def train_step(self, data):
            traces.append(1)  # Python: runs when the step is traced
            return super().train_step(data)

    maml = CountingMAML(net, inner_lr=0.3)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["sparse_categorical_accuracy"])
    history = maml.fit(episodes, epochs=2, verbose=0)
    assert int(maml.optimizer.iterations) == 8
    assert np.isfinite(history.history["loss"]).all()
    assert len(traces) == 1
    logs = maml.evaluate(episodes, return_dict=True, verbose=0)
    assert 0.0 <= logs["sparse_categorical_accuracy"] <= 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_ways=6, max_ways=5), "min_ways=6 exceeds max_ways=5"),
    (dict(min_ways=13, max_ways=20), "min_ways=13 exceeds the 12 classes of the pool"),
    (dict(max_ways=5, max_support=4), "max_support=4 is below max_ways=5"),
    (dict(queries=9), r"12 class\(es\) hold fewer than queries \+ 1 = 10 examples"),
    (dict(queries=0), r"`queries` must be an integer >= 1 \(query examples per class\)"),
    (dict(max_ways=2.5), "`max_ways` must be an integer >= 1"),
])
def test_bad_sizes_are_refused(kwargs, message):
    arguments = dict(min_ways=2, max_ways=5, max_support=20, queries=2, meta_batch_size=2)
    with pytest.raises(ValueError, match=message):
        variable_episodes(numbered_pool([9] * 12), **{**arguments, **kwargs})


def test_more_ways_than_the_pool_has_classes_is_said(caplog):
    """Issue 27: max_ways=20 on a 10-class pool capped the ways without a word."""
    with caplog.at_level("WARNING", logger="absl"):
        episodes = variable_episodes(numbered_pool([9] * 10), min_ways=2, max_ways=20,
                                     max_support=40, queries=2, meta_batch_size=2)
    assert "max_ways=20 exceeds the 10 classes of the pool" in caplog.text
    for task in tasks_of(episodes, 2):
        assert task[1][task[2] > 0].max() < 10 and task[1].shape == (40,)


@needs_omniglot
def test_omniglot_variable_config_builds_padded_episodes_and_a_20_way_learner():
    from configs import omniglot  # noqa: PLC0415

    config = omniglot.get_config("variable")
    config.data_dir = OMNIGLOT_DIR
    (sx, sy, sw), (qx, qy, qw) = next(iter(tf_maml.experiment.episodes(config, "test",
                                                                     num_batches=1)))
    assert sx.shape == (4, 100, 28, 28, 1) and qx.shape == (4, 100, 28, 28, 1)
    ways = [len(np.unique(y[w > 0])) for y, w in zip(sy.numpy(), sw.numpy())]
    assert all(5 <= w <= 20 for w in ways) and (qw.numpy().sum(axis=1) == 5 * np.array(ways)).all()
    meta_learner = tf_maml.experiment.build_meta_learner(config)
    assert meta_learner.model.output_shape == (None, 20)
    config.rotation = "per_class"
    with pytest.raises(ValueError, match="without rotations; set --config.rotation=''"):
        tf_maml.experiment.episodes(config, "train")
