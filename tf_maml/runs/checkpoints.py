"""Files a run keeps for later, written so that a kill never loses or half-writes one.

Every file is written under a temporary name in its own directory and then
`os.replace`d onto its name, which is atomic on POSIX file systems: a reader
sees the old file or the new one, never a part. A file that is damaged all
the same (a disk fault, a copy cut short) is named as damaged, with what to
do, instead of surfacing as a parser's error.
"""

import contextlib
import json
import math
import os
import zipfile

import h5py
import keras
from absl import logging

from tf_maml.keras_patches import set_initial_epoch


class DamagedFileError(OSError):
    """A file a run wrote for later cannot be read: truncated or corrupt."""


class SaveError(OSError):
    """A file could not be written (a full disk, no permission); the previous one is kept."""


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; on success it replaces `path`.

    The temporary name keeps `path`'s file extension (Keras checks
    extensions), and is removed if writing fails. A write that fails with an
    `OSError` (a full disk, no permission; h5py and zipfile raise them) raises
    `SaveError` naming `path` in one line: `path` itself is untouched.
    """
    directory, name = os.path.split(os.path.abspath(path))
    stem, dot, extension = name.partition(".")
    partial = os.path.join(directory, f".{stem}.partial{dot}{extension}")
    try:
        os.makedirs(directory, exist_ok=True)
        yield partial
        _fsync(partial)
        os.replace(partial, path)
    except OSError as error:
        if isinstance(error, (SaveError, DamagedFileError)):
            raise
        reason = error.strerror or str(error).splitlines()[0]
        kept = "the previous file is kept unchanged" if os.path.exists(path) else "none existed"
        raise SaveError(
            f"Could not write {path}: {reason} ({type(error).__name__}); {kept}. Free disk "
            "space or fix the directory's permissions, and rerun: an interrupted run resumes "
            "from its last backup.") from error
    finally:
        with contextlib.suppress(OSError):
            if os.path.exists(partial):
                os.remove(partial)


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def finite_or_none(value):
    """`value` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path, value):
    """Writes `value` as strict JSON (NaN and infinities as null), atomically."""
    with atomic_path(path) as partial, open(partial, "w") as f:
        json.dump(finite_or_none(value), f, indent=2, allow_nan=False)


def read_json(path):
    """The JSON value in `path`; a damaged file raises `DamagedFileError` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(
            f"{path} is damaged (not valid JSON: {error}). It was probably cut short by a "
            "killed process or a full disk; delete it (or restore it) and rerun."
        ) from error


def save_model(model, path):
    """`model.save(path)` through a temporary file: `path` is never half-written."""
    with atomic_path(path) as partial:
        model.save(partial)


def load_model(path):
    """`keras.models.load_model(path)`, with a missing or damaged file named as such."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        raise DamagedFileError(
            f"{path} is damaged: a .keras file is a zip archive, and this one ({size} bytes) "
            "is not. It was probably cut short while being written (a killed process or a "
            "full disk). Restore it from a copy, or retrain: scripts/train.py keeps the "
            "run's backup until meta.keras is safely written, and resumes from it."
        )
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DamagedFileError(f"{path} is damaged and cannot be loaded: {error}") from error


_METADATA = "tf_maml_training_metadata"
# The newest backup, then the one before it (Keras loads weights only from
# names ending in .weights.h5).
BACKUP_FILES = ("latest.weights.h5", "previous.weights.h5")


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backups survive a kill at any moment.

    Each backup is one file, `backup_dir/latest.weights.h5`, with the training
    metadata (epoch, batch) inside it, written under a temporary name and
    then renamed into place; the previous backup is kept as
    `previous.weights.h5` until then. Restoring takes the newest backup
    that reads back whole, and names any damaged one it skips. Keras' own
    callback writes the weights and a separate JSON file in place, so a kill
    during a write leaves a workdir that cannot resume.

    Args: as `keras.callbacks.BackupAndRestore` (`double_checkpoint` is
    always on).
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                         delete_checkpoint=delete_checkpoint)
        self._weights_path, self._prev_weights_path = (
            os.path.join(backup_dir, name) for name in BACKUP_FILES
        )

    def on_train_begin(self, logs=None):
        candidates = [self._weights_path, self._prev_weights_path]
        for path in candidates:
            if not os.path.exists(path):
                continue
            try:
                metadata = read_backup_metadata(path)
                if not self.model.optimizer.built:
                    self.model.optimizer.build(self.model.trainable_variables)
                self.model.load_weights(path)
            except (DamagedFileError, OSError, ValueError) as error:
                logging.warning("Skipping damaged backup %s: %s", path, error)
                continue
            set_initial_epoch(self.model, metadata["epoch"])
            return
        if any(os.path.exists(p) for p in candidates):
            raise every_backup_damaged(self.backup_dir)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_path(self._weights_path) as partial:
            self.model.save_weights(partial, overwrite=True)
            with h5py.File(partial, "a") as f:  # the metadata last: its presence marks a whole file
                f.attrs[_METADATA] = json.dumps(
                    {"epoch": self._current_epoch, "batch": self._last_batch_seen}
                )
            if os.path.exists(self._weights_path):
                os.replace(self._weights_path, self._prev_weights_path)


def read_backup_metadata(path):
    """`{"epoch", "batch"}` of a backup `AtomicBackupAndRestore` wrote."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[_METADATA])
    except (OSError, KeyError, ValueError) as error:
        raise DamagedFileError(
            f"{path} is damaged or not a tf_maml backup ({error})."
        ) from error


def every_backup_damaged(backup_dir):
    return DamagedFileError(f"Every backup in {backup_dir} is damaged; delete {backup_dir} "
                            "to start training afresh.")


def latest_backup_epoch(backup_dir):
    """The epoch the newest readable backup in `backup_dir` ends (0 if there is none);
    raises `DamagedFileError` if every backup there is damaged."""
    damage = None
    for name in BACKUP_FILES:
        path = os.path.join(backup_dir, name)
        if os.path.exists(path):
            try:
                return int(read_backup_metadata(path)["epoch"])
            except DamagedFileError as error:
                damage = error
    if damage is not None:
        raise every_backup_damaged(backup_dir) from damage
    return 0
