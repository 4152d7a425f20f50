"""One trainer per model directory: an advisory lock that dies with its process.

``fcntl.flock`` is released by the kernel when the holding process exits, however it exits,
so a lock left by a killed trainer never blocks; the PID written into the file lets us say
who holds a live lock, and notice when we take over from a dead one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from cnn_mnist.errors import ModelDirError, ModelDirLockedError
from cnn_mnist.training.atomic import why_not_a_folder

LOCK_NAME = ".lock"

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
        self._fd: int | None = None

    def acquire(self) -> None:
        directory = check_model_dir(self.path.parent)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a parent that is a file, no permission, a read-only disk
            raise ModelDirError(f"cannot use {directory} as the model directory: {err.strerror or err}; pass "
                                "another --model-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ModelDirLockedError(
                f"{self.path.parent} is in use by a running train ({holder}); wait for it to finish, "
                "stop it, or use another --model-dir"
            ) from None
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if previous:
            log.warning("taking over the lock of %s, left by a process that is gone (%s)", self.path.parent, previous)
        os.ftruncate(fd, 0)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty file means a clean exit; a PID means one that was not
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ModelDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
