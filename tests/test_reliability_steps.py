"""The reliability catalogue, in-process part: faults inside meta-steps, bad input
where it enters, and adaptation from many threads (docs/reliability.md).

Each test names the case of issue 11 it covers.
"""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    as_float32, classification_episode, conv_bn_pool_net, sparse_ce, tiny_config,
)

import tf_maml
import tf_maml.runs.step_curves
from tf_maml.engine import support_statistics
from tf_maml.learners.guards import EpisodeError, TrainingDivergedError


def small_classifier(classes=3, image=(4, 4, 1)):
    return keras.Sequential(
        [keras.Input(image), keras.layers.Flatten(), keras.layers.Dense(classes)]
    )


def compiled(model, jit_compile=False, inner_lr=0.1, **options):
    maml = tf_maml.MAML(model, inner_lr=inner_lr, **options)
    maml.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_ce(),
                 metrics=["accuracy"], jit_compile=jit_compile)
    return maml


def batches(count, image=(4, 4, 1), tasks=2, seed=0):
    """`count` float32 classification episode batches as a list of numpy pairs."""
    rng = np.random.default_rng(seed)
    return [as_float32(classification_episode(rng, tasks=tasks, image=image)) for _ in range(count)]


def dataset(episode_batches):
    """A dataset of the given batches, with a dynamic task axis (as a generator gives)."""
    first = episode_batches[0]
    signature = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), first
    )
    return tf.data.Dataset.from_generator(lambda: iter(episode_batches), output_signature=signature)


def weights(model):
    return [v.numpy().copy() for v in model.weights]


# ---------------------------------------------------------------------------
# 2. Divergence: a non-finite meta-loss or meta-gradient is a failure.

@pytest.mark.parametrize("jit_compile, poison, error, message", [
    # Finite input whose forward pass overflows: the steps are blamed.
    (False, 3e38, TrainingDivergedError, "meta-step 3 is not finite.*skipped.*Its input was "
     "finite: the steps diverged"),
    # A NaN in the data: the data is named, not the step sizes (issue 26).
    (True, np.nan, EpisodeError, "meta-step 3 holds a NaN or infinite value in support_x.*"
     "skipped.*The data is at fault"),
])
def test_non_finite_meta_gradient_stops_training_and_skips_the_update(
        jit_compile, poison, error, message):
    good = batches(4)
    poisoned = list(good)
    poisoned[2] = ((good[2][0][0].copy(), good[2][0][1]), good[2][1])
    poisoned[2][0][0][0] = poison
    maml = compiled(small_classifier(), jit_compile=jit_compile)
    initial = weights(maml.model)
    with pytest.raises(error, match=message):
        maml.fit(dataset(poisoned), epochs=1, verbose=0)
    # The weights are those after the two good steps, bit for bit.
    clean = compiled(small_classifier(), jit_compile=jit_compile)
    clean.model.set_weights(initial)
    clean.fit(dataset(good[:2]), epochs=1, verbose=0)
    for got, want in zip(weights(maml.model), weights(clean.model)):
        np.testing.assert_array_equal(got, want)
    assert int(maml.optimizer.iterations) == 2


def test_huge_inner_step_sizes_diverge_with_the_likely_cause_named():
    maml = compiled(small_classifier(), inner_lr=1e38)
    with pytest.raises(TrainingDivergedError, match=r"inner_lr=1e\+38"):
        maml.fit(dataset(batches(3)), epochs=1, verbose=0)
    assert all(np.isfinite(w).all() for w in weights(maml.model))


def test_a_finite_gradient_too_large_to_square_is_refused_before_adam_turns_it_to_nan():
    """Sinusoid at inner_lr=1e6 gives finite meta-gradients whose squares overflow: Adam's
    second moment became infinite and the next update NaN, through a guard that checked
    only finiteness (found in session 13). Such a step is now a fault, its update skipped."""
    import tf_maml.experiment  # noqa: PLC0415
    from tf_maml.runs.tasks import episodes  # noqa: PLC0415

    config = tiny_config(inner_lr=1e6, steps_per_execution=1)
    maml = tf_maml.experiment.build_meta_learner(config)
    batches = iter(episodes(config, "train"))
    for _ in range(2):
        with pytest.raises(TrainingDivergedError, match=r"meta-step 1 is not finite \(NaN, "
                           r"infinite, or too large to square in float32\).*Its input was finite"):
            maml.train_on_batch(*next(batches))
    assert int(maml.optimizer.iterations) == 0
    for variable in maml.model.weights + maml.optimizer.variables:
        assert np.isfinite(variable.numpy()).all(), variable.path


def test_non_finite_evaluation_loss_is_a_failure():
    maml = compiled(small_classifier())
    maml.fit(dataset(batches(1)), epochs=1, verbose=0)
    # The same weights, evaluated by a meta-learner whose inner steps explode.
    maml = compiled(maml.model, inner_lr=1e38)
    with pytest.raises(TrainingDivergedError, match="query loss after adaptation of an evaluation .or validation. batch"):
        maml.evaluate(dataset(batches(2)), verbose=0)


# ---------------------------------------------------------------------------
# 4. Empty meta-batches and sets.

