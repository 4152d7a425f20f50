"""Write a file so that readers see the old version or the new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def write_atomically(path: str | os.PathLike, write: Callable[[Path], T]) -> T:
    """``write(temp)`` to a hidden temporary file beside ``path``, then rename it over ``path``.

    A failure or interruption leaves no partial file and the previous ``path`` untouched; OSError
    propagates for the caller to word. (Checkpoints add an fsync on top: see checkpoints.py.)
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(temp_name)
    try:
        result = write(temp)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return result
