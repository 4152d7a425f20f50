"""A folder of pictures as a dataset: one subfolder per class, as torchvision's ``ImageFolder`` lays
it out (``PATH/<class>/<picture>``). The class names are the subfolders' names, sorted.

If ``PATH`` holds ``train/`` and ``test/`` folders of that layout, they are the two splits as given;
otherwise a seeded, stratified share of each class (``test_fraction``) is held out as the test set.
The same share of the training pictures is the validation split (trained on only with
``train_on_all``), as MNIST's first 5,000 training images are.

Each picture is prepared once (``PREPARE_MODES``) and the result cached as one uint8 array under
the data directory (``folder-cache/``), keyed by the folder, the preparation and every file's name,
size and modification time: a changed, added or removed picture rebuilds it, and a second run
reads it in well under a second. The cache is plain ``.npy`` arrays and JSON, read without
unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnn_mnist.data.images import FORMATS, MAX_IMAGE_PIXELS, prepare_image
from cnn_mnist.data.preparation import IMAGE_SIZE
from cnn_mnist.errors import DataError, ImageError
from cnn_mnist.files import write_atomically
from cnn_mnist.progress import Progress

log = logging.getLogger(__name__)

PREPARE_MODES = ("auto", "mnist", "as-is")
"""auto: a 28x28 greyscale picture as it is (white on black, as MNIST's files hold them), any
other MNIST-style (ink found, cropped, scaled to 20 px, centred by mass); mnist: every picture
MNIST-style; as-is: every picture must be 28x28, only made greyscale."""
CACHE_VERSION = 1  # part of the key: a change to how pictures are prepared or stored rebuilds every cache
SPLIT_FOLDERS = ("train", "test")


@dataclass(frozen=True)
class Picture:
    path: Path
    label: int


@dataclass(frozen=True)
class Folder:
    """A class-per-subfolder folder, scanned: its classes (sorted) and every file under them."""

    root: Path
    classes: tuple[str, ...]
    pictures: tuple[Picture, ...]


def has_train_and_test(root: Path) -> bool:
    return all((root / name).is_dir() for name in SPLIT_FOLDERS)


def scan(root: str | os.PathLike) -> Folder:
    """The classes and files of ``root``; a one-line DataError when it is not such a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --data takes mnist or a folder with one subfolder per class")
    classes = tuple(sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{root}: a dataset folder needs a subfolder per class, at least two; found {found}")
    pictures = []
    for label, name in enumerate(classes):
        files = sorted(path for path in (root / name).rglob("*") if path.is_file()
                       and not any(part.startswith(".") for part in path.relative_to(root).parts))
        if not files:
            raise DataError(f"{root / name}: the class {name!r} has no pictures; add some or remove the folder")
        pictures += [Picture(path, label) for path in files]
    return Folder(root, classes, tuple(pictures))


def read_picture(path: Path, prepare: str) -> np.ndarray:
    """One picture as (28, 28) uint8, white on black, as ``prepare`` says (see PREPARE_MODES).
    Raises ImageError (not a picture, too large, no mark on it) naming the file."""
    if prepare != "mnist":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path, formats=FORMATS) as image:
                    if image.width * image.height > MAX_IMAGE_PIXELS:
                        raise ImageError(f"{path}: {image.width}x{image.height} is more than the "
                                         f"{MAX_IMAGE_PIXELS:,} pixels a picture may have")
                    as_is = image.size == (IMAGE_SIZE, IMAGE_SIZE) and (prepare == "as-is" or image.mode == "L")
                    if as_is:
                        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
                    if prepare == "as-is":
                        raise ImageError(f"{path}: {image.width}x{image.height}; --prepare as-is takes 28x28 "
                                         "pictures only (--prepare auto or mnist prepares any size)")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"{path}: not a picture Pillow reads ({err})") from err
    return prepare_image(path)


@dataclass(frozen=True)
class Prepared:
    """Every readable picture of a folder: (N, 28, 28) uint8 images, (N,) int64 labels, and the
    files that were skipped, with the reason."""

    images: np.ndarray
    labels: np.ndarray
    skipped: tuple[tuple[str, str], ...] = ()

    def subset(self, indices: np.ndarray) -> Prepared:
        return Prepared(self.images[indices], self.labels[indices], self.skipped)