def test_empty_meta_batch_is_refused_without_touching_the_weights():
    episodes = batches(3)
    empty = tf.nest.map_structure(lambda a: a[:0], episodes[1])
    maml = compiled(small_classifier())
    with pytest.raises(EpisodeError, match="meta-step 2 is empty: 0 tasks"):
        maml.fit(dataset([episodes[0], empty, episodes[2]]), epochs=1, verbose=0)
    assert all(np.isfinite(w).all() for w in weights(maml.model))
    assert int(maml.optimizer.iterations) == 1


@pytest.mark.parametrize("which", ["support", "query"])
def test_episodes_with_empty_support_or_query_sets_are_refused_before_training(which):
    (sx, sy), (qx, qy) = batches(1)[0]
    if which == "support":
        sx, sy = sx[:, :0], sy[:, :0]
    else:
        qx, qy = qx[:, :0], qy[:, :0]
    maml = compiled(small_classifier())
    with pytest.raises(ValueError, match=f"{which}_x holds 0 examples per task"):
        maml.fit(x=(sx, sy), y=(qx, qy), epochs=1, verbose=0)
    assert maml.optimizer.iterations == 0


# ---------------------------------------------------------------------------
# 5. Label range, on every batch and everywhere labels enter.

@pytest.mark.parametrize("jit_compile", [False, True])
def test_bad_label_in_a_later_batch_names_labels_range_and_step(jit_compile):
    episodes = batches(3)
    (sx, sy), query = episodes[1]
    sy = sy.copy()
    sy[1, 0] = 7
    episodes[1] = ((sx, sy), query)
    maml = compiled(small_classifier(), jit_compile=jit_compile)
    with pytest.raises(EpisodeError, match=r"meta-step 2 holds class labels from 0 to 7, outside \[0, 3\)"):
        maml.fit(dataset(episodes), epochs=1, verbose=0)
    assert int(maml.optimizer.iterations) == 1


def test_bad_label_in_train_on_batch_and_evaluate():
    (sx, sy), (qx, qy) = batches(1)[0]
    maml = compiled(small_classifier())
    with pytest.raises(ValueError, match="from -1 to 2"):  # checked before the step
        maml.train_on_batch(x=(sx, sy), y=(qx, np.where(qy == 0, -1, qy).astype(np.int32)))
    good = batches(2)
    (sx, sy), (qx, qy) = good[1]
    good[1] = ((sx, sy), (qx, (qy + 5).astype(np.int32)))
    with pytest.raises(EpisodeError, match=r"evaluation \(or validation\) episode batch holds class labels from 0 to 7"):
        maml.evaluate(dataset(good), verbose=0)


def test_bad_labels_in_adapt_and_the_adaptive_saved_model(tmp_path):
    maml = compiled(small_classifier())
    maml.fit(dataset(batches(1)), epochs=1, verbose=0)
    (sx, sy), (qx, _) = batches(1)[0]
    bad = sy[0].copy()
    bad[0] = 3
    with pytest.raises(ValueError, match=r"class labels in \[0, 3\).*from 0 to 3"):
        maml.adapt(sx[0], bad)
    maml.export_adaptive(str(tmp_path / "adaptive"))
    served = tf.saved_model.load(str(tmp_path / "adaptive"))
    served.adapt_and_predict(sx[0], sy[0], qx[0])  # good labels serve
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"class labels in \[0, 3\)"):
        served.adapt_and_predict(sx[0], bad, qx[0])


# ---------------------------------------------------------------------------
# 3. Adaptation from many threads gives exactly the single-threaded results.

