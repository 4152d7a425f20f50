"""Datasets in memory as uint8 tensors: MNIST's four IDX files, split as the tutorial's loader split
them, or a folder of the user's own pictures (``folders``), each with its class names.

MNIST's validation is the first 5,000 training images, training the other 55,000 (or all 60,000
with ``train_on_all``), test the 10,000. The whole set is 55 MB as uint8; it never leaves memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_mnist.data import folders, idx
from cnn_mnist.data.download import default_data_dir, ensure_mnist
from cnn_mnist.errors import DataError

VALIDATION_SIZE = 5_000
DIGITS = tuple(str(digit) for digit in range(10))  # MNIST's class names
DEFAULT_TEST_FRACTION = 0.1
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64, in file order."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """The splits a run reads, and the name of each class (label i is ``classes[i]``)."""

    train: Split
    validation: Split
    test: Split
    classes: tuple[str, ...] = DIGITS
    source: str = "mnist"  # mnist, or the folder's path

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}; choose train, validation or test")
        return getattr(self, name)


Mnist = Dataset  # the name it had when MNIST was the only dataset


def load_mnist(data_dir: str | os.PathLike | None = None, *, train_on_all: bool = False,
               download: bool = True, source_dir: str | os.PathLike | None = None, progress: bool = False) -> Dataset:
    """Load (downloading on first use, with a progress bar if ``progress``) and split MNIST."""
    directory = (ensure_mnist(data_dir, source_dir=source_dir, progress=progress) if download
                 else default_data_dir(data_dir))
    train_images, train_labels = read_split(directory, *FILES["train"])
    test = Split(*read_split(directory, *FILES["test"]))
    if len(train_images) <= VALIDATION_SIZE:
        raise DataError(f"{directory}: only {len(train_images)} training images; need more than {VALIDATION_SIZE}")
    validation = Split(train_images[:VALIDATION_SIZE], train_labels[:VALIDATION_SIZE])
    train = Split(train_images, train_labels) if train_on_all else Split(
        train_images[VALIDATION_SIZE:], train_labels[VALIDATION_SIZE:]
    )
    return Dataset(train=train, validation=validation, test=test)


def load_dataset(data: str = "mnist", data_dir: str | os.PathLike | None = None, *, train_on_all: bool = False,
                 prepare: str = "auto", test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
                 progress: bool = False) -> Dataset:
    """``data``: ``mnist`` (see ``load_mnist``), or a folder with one subfolder per class (see
    ``load_folder``). ``data_dir`` holds MNIST and the folders' prepared-picture caches."""
    if data == "mnist":
        return load_mnist(data_dir, train_on_all=train_on_all, progress=progress)
    return load_folder(data, data_dir, train_on_all=train_on_all, prepare=prepare, test_fraction=test_fraction,
                       seed=seed, progress=progress)


def classes_of(data: str) -> tuple[str, ...]:
    """The class names ``data`` has, from its folders' names alone (nothing is read or prepared)."""
    if data == "mnist":
        return DIGITS
    root = Path(data).expanduser()
    return folders.scan(root / "train" if folders.has_train_and_test(root) else root).classes


def load_folder(path: str | os.PathLike, data_dir: str | os.PathLike | None = None, *, train_on_all: bool = False,
                prepare: str = "auto", test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
                progress: bool = False) -> Dataset:
    """A folder of pictures, one subfolder per class, as a dataset (see ``data.folders``): its
    ``train/`` and ``test/`` folders where it has both, else a stratified ``test_fraction`` of each
    class held out (seeded by ``seed``) as the test set. As many again of the training pictures,
    stratified too, are the validation split (the same share of what is left); ``train_on_all``
    trains on them as well."""
    if prepare not in folders.PREPARE_MODES:
        raise DataError(f"prepare must be one of {', '.join(folders.PREPARE_MODES)}, got {prepare!r}")
    if not 0 < test_fraction < 1:
        raise DataError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    root = Path(path).expanduser()
    cache = default_data_dir(data_dir) / "folder-cache"
    if folders.has_train_and_test(root):
        train_folder, test_folder = (folders.scan(root / name) for name in folders.SPLIT_FOLDERS)
        if train_folder.classes != test_folder.classes:
            raise DataError(f"{root}: train/ and test/ must have the same class folders; train/ has "
                            f"{', '.join(train_folder.classes)} and test/ has {', '.join(test_folder.classes)}")
        training, test = (folders.prepare_folder(part, prepare, cache, progress)
                          for part in (train_folder, test_folder))
        classes = train_folder.classes
    else:
        folder = folders.scan(root)
        everything = folders.prepare_folder(folder, prepare, cache, progress)
        rest, held_out = folders.stratified_split(everything.labels, test_fraction, seed)
        training, test = everything.subset(rest), everything.subset(held_out)
        classes = folder.classes
    train_part, validation_part = folders.stratified_split(training.labels, test_fraction, seed + 1)
    train = training if train_on_all else training.subset(train_part)
    return Dataset(train=Split(*folders.as_tensors(train)),
                   validation=Split(*folders.as_tensors(training.subset(validation_part))),
                   test=Split(*folders.as_tensors(test)), classes=classes, source=str(root))


def read_split(directory: str | os.PathLike, images_name: str, labels_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair of IDX files as tensors, checking that they agree with each other."""
    directory = Path(directory)
    images = idx.read_images(directory / images_name)
    labels = idx.read_labels(directory / labels_name)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{directory / images_name}: images are {images.shape[1:]}, MNIST's are (28, 28)")
    if len(images) != len(labels):
        raise DataError(
            f"{directory}: {images_name} holds {len(images)} images but {labels_name} holds {len(labels)} labels"
        )
    return torch.from_numpy(images), torch.from_numpy(labels).long()