def prepare_folder(folder: Folder, prepare: str, cache_dir: Path | None, progress: bool = False) -> Prepared:
    """The folder's pictures prepared, from the cache where it matches every file, else prepared
    now (with a progress bar) and cached. A file that is not a usable picture is skipped with a
    warning naming it; a class left with no picture stops the run."""
    key = _cache_key(folder, prepare)
    cached = _read_cache(cache_dir, key) if cache_dir is not None else None
    if cached is None:
        cached = _prepare_all(folder, prepare, progress)
        if cache_dir is not None:
            _write_cache(cache_dir, key, cached)
    for name, reason in cached.skipped:
        log.warning("skipped %s: %s", name, reason)
    counts = np.bincount(cached.labels, minlength=len(folder.classes))
    empty = [folder.classes[label] for label in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{folder.root}: no usable picture in class {', '.join(map(repr, empty))} "
                        f"({len(cached.skipped)} file(s) skipped, each named above)")
    return cached


def _prepare_all(folder: Folder, prepare: str, progress: bool) -> Prepared:
    images = np.empty((len(folder.pictures), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    keep, skipped = np.zeros(len(folder.pictures), dtype=bool), []
    with Progress(f"preparing {folder.root.name}", len(folder.pictures), unit="image",
                  bar=None if progress else False) as bar:
        for i, picture in enumerate(folder.pictures):
            try:
                images[i] = read_picture(picture.path, prepare)
                keep[i] = True
            except ImageError as err:
                skipped.append((str(picture.path.relative_to(folder.root)), str(err).removeprefix(f"{picture.path}: ")))
            bar.update(i + 1)
    labels = np.array([picture.label for picture in folder.pictures], dtype=np.int64)
    return Prepared(images[keep], labels[keep], tuple(skipped))


def _cache_key(folder: Folder, prepare: str) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, str(folder.root.resolve()), prepare, folder.classes]).encode())
    for picture in folder.pictures:
        stat = picture.path.stat()
        digest.update(f"{picture.path.relative_to(folder.root)}\0{picture.label}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _read_cache(cache_dir: Path, key: str) -> Prepared | None:
    try:
        about = json.loads((cache_dir / f"{key}.json").read_text(encoding="utf-8"))
        images = np.load(cache_dir / f"{key}.images.npy", allow_pickle=False)
        labels = np.load(cache_dir / f"{key}.labels.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        return None  # absent or damaged: prepared again
    if images.shape != (about["count"], IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (about["count"],):
        return None
    return Prepared(images, labels, tuple(tuple(pair) for pair in about["skipped"]))


def _write_cache(cache_dir: Path, key: str, prepared: Prepared) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for suffix, array in (("images", prepared.images), ("labels", prepared.labels)):
            write_atomically(cache_dir / f"{key}.{suffix}.npy", lambda temp, a=array: _save_array(temp, a))
        # the description last: a cache is read only once all three are there
        about = {"count": len(prepared.labels), "skipped": prepared.skipped}
        write_atomically(cache_dir / f"{key}.json", lambda temp: temp.write_text(json.dumps(about), encoding="utf-8"))
    except OSError as err:
        log.warning("could not cache the prepared pictures in %s (%s); they will be prepared again next time",
                    cache_dir, err)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file object: given a name, np.save would add ".npy" to it
        np.save(file, array, allow_pickle=False)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): of each class, a seeded random ``test_fraction`` (at least one picture
    where the class has two or more, never all of them) held out; each part in file order."""
    generator = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, max(1, round(test_fraction * len(members)))) if len(members) > 1 else 0
        test += generator.permutation(members)[:count].tolist()
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def as_tensors(prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 28, 28) uint8 images and (N,) int64 labels, as every loader returns them."""
    return (torch.from_numpy(np.ascontiguousarray(prepared.images)),
            torch.from_numpy(np.ascontiguousarray(prepared.labels)).long())
