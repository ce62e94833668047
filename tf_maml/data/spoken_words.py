"""A spoken-words corpus synthesized with espeak-ng: few-shot keyword spotting offline.

No speech corpus can be downloaded everywhere, but Debian's `espeak-ng` speaks
any English word in many accents and voice variants, at any pitch and speed.
A *speaker* here is one accent, variant, pitch and speed; every word of the
corpus is spoken by the same speakers, so speakers can be held out like
words. The corpus is a folder per word (the layout
`tf_maml.data.ClassPool.from_audio_directory` reads) under one folder per
split:

    out/background/<word>/<speaker>.wav     16-bit mono WAV, 16 kHz
    out/validation/<word>/...
    out/evaluation/<word>/...
    out/manifest.json                        words, splits, speakers, sizes

Each word's split follows from the word alone (`word_split`), so a smaller
corpus keeps every word in its split. Synthesis is deterministic: the same
arguments give the same files.
"""

import concurrent.futures
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import wave

import numpy as np
import tensorflow as tf

from tf_maml.data import audio

SPLITS = ("background", "validation", "evaluation")
WORDS_FILE = os.path.join(os.path.dirname(__file__), "spoken_words.txt")
# espeak-ng's English accents (its own voices, not MBROLA's, which need more packages).
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Voice variants that sound human (robots, effects and test voices left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "croak", "whisper", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "Antonio", "Auntie", "Belinda",
    "Benjamin", "Boris", "Caleb", "David", "Denis", "Diogo", "Ed", "Edward", "Gene",
    "Gustave", "Henrique", "Hugo", "Iven", "Jacky", "John", "Lee", "Linda", "Marcelo",
    "Marco", "Mario", "Max", "Michael", "Michel", "Miguel", "Mike", "Mr_Serious", "Nguyen",
    "Pablo", "Paul", "Pedro", "Quincy", "Rob", "Robert", "Steph", "Zac", "anika",
    "anxiousAndy", "female_whisper", "grandma", "grandpa", "norbert", "sandro", "shelby",
    "travis", "victor",
)
PITCHES = (25, 75)  # espeak-ng's -p range drawn from (0..99; 50 is its default)
SPEEDS = (140, 220)  # words per minute drawn from (175 is espeak-ng's default)
# Silence trimmed from both ends, keeping a margin: a recording starts near its word.
_SILENCE, _MARGIN_SECONDS = 1e-3, 0.03


class MissingSystemPackageError(RuntimeError):
    """A program this needs is not installed; the message names its Debian package."""


