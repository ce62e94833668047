"""Audio classes from a directory tree: one subfolder per class (a word), WAV files inside.

Recordings become fixed-length 16-bit waveforms, as a keyword spotter hears
them: mono, at one sample rate, the first `duration` seconds (shorter ones
padded with silence at the end). Pools hold them as int16 and episodes scale
them to [-1, 1) (`ClassPool.from_audio_directory`); the model turns them into
features itself (`tf_maml.nets.keyword_convnet`), so a served model takes
waveforms.
"""

import numpy as np
import tensorflow as tf

from tf_maml.data.directories import decode_all, files_by_class, stack_by_class

AUDIO_FORMATS = (".wav",)


def _check(sample_rate, duration):
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
        raise ValueError(f"`sample_rate` must be an integer >= 1 (samples per second); "
                         f"received {sample_rate!r}.")
    if not isinstance(duration, (int, float)) or not duration * sample_rate >= 1:
        raise ValueError(f"`duration` must be a number of seconds holding at least one "
                         f"sample; received {duration!r}.")
    return int(round(duration * sample_rate))


def resample(audio, rate, target_rate):
    """1-D float `audio` at `rate` (a scalar tensor) resampled to `target_rate`:
    band-limited by the FFT (recordings of a word start and end near silence)."""
    n = tf.shape(audio)[0]
    m = tf.cast(tf.round(tf.cast(n, tf.float64) * tf.cast(target_rate, tf.float64)
                         / tf.cast(rate, tf.float64)), tf.int32)
    bins = m // 2 + 1
    spectrum = tf.signal.rfft(audio)[:bins]
    spectrum = tf.pad(spectrum, [[0, bins - tf.shape(spectrum)[0]]])
    return tf.signal.irfft(spectrum, fft_length=m[None]) * tf.cast(m / n, tf.float32)


def waveform_loader(sample_rate=16000, duration=1.0, resample_rates=True):
    """A TensorFlow function: WAV file path -> int16 waveform `[duration * sample_rate]`.

    Channels are averaged; a file at another rate is resampled to
    `sample_rate` (`resample_rates`) or fails naming itself; the first
    `duration` seconds are kept, shorter recordings padded with zeros. Files
    must be 16-bit PCM WAV (what `tf.audio.decode_wav` reads).
    """
    length = _check(sample_rate, duration)

    def load(path):
        contents = tf.io.read_file(path)
        is_wav = tf.logical_and(tf.strings.substr(contents, 0, 4) == "RIFF",
                                tf.strings.substr(contents, 8, 4) == "WAVE")
        with tf.control_dependencies([tf.debugging.Assert(is_wav, ["Not a WAV file:", path])]):
            audio, rate = tf.audio.decode_wav(contents)
        audio = tf.reduce_mean(audio, axis=1)
        if resample_rates:
            audio = tf.cond(tf.equal(rate, sample_rate), lambda: audio,
                            lambda: resample(audio, rate, sample_rate))
        else:
            same = tf.debugging.Assert(tf.equal(rate, sample_rate), [
                "Sample rate", rate, "differs from", sample_rate,
                "(resample_rates=True resamples it):", path])
            with tf.control_dependencies([same]):
                audio = tf.identity(audio)
        audio = audio[:length]
        audio = tf.pad(audio, [[0, length - tf.shape(audio)[0]]])
        pcm = tf.clip_by_value(tf.round(audio * 32768.0), -32768.0, 32767.0)
        return tf.ensure_shape(tf.cast(pcm, tf.int16), [length])

    return load


def waveforms_by_class(path, sample_rate=16000, duration=1.0, resample_rates=True):
    """`{class name: int16 array [recordings, duration * sample_rate]}` of a tree of WAV
    files, one subfolder per class (see `waveform_loader`).

    Raises:
        ValueError: no such directory, no subfolders, a class without WAV files,
            or a file that cannot be read (or has another rate, without
            `resample_rates`), each named.
    """
    load = waveform_loader(sample_rate, duration, resample_rates)
    files = files_by_class(path, AUDIO_FORMATS, "audio")
    flat = [f for paths in files.values() for f in paths]
    return stack_by_class(files, decode_all(flat, load, kind="audio"))
