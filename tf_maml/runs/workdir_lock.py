"""One writer per run directory: a lock held for the whole run.

Two runs writing one workdir interleave their histories and fight over the
backup file. `run_lock(workdir)` takes an exclusive `fcntl.flock` on
`workdir/.lock` for the duration of a run and writes the holder's process
id into it. The operating system releases the lock whenever the holder
exits, killed included, so a lock left by a dead process is never in the
way: the next run takes it and says whose it was.
"""

import contextlib
import fcntl
import os

from absl import logging

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
    """Another process is running in the same workdir."""


@contextlib.contextmanager
def run_lock(workdir):
    """Within: this process is the only one running in `workdir` (created if needed)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    handle = open(path, "a+")  # noqa: SIM115 (held open for the whole run)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise WorkdirLockedError(
                f"{workdir} is in use by another run (process {holder}); one workdir takes "
                "one run at a time. Wait for it to end, stop it, or use another workdir."
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:  # the lock was free: its last holder ended, perhaps killed
            logging.info("%s: the run of process %s ended without releasing its lock file; "
                         "taking it.", workdir, previous)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
