"""MNIST in memory: the four IDX files as uint8 tensors, split as the tutorial's loader split them.

Validation is the first 5,000 training images, training the other 55,000 (or all 60,000 with
``train_on_all``), test the 10,000. The whole set is 55 MB as uint8; it never leaves memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_mnist.data import idx
from cnn_mnist.data.download import default_data_dir, ensure_mnist
from cnn_mnist.errors import DataError

VALIDATION_SIZE = 5_000
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
class Mnist:
    train: Split
    validation: Split
    test: Split

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}; choose train, validation or test")
        return getattr(self, name)


def load_mnist(data_dir: str | os.PathLike | None = None, *, train_on_all: bool = False,
               download: bool = True, source_dir: str | os.PathLike | None = None, progress: bool = False) -> Mnist:
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
    return Mnist(train=train, validation=validation, test=test)


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