def espeak_path():
    """The espeak-ng program, or `MissingSystemPackageError` naming its package."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingSystemPackageError(
            "espeak-ng is not installed: the spoken-words corpus is synthesized with it. "
            "Install the Debian package espeak-ng (sudo apt-get install espeak-ng).")
    return path


def load_words(num_words=None):
    """The corpus' words in their fixed order (`tf_maml/data/spoken_words.txt`), the
    first `num_words` of them (None: all)."""
    with open(WORDS_FILE, encoding="utf-8") as f:
        words = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if num_words is not None:
        if not 1 <= num_words <= len(words):
            raise ValueError(f"`num_words` must be in 1..{len(words)} (the words listed in "
                             f"{WORDS_FILE}); received {num_words}.")
        words = words[:num_words]
    return words


def word_split(word):
    """The split `word` belongs to: 60% background, 15% validation, 25% evaluation, by a
    hash of the word (fixed, whichever words a corpus takes)."""
    bucket = int(hashlib.sha256(word.encode()).hexdigest(), 16) % 20
    return SPLITS[0] if bucket < 12 else SPLITS[1] if bucket < 15 else SPLITS[2]


def speakers(count, seed=0):
    """`count` distinct speakers `{"name", "accent", "variant", "pitch", "speed"}`, drawn
    from `seed`; the first k of `speakers(n)` are `speakers(k)`."""
    rng = np.random.default_rng(seed)
    chosen, seen = [], set()
    while len(chosen) < count:
        accent = ACCENTS[rng.integers(len(ACCENTS))]
        variant = VARIANTS[rng.integers(len(VARIANTS))]
        pitch = int(rng.integers(PITCHES[0], PITCHES[1] + 1))
        speed = int(rng.integers(SPEEDS[0], SPEEDS[1] + 1))
        if (accent, variant) in seen:  # each speaker a different voice
            continue
        seen.add((accent, variant))
        chosen.append({"name": f"{len(chosen):03d}_{accent}+{variant}_p{pitch}_s{speed}",
                       "accent": accent, "variant": variant, "pitch": pitch, "speed": speed})
    return chosen


def trim_silence(samples, rate):
    """`samples` without the silence before and after the word, a margin kept."""
    loud = np.flatnonzero(np.abs(samples) > _SILENCE)
    if not len(loud):
        return samples
    margin = int(_MARGIN_SECONDS * rate)
    return samples[max(loud[0] - margin, 0): loud[-1] + margin + 1]


def synthesize(word, speaker, sample_rate=16000):
    """`word` spoken by `speaker` (see `speakers`): float32 samples at `sample_rate`."""
    result = subprocess.run(
        [espeak_path(), "-v", f"{speaker['accent']}+{speaker['variant']}",
         "-p", str(speaker["pitch"]), "-s", str(speaker["speed"]), "--stdout", word],
        capture_output=True, check=False)
    if result.returncode or not result.stdout:
        raise RuntimeError(f"espeak-ng failed to speak {word!r} as {speaker['name']}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    # espeak-ng streams a WAV whose header cannot know the length: the samples are all
    # that follows the data chunk's header.
    with wave.open(io.BytesIO(result.stdout)) as stream:
        rate, width = stream.getframerate(), stream.getsampwidth()
    if width != 2:
        raise RuntimeError(f"espeak-ng wrote {8 * width}-bit samples; expected 16-bit.")
    data = result.stdout[result.stdout.index(b"data", 12) + 8:]
    pcm = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    if rate != sample_rate:
        pcm = audio.resample(tf.constant(pcm), rate, sample_rate).numpy()
    return trim_silence(pcm, sample_rate).astype(np.float32)


def write_wav(path, samples, sample_rate):
    """Writes float samples in [-1, 1] as a 16-bit mono WAV, atomically (a kill leaves
    the old file or none, never half of one)."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    partial = f"{path}.partial"
    with wave.open(partial, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    os.replace(partial, path)


def _manifest(words, voices, seed, sample_rate):
    return {
        "description": "Spoken words synthesized with espeak-ng (tf_maml.data.spoken_words).",
        "espeak_ng": subprocess.run([espeak_path(), "--version"], capture_output=True,
                                    text=True, check=False).stdout.strip(),
        "sample_rate": sample_rate, "seed": seed,
        "speakers": voices,
        "splits": {split: [w for w in words if word_split(w) == split] for split in SPLITS},
    }


def _check_resumable(out, manifest):
    """Refuses adding to a corpus made with other arguments (mixed files)."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        earlier = json.load(f)
    for key in ("sample_rate", "seed", "speakers", "splits"):
        if earlier.get(key) != manifest[key]:
            raise ValueError(
                f"{out} holds a corpus made with other arguments ({key} differs; see its "
                "manifest.json); give another --out, or the arguments it was made with.")


def make_corpus(out, num_words=None, num_voices=20, seed=0, sample_rate=16000,
                progress=None, workers=None):
    """Synthesizes the corpus into `out`, resuming: files already there are kept.

    Args:
        out: the corpus folder (created).
        num_words: the first `num_words` words of the word list (None: all).
        num_voices: speakers (`speakers(num_voices, seed)`), each speaking every word.
        seed: draws the speakers.
        sample_rate: of the WAV files.
        progress: called with the number of files done after each file, if given.
        workers: espeak-ng processes at once (None: one per CPU).

    Returns:
        `{"files", "bytes", "seconds", "synthesized"}` of the corpus and this call.
    """
    if not isinstance(num_voices, int) or num_voices < 1:
        raise ValueError(f"`num_voices` must be an integer >= 1; received {num_voices!r}.")
    espeak_path()  # named before anything is written
    words, voices = load_words(num_words), speakers(num_voices, seed)
    manifest = _manifest(words, voices, seed, sample_rate)
    _check_resumable(out, manifest)
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "manifest.json"), manifest)
    jobs = []
    for word in words:
        folder = os.path.join(out, word_split(word), word)
        os.makedirs(folder, exist_ok=True)
        jobs += [(word, voice, os.path.join(folder, f"{voice['name']}.wav")) for voice in voices]
    todo = [job for job in jobs if not os.path.exists(job[2])]
    start, done = time.time(), len(jobs) - len(todo)

    def make(job):
        word, voice, path = job
        write_wav(path, synthesize(word, voice, sample_rate), sample_rate)

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        for future in concurrent.futures.as_completed([pool.submit(make, job) for job in todo]):
            future.result()
            done += 1
            if progress is not None:
                progress(done)
    return {"files": len(jobs), "bytes": sum(os.path.getsize(p) for _, _, p in jobs),
            "seconds": round(time.time() - start, 1), "synthesized": len(todo)}


def _write_json(path, value):
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
    os.replace(partial, path)
