"""One trainer per model directory: an advisory lock that dies with its process.

The lock is ``filelock``'s (flock on POSIX, msvcrt's locking on Windows): the operating system
releases it when the holding process exits, however it exits, so a lock left by a killed trainer
never blocks. Beside it, a holder file names the process that holds the lock (for the error a
second trainer gets) and is emptied on a clean release, so a name found there by the next holder
means it takes over from a process that died.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import filelock

from cnn_mnist.errors import ModelDirError, ModelDirLockedError
from cnn_mnist.files import why_not_a_folder

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"

log = logging.getLogger(__name__)


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """``model_dir`` as an absolute path, or a ModelDirError when it, or the folder it would be
    created in, is a file: cheap enough to ask before any data is loaded."""
    directory = Path(model_dir).absolute()
    reason = why_not_a_folder(directory)
    if reason is not None:
        raise ModelDirError(f"--model-dir {directory} {reason}; pass a directory for the run's checkpoints "
                            "(it is created if missing)")
    return directory


class ModelDirLock:
    """``with ModelDirLock(model_dir):`` holds the directory for one trainer."""

    def __init__(self, model_dir: str | os.PathLike):
        self.path = Path(model_dir) / LOCK_NAME
        self.holder_path = Path(model_dir) / HOLDER_NAME
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> None:
        directory = check_model_dir(self.path.parent)
        lock = filelock.FileLock(str(self.path), timeout=0)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except filelock.Timeout:
            raise ModelDirLockedError(
                f"{self.path.parent} is in use by a running train ({self._holder() or 'another process'}); "
                "wait for it to finish, stop it, or use another --model-dir"
            ) from None
        except OSError as err:  # a parent that is a file, no permission, a read-only disk
            raise ModelDirError(f"cannot use {directory} as the model directory: {err.strerror or err}; pass "
                                "another --model-dir") from None
        previous = self._holder()
        if previous:
            log.warning("taking over the lock of %s, left by a process that is gone (%s)", self.path.parent, previous)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        try:
            self.holder_path.write_text(holder, encoding="utf-8")
        except OSError as err:
            lock.release()
            raise ModelDirError(f"cannot write in {directory}: {err.strerror or err}; pass another --model-dir") \
                from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            try:
                self.holder_path.write_text("", encoding="utf-8")  # empty: a clean exit; a name: one that was not
            except OSError:  # a full disk or a removed folder: the lock is still given back
                log.warning("could not clear %s; the next trainer will say it takes over", self.holder_path)
            finally:
                self._lock.release()
                self._lock = None

    def _holder(self) -> str:
        try:
            return self.holder_path.read_text(encoding="utf-8", errors="replace").strip()[:200]
        except OSError:
            return ""

    def __enter__(self) -> ModelDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
