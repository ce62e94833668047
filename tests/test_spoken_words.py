"""Speech (issue 29): the espeak-ng corpus, audio class folders, the log-mel keyword
spotter, SpecAugment, and a spoken-words run with its transfer baselines."""

import json
import os
import shutil
import wave

import keras
import numpy as np
import pytest

import tf_maml
from tf_maml import data, nets
from tf_maml.data import spoken_words

from helpers import run_in_fresh_process, run_python

ESPEAK_SKIP_REASON = ("needs espeak-ng (the Debian package espeak-ng: "
                      "sudo apt-get install espeak-ng)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason=ESPEAK_SKIP_REASON)


def write_wav(path, samples, rate, channels=1):
    """Float samples `[n]` or `[n, channels]` in [-1, 1] as 16-bit PCM."""
    pcm = np.clip(np.round(np.asarray(samples) * 32768), -32768, 32767).astype("<i2")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def tone(frequency, seconds, rate, amplitude=0.5, phase=0.0):
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t + phase)


@needs_espeak
def test_corpus_is_split_by_word_resumes_and_refuses_other_arguments(tmp_path):
    out = tmp_path / "corpus"
    summary = spoken_words.make_corpus(str(out), num_words=6, num_voices=3, workers=2)
    assert summary["files"] == summary["synthesized"] == 18
    manifest = json.loads((out / "manifest.json").read_text())
    words = spoken_words.load_words(6)
    assert sorted(sum(manifest["splits"].values(), [])) == sorted(words)
    for split, listed in manifest["splits"].items():
        for word in listed:
            files = sorted(os.listdir(out / split / word))
            assert files == [f"{v['name']}.wav" for v in manifest["speakers"]]
    first = out / spoken_words.word_split(words[0]) / words[0] / files[0]
    with wave.open(str(first)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        assert 0.15 < f.getnframes() / 16000 < 1.0  # a word, its silence trimmed
    original = first.read_bytes()
    first.unlink()
    partial = first.parent / f"{first.name}.partial"
    partial.write_bytes(b"half")  # a kill's leftover: no file, replaced
    again = spoken_words.make_corpus(str(out), num_words=6, num_voices=3)
    assert again["synthesized"] == 1 and first.read_bytes() == original  # deterministic
    assert not partial.exists()
    with pytest.raises(ValueError, match=r"other arguments \(seed differs"):
        spoken_words.make_corpus(str(out), num_words=6, num_voices=3, seed=1)


def test_missing_espeak_is_named_with_its_package(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(spoken_words.MissingSystemPackageError, match="Debian package espeak-ng"):
        spoken_words.make_corpus(str(tmp_path / "corpus"), num_words=2, num_voices=1)
    assert not (tmp_path / "corpus").exists()  # named before anything is written


def test_word_list_splits_and_speakers_are_fixed():
    words = spoken_words.load_words()
    assert len(words) == len(set(words)) >= 600
    counts = {s: sum(spoken_words.word_split(w) == s for w in words) for s in spoken_words.SPLITS}
    assert counts == {"background": 418, "validation": 105, "evaluation": 173}
    assert spoken_words.load_words(10) == words[:10]
    assert spoken_words.speakers(5) == spoken_words.speakers(12)[:5]
    voices = {(v["accent"], v["variant"]) for v in spoken_words.speakers(40)}
    assert len(voices) == 40  # every speaker a different voice
    with pytest.raises(ValueError, match="num_words"):
        spoken_words.load_words(0)


def test_audio_folders_are_resampled_mixed_down_cut_and_padded(tmp_path):
    rate = 16000
    write_wav(tmp_path / "words" / "low" / "a.wav", tone(300, 0.5, rate), rate)
    # Another rate and two channels: resampled to 16 kHz and averaged.
    stereo = np.stack([tone(300, 0.5, 22050), tone(300, 0.5, 22050, amplitude=0.1)], axis=1)
    write_wav(tmp_path / "words" / "low" / "b.wav", stereo, 22050, channels=2)
    write_wav(tmp_path / "words" / "high" / "a.wav", tone(2000, 1.5, rate), rate)
    write_wav(tmp_path / "words" / "high" / "b.wav", tone(2000, 1.0, rate, 0.1), rate)
    pool = data.ClassPool.from_audio_directory(str(tmp_path / "words"), duration=1.0)
    assert list(pool.class_ids) == ["high", "low"] and pool.images.dtype == np.int16
    assert pool.images.shape == (2, 2, 16000) and list(pool.counts) == [2, 2]
    high, low_a, low_b = pool.images[0, 0], pool.images[1, 0], pool.images[1, 1]
    np.testing.assert_allclose(high / 32768, tone(2000, 1.0, rate), atol=1e-4)  # cut
    np.testing.assert_allclose(low_a[:8000] / 32768, tone(300, 0.5, rate), atol=1e-4)
    assert not low_a[8000:].any()  # padded with silence
    np.testing.assert_allclose(low_b[200:7800] / 32768, tone(300, 0.5, rate, 0.3)[200:7800],
                               atol=2e-3)
    # Episodes scale int16 to [-1, 1).
    (support, _), _ = next(iter(data.few_shot_episodes(pool, ways=2, shots=1, queries=1,
                                                       meta_batch_size=1)))
    assert np.abs(support).max() <= 1.0 and np.abs(support).max() > 0.25

    with pytest.raises(ValueError, match=r"b.wav.*Sample rate.*22050.*differs"):
        data.ClassPool.from_audio_directory(str(tmp_path / "words"), resample_rates=False)
    (tmp_path / "words" / "high" / "broken.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match=r"Cannot read audio '.*high/broken.wav'"):
        data.ClassPool.from_audio_directory(str(tmp_path / "words"))
    with pytest.raises(ValueError, match="holds no audio file"):
        os.makedirs(tmp_path / "words" / "empty")
        data.ClassPool.from_audio_directory(str(tmp_path / "words"))


def test_spec_augment_masks_bands_in_training_only():
    layer = tf_maml.layers.SpecAugment(frequency_masks=2, max_frequency_width=3, time_masks=1,
                                       max_time_width=4, seed=1)
    x = np.random.default_rng(0).normal(size=(16, 12, 20, 1)).astype("float32") + 5.0
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    means = x.mean(axis=(1, 2, 3))
    masked = y != x
    np.testing.assert_allclose(y[masked], np.broadcast_to(means[:, None, None, None], x.shape)[masked],
                               rtol=1e-6)
    rows = masked.all(axis=(2, 3)).sum(axis=1)  # frequency bins masked over all frames
    cols = masked.all(axis=(1, 3)).sum(axis=1)
    assert rows.max() <= 6 and cols.max() <= 4 and (rows + cols).sum() > 0
    # Every masked entry lies in a masked row or column (bands, not scattered entries).
    assert np.array_equal(masked, masked.all(axis=2, keepdims=True) | masked.all(axis=1, keepdims=True))
    again = tf_maml.layers.SpecAugment.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="time_masks"):
        tf_maml.layers.SpecAugment(time_masks=-1)


def test_keyword_convnet_features_do_not_depend_on_the_batch(tmp_path):
    model = nets.keyword_convnet(3, duration=0.5, num_mel_bins=16, frame_step=0.02, filters=4,
                                 augment={"time_masks": 1, "max_time_width": 2})
    rng = np.random.default_rng(0)
    quiet = (0.01 * rng.normal(size=(1, 8000))).astype("float32")
    loud = (0.9 * rng.uniform(-1, 1, size=(1, 8000))).astype("float32")
    alone = model(quiet, training=False)
    beside = model(np.concatenate([quiet, loud]), training=False)[:1]
    np.testing.assert_allclose(alone, beside, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again(quiet, training=False), alone, rtol=1e-6)
    with pytest.raises(ValueError, match="Frames must fit"):
        nets.keyword_convnet(3, frame_length=0.01, frame_step=0.02)


def tone_corpus(root, words=(8, 3, 6), voices=4, seconds=0.5, rate=16000):
    """A corpus in make_spoken_words' layout without espeak-ng: each word a chord of its
    own, each speaker a pitch shift and loudness of its own."""
    rng = np.random.default_rng(0)
    speakers = [{"name": f"{v:03d}_tone", "shift": 1 + 0.03 * v} for v in range(voices)]
    splits, index = {}, 0
    for split, count in zip(spoken_words.SPLITS, words):
        splits[split] = []
        for _ in range(count):
            word, index = f"w{index:02d}", index + 1
            base = 150 * (1 + index)
            for voice in speakers:
                chord = sum(tone(base * k * voice["shift"], seconds, rate, 0.2, rng.uniform(0, 6))
                            for k in (1, 1.5))
                write_wav(root / split / word / f"{voice['name']}.wav",
                          chord * (0.5 + 0.1 * int(voice["name"][:3])), rate)
            splits[split].append(word)
    (root / "manifest.json").write_text(json.dumps({"speakers": speakers, "splits": splits}))
    return root


def test_spoken_words_run_reports_meta_learner_and_baselines(tmp_path, monkeypatch):
    from configs import spoken_words as spoken_words_config  # noqa: PLC0415
    import tf_maml.runs.experiment  # noqa: PLC0415

    config = spoken_words_config.get_config("5w1s")
    config.update({"data_dir": str(tone_corpus(tmp_path / "corpus")), "duration": 0.5,
                   "ways": 3, "queries": 1, "meta_batch_size": 2, "meta_steps": 2,
                   "steps_per_epoch": 2, "validation_batches": 1, "eval_tasks": 6,
                   "eval_max_steps": 1, "eval_queries": 1, "verbose": 0,
                   "held_out_voices": 2})
    config.model.update({"num_mel_bins": 16, "filters": 4})
    config.pretrained.epochs = 1
    workdir, figures = tmp_path / "run", {}
    plot = tf_maml.runs.plots.plot_by_step
    monkeypatch.setattr(tf_maml.runs.plots, "plot_by_step", lambda *args, **kwargs: figures.setdefault(
        os.path.basename(args[2]), plot(*args, **kwargs)))
    report = tf_maml.runs.experiment.run(config, str(workdir))
    for name in ("accuracy", "served_accuracy", "pretrained_accuracy",
                 "pretrained_served_accuracy"):
        assert len(report[f"{name}_by_step"]) == 2, name
    assert len(report["prototype_accuracy_by_step"]) == 1
    # The baselines' body is frozen (BatchNorm keeps pretraining's statistics): served and
    # reported agree.
    for name in ("pretrained_accuracy", "prototype_accuracy"):
        assert report[f"{name}_by_step"] == report[name.replace("_", "_served_", 1) + "_by_step"]
    # The fine-tuned head starts at zero: chance before its first step.
    assert report["pretrained_accuracy_by_step"][0] == pytest.approx(1 / 3, abs=1e-4)
    pretrained = keras.models.load_model(workdir / "pretrained.keras")
    assert pretrained.output_shape[-1] == 8  # one logit per background word
    assert pretrained.input_shape[-1] == 8000  # waveforms in
    assert figures["accuracy_by_step.png"]["panels"][0]["legend"] == [
        "pretrained, nearest prototype (no steps) (as reported)", "as reported (query batch "
        "statistics)", "served (each query on its own, as adapt())",
        "pretrained, fine-tuned (as reported)"]
    # Served: the exported adaptation takes one or more recordings of each new word.
    meta = keras.models.load_model(workdir / "meta.keras")
    meta.export_adaptive(str(tmp_path / "adaptive"), steps=2)
    pool = data.ClassPool.from_audio_directory(config.data_dir + "/evaluation", duration=0.5)
    expected = []
    for shots in (1, 3):
        waves = (pool.images[:3] / 32768).astype("float32")
        task = {"support_x": waves[:, :shots].reshape(3 * shots, -1),
                "support_y": np.repeat(np.arange(3, dtype="int32"), shots),
                "query_x": waves[:, 3]}
        np.savez(tmp_path / f"task_{shots}.npz", **task)
        expected.append(meta.adapt(task["support_x"], task["support_y"], steps=2)
                        .predict(task["query_x"], verbose=0))
    served = run_in_fresh_process("""
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load("adaptive")
        out = []
        for shots in (1, 3):
            task = np.load(f"task_{shots}.npz")
            out.append(served.signatures["serving_default"](
                **{k: tf.constant(task[k]) for k in task.files})["output_0"].numpy())
        np.save("out.npy", np.stack(out))
        """, tmp_path)
    np.testing.assert_allclose(served, np.stack(expected), atol=1e-4)
    shown = run_python(["-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
                        str(tmp_path / "adaptive"), "--tag_set", "serve", "--signature_def",
                        "serving_default"]).stdout
    assert "support_x" in shown and "(-1, 8000)" in shown  # waveforms of any count

    with pytest.raises(ValueError, match="held_out_voices must be in 0..3"):
        config.held_out_voices = 4
        tf_maml.runs.experiment.run(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()  # refused before the workdir records anything
    config.held_out_voices, config.eval_queries = 2, 2  # 1 shot + 2 queries of 2 speakers
    with pytest.raises(ValueError, match=r"shots \+ queries = 3 exceeds the examples"):
        tf_maml.runs.experiment.run(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()  # refused before training
    config.eval_queries = 1
    config.held_out_voices, config.pretrained.fine_tune = 2, "body"
    with pytest.raises(ValueError, match=r"pretrained.fine_tune must be one of \('head', 'all'\)"):
        tf_maml.runs.experiment.run(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    config.pretrained.fine_tune = "head"
    config.held_out_voices, config.data_dir = 2, str(tmp_path / "nothing")
    with pytest.raises(ValueError, match="make_spoken_words.py --out=DIR"):
        tf_maml.runs.experiment.run(config, str(tmp_path / "other"))


def test_variable_ways_and_held_out_voices_draw_from_the_right_recordings(tmp_path):
    from configs import spoken_words as spoken_words_config  # noqa: PLC0415
    from tf_maml.runs import tasks  # noqa: PLC0415

    config = spoken_words_config.get_config("variable")
    config.update({"data_dir": str(tone_corpus(tmp_path / "corpus", voices=6)),
                   "duration": 0.5, "queries": 1})
    config.variable.update({"min_ways": 3, "max_ways": 6, "max_support": 12})
    (sx, sy, sw), (qx, qy, qw) = next(iter(tasks.episodes(config, "train", num_batches=1)))
    assert sx.shape == (4, 12, 8000) and qx.shape == (4, 6, 8000)
    real_ways = qw.numpy().sum(axis=1)  # one query per word of each task
    assert 3 <= real_ways.min() and real_ways.max() <= 6 and np.unique(real_ways).size > 1
    # Held-out speakers: meta-training hears the first 4, tests only the last 2 (their
    # loudness, RMS 0.2 * (0.5 + 0.1 * index) in the tone corpus, tells them apart).
    config.held_out_voices = 2
    heard = tasks.task_of(config).pool(config, "train").images
    tested = tasks.task_of(config).pool(config, "test").images
    assert heard.shape[1] == 4 and tested.shape[1] == 2
    loudness = lambda waves: np.sqrt(np.mean((waves / 32768) ** 2, axis=-1))  # noqa: E731
    assert loudness(heard).max() < 0.17 < loudness(tested).min()