def test_concurrent_adapt_matches_single_threaded_and_leaves_layers_unchanged():
    net = conv_bn_pool_net(image=(8, 8, 1))
    maml = compiled(net, transductive=False)
    rng = np.random.default_rng(1)
    episode = as_float32(classification_episode(rng, tasks=4))
    maml.fit(x=episode[0], y=episode[1], epochs=1, verbose=0)
    momenta = [layer.momentum for layer in support_statistics.batch_norm_layers(maml.model)]
    (sx, sy), (qx, _) = episode

    def predict(task):
        return maml.adapt(sx[task], sy[task], steps=2).predict(qx[task], verbose=0)

    expected = [predict(t) for t in range(4)]
    results, errors = {}, []

    def worker(tasks):
        try:
            for t in tasks:
                results[t] = predict(t)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=worker, args=([i, (i + 1) % 4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for t in range(4):
        np.testing.assert_array_equal(results[t], expected[t])
    assert [layer.momentum for layer in support_statistics.batch_norm_layers(maml.model)] == momenta


def test_support_statistics_are_the_support_set_batch_statistics():
    """The functional statistics equal the support set's mean and (biased) variance."""
    net = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    maml = tf_maml.MAML(net)
    support = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
    params, state = maml.inner_loop.current_values()
    state = maml.inner_loop.with_support_statistics(params, state, tf.constant(support))
    by_name = {v.path: s.numpy() for v, s in zip(net.non_trainable_variables, state)}
    mean = next(v for k, v in by_name.items() if "moving_mean" in k)
    variance = next(v for k, v in by_name.items() if "moving_variance" in k)
    np.testing.assert_allclose(mean, support.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(variance, support.var(0), rtol=1e-6)


# ---------------------------------------------------------------------------
# 7, 10. Keras habits, and arguments that were silently accepted.

def test_python_generator_and_py_dataset_as_training_and_validation_data():
    episodes = batches(3)

    class Episodes(keras.utils.PyDataset):
        def __len__(self):
            return len(episodes)

        def __getitem__(self, index):
            return episodes[index]

    maml = compiled(small_classifier())
    history = maml.fit(Episodes(), epochs=1, validation_data=(e for e in episodes), verbose=0)
    assert int(maml.optimizer.iterations) == 3
    validation = maml.evaluate(Episodes(), return_dict=True, verbose=0)["loss"]
    assert history.history["val_loss"][0] == pytest.approx(validation, rel=1e-5)
    history = maml.fit((e for e in episodes), steps_per_epoch=3, epochs=1,
                       validation_data=Episodes(), verbose=0)
    assert int(maml.optimizer.iterations) == 6
    validation = maml.evaluate((e for e in episodes), return_dict=True, verbose=0)["loss"]
    assert history.history["val_loss"][0] == pytest.approx(validation, rel=1e-5)


@pytest.mark.parametrize(
    "case, message",
    [
        ("single_array", "received a single array of shape"),
        ("one_hot_sparse", "sparse categorical loss needs integer class labels"),
        ("no_loss", "compiled without a loss"),
        ("sample_weights", "Per-example weights go inside each set, not beside the pairs"),
    ],
)
def test_confusing_inputs_get_a_message_that_names_the_problem(case, message):
    (sx, sy), (qx, qy) = batches(1)[0]
    maml = compiled(small_classifier())
    if case == "single_array":
        call = lambda: maml.fit(sx, epochs=1, verbose=0)  # noqa: E731
    elif case == "one_hot_sparse":
        one_hot = lambda y: np.eye(3, dtype=np.float32)[y]  # noqa: E731
        call = lambda: maml.fit(x=(sx, one_hot(sy)), y=(qx, one_hot(qy)), verbose=0)  # noqa: E731
    elif case == "no_loss":
        maml = tf_maml.MAML(small_classifier())
        maml.compile(optimizer="adam")
        call = lambda: maml.fit(x=(sx, sy), y=(qx, qy), verbose=0)  # noqa: E731
    else:
        weighted = tf.data.Dataset.from_tensors(((sx, sy), (qx, qy), np.ones(qy.shape, np.float32)))
        call = lambda: maml.fit(weighted, verbose=0)  # noqa: E731
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("value", ["abc", [0.1], float("nan")])
def test_inner_lr_that_is_not_a_number_is_refused(value):
    with pytest.raises(ValueError, match="`inner_lr` must be a positive number"):
        tf_maml.MAML(small_classifier(), inner_lr=value)


def test_inner_lr_none_is_the_default_step_size():
    assert tf_maml.MAML(small_classifier(), inner_lr=None).inner_optimizer.learning_rate == 0.4


@pytest.mark.parametrize("steps", [-1, 2.7, True])
def test_adapt_and_export_refuse_steps_that_are_not_counts(steps, tmp_path):
    maml = compiled(small_classifier())
    maml.fit(dataset(batches(1)), epochs=1, verbose=0)
    (sx, sy), _ = batches(1)[0]
    with pytest.raises(ValueError, match=r"`steps` of adapt\(\) must be an integer >= 0"):
        maml.adapt(sx[0], sy[0], steps=steps)
    with pytest.raises(ValueError, match=r"`steps` of export_adaptive\(\) must be an integer"):
        maml.export_adaptive(str(tmp_path / "x"), steps=steps)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------
# 9. Reload pitfalls.

def test_reloaded_meta_learner_with_dropout_gives_the_results_of_the_saved_one(tmp_path):
    net = conv_bn_pool_net(image=(8, 8, 1), dropout=0.5)
    maml = compiled(net)
    episode = as_float32(classification_episode(np.random.default_rng(3), tasks=2))
    maml.fit(x=episode[0], y=episode[1], epochs=2, verbose=0)
    maml.save(tmp_path / "meta.keras")
    loaded = keras.models.load_model(tmp_path / "meta.keras")
    first = maml.fit(x=episode[0], y=episode[1], epochs=1, verbose=0).history["loss"]
    again = loaded.fit(x=episode[0], y=episode[1], epochs=1, verbose=0).history["loss"]
    assert first == again
    for a, b in zip(maml.model.weights, loaded.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_label_in_the_papers_evaluation_is_named_with_its_batch():
    maml = compiled(small_classifier())
    episodes = batches(2)
    (sx, sy), (qx, qy) = episodes[1]
    episodes[1] = ((sx, sy), (qx, (qy + 4).astype(np.int32)))
    with pytest.raises(ValueError, match=r"evaluation batch 2: class labels must lie in \[0, 3\)"):
        tf_maml.evaluation.query_results_by_step(maml, dataset(episodes), num_tasks=4, max_steps=1)
