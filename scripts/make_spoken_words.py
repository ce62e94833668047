"""Synthesizes the spoken-words corpus with espeak-ng (Debian package espeak-ng).

Every word of tf_maml/data/spoken_words.txt (or the first --words) spoken by
--voices speakers (accent, voice variant, pitch, speed), as 16-bit WAV files
in one folder per word under background/, validation/ and evaluation/, with
a manifest.json. Rerun with the same --out to resume: files already there are
kept. Then meta-train on it:

  python scripts/make_spoken_words.py --out=DIR
  python scripts/train.py --config=configs/spoken_words.py:5w1s --config.data_dir=DIR \\
      --workdir=runs/spoken_words_5w1s
"""

import json
import sys

import keras
from absl import app, flags

from tf_maml.data import spoken_words

_OUT = flags.DEFINE_string("out", None, "The corpus folder (created; resumed if there).")
_WORDS = flags.DEFINE_integer("words", None, "The first N words of the list (default: all).")
_VOICES = flags.DEFINE_integer("voices", 20, "Speakers, each speaking every word.")
_SEED = flags.DEFINE_integer("seed", 0, "Draws the speakers.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000, "Samples per second of the files.")
flags.mark_flags_as_required(["out"])


def main(argv):
    del argv
    num_words = len(spoken_words.load_words(_WORDS.value))
    progress = keras.utils.Progbar(num_words * _VOICES.value, unit_name="file")
    try:
        summary = spoken_words.make_corpus(
            _OUT.value, num_words=_WORDS.value, num_voices=_VOICES.value, seed=_SEED.value,
            sample_rate=_SAMPLE_RATE.value, progress=progress.update)
    except (spoken_words.MissingSystemPackageError, ValueError) as error:
        sys.exit(f"make_spoken_words.py: {error}")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
