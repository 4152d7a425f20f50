"""The IDX file format of LeCun's MNIST distribution: read with every check, and write.

Layout: a big-endian uint32 magic (0x00000803 = 2051 for 3-d uint8 images, 0x00000801 =
2049 for 1-d uint8 labels), one big-endian uint32 per dimension, then the raw bytes.
Files ending in ``.gz`` are read and written gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np

from cnn_mnist.errors import IdxFormatError

IMAGES_MAGIC = 2051  # 0x0803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x0801: unsigned byte, 1 dimension
MAX_BYTES = 256 << 20  # MNIST's largest file is 47 MB; a .gz is never expanded past this
_NDIM = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}


def read_images(path: str | os.PathLike) -> np.ndarray:
    """Images as a (N, rows, cols) uint8 array."""
    return _read(path, IMAGES_MAGIC)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Labels as a (N,) uint8 array; every label must be a digit 0-9."""
    labels = _read(path, LABELS_MAGIC)
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{path}: label value {int(labels.max())} is not a digit 0-9")
    return labels


def write_images(path: str | os.PathLike, images: np.ndarray) -> None:
    """Write (N, rows, cols) uint8 images."""
    _write(path, IMAGES_MAGIC, images)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write (N,) uint8 labels."""
    _write(path, LABELS_MAGIC, labels)


def encode(magic: int, array: np.ndarray) -> bytes:
    """The exact bytes of an IDX file holding ``array``."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise IdxFormatError(f"IDX arrays must be uint8, got {array.dtype}")
    if array.ndim != _NDIM[magic]:
        raise IdxFormatError(f"magic {magic} needs {_NDIM[magic]} dimensions, got shape {array.shape}")
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def decode(data: bytes, expected_magic: int, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes, checking magic, dimensions and byte length in that order."""
    if len(data) < 4:
        raise IdxFormatError(f"{name}: {len(data)} bytes is too short to be an IDX file")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise IdxFormatError(
            f"{name}: wrong magic number {magic} (expected {expected_magic} for IDX {kind}); "
            "is this the right file, and is it uncompressed or named .gz?"
        )
    ndim = _NDIM[magic]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{name}: header truncated ({len(data)} of {header_len} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    if ndim == 3 and (shape[1] == 0 or shape[2] == 0):
        raise IdxFormatError(f"{name}: bad dimensions {shape}: images must have rows and columns")
    expected_len = header_len + math.prod(shape)  # exact: a hostile header cannot overflow it
    if len(data) != expected_len:
        raise IdxFormatError(
            f"{name}: byte length {len(data)} does not match dimensions {shape} "
            f"(expected {expected_len}); the file is truncated or corrupt, delete it and download again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def _read(path: str | os.PathLike, magic: int) -> np.ndarray:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as file:  # bounded: a small .gz can expand without limit
                raw = file.read(MAX_BYTES + 1)
            if len(raw) > MAX_BYTES:
                raise IdxFormatError(f"{path}: expands to over {MAX_BYTES >> 20} MiB, far more than any MNIST "
                                     "file; is it the right file?")
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxFormatError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise IdxFormatError(f"{path}: cannot read ({err})") from None
    return decode(raw, magic, str(path))


def _write(path: str | os.PathLike, magic: int, array: np.ndarray) -> None:
    path = Path(path)
    data = encode(magic, array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
