"""Files written safely, for every layer: atomically (readers see the old version or the new one,
never half of it), and output folders checked before the work whose result goes there."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cnn_mnist.errors import OutputError

T = TypeVar("T")


def write_atomically(path: str | os.PathLike, write: Callable[[Path], T], *, durable: bool = False,
                     temp_prefix: str | None = None, temp_suffix: str = ".tmp") -> T:
    """``write(temp)`` to a hidden temporary file beside ``path``, then rename it over ``path``.

    A failure or interruption leaves no partial file under ``path`` and the previous ``path``
    untouched; OSError propagates for the caller to word. ``durable`` (checkpoints, MNIST) also
    survives a power cut: the bytes reach the disk before the name points at them, and the rename
    itself is flushed (two fsyncs: milliseconds on an SSD). The temporary's name is
    ``<temp_prefix><random><temp_suffix>`` (default ``.<name>.``), for callers that sweep up what a
    kill left behind.
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix or f".{path.name}.", suffix=temp_suffix)
    os.close(fd)
    temp = Path(temp_name)
    try:
        result = write(temp)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the file from other users
        if durable:
            with open(temp, "rb+") as file:
                os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        _fsync_directory(path.parent)
    return result


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:  # nor fsync them everywhere
        pass
    finally:
        os.close(fd)


def file_in_the_way(directory: str | os.PathLike) -> Path | None:
    """The file that stands where ``directory``, or the nearest of its parents that exists,
    should be a folder; None when it can be created (or already is one)."""
    for parent in (Path(directory), *Path(directory).parents):
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def why_not_a_folder(directory: Path) -> str | None:
    """"is a file" or "is inside X, which is a file" when ``directory`` cannot be a folder, else None."""
    blocker = file_in_the_way(directory)
    if blocker is None:
        return None
    return "is a file" if blocker == directory else f"is inside {blocker}, which is a file"


def prepare_output_dir(directory: str | os.PathLike, flag: str = "--output") -> Path:
    """Create ``directory`` (and its parents) and check that a file can be written in it, before
    any expensive work whose result would go there. Returns it as an absolute path.

    Raises OutputError naming the path and the reason: it or a parent is a file, no permission,
    a read-only disk.
    """
    directory = Path(directory).expanduser().absolute()
    reason = why_not_a_folder(directory)
    if reason is not None:
        raise OutputError(f"{flag} {directory} {reason}; give a folder that can be created")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):  # permissions, a read-only disk, quotas
            pass
    except OSError as err:
        raise OutputError(f"cannot write in {flag} {directory}: {err.strerror or err}; give another {flag}") from None
    return directory


def prepare_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Like ``prepare_output_dir`` for the folder of a file about to be written; the file itself
    must not be a directory. Returns the file's absolute path."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; give a file name, such as {path / 'model.onnx'}")
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise OutputError(f"{flag} {path} cannot be written: {blocker} is a file, not a folder")
    prepare_output_dir(path.parent, flag)
    return path
