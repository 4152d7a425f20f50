"""predict's and explain's INPUTs (test-set indices, .npy files, image files) read into pixels,
each with the row it is answered in; and the files named after them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_mnist.errors import CnnMnistError, DataError


@dataclass
class PredictInput:
    row: dict  # what is printed: input, classes, probabilities, no_digit, and label, detail or error
    pixels: np.ndarray | None = None  # (28, 28) float32 in [0, 1], the network's input; None if unreadable
    prepared: np.ndarray | None = None  # (28, 28) uint8: an image file after prepare_image


def save_prepared(directory: str, inputs: list[PredictInput]) -> None:
    """Each image file's prepared pixels as DIR/<its name>.png (-2, -3, ... where names repeat)."""
    from PIL import Image

    out, taken = Path(directory), set()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item in inputs:
            if item.prepared is None:
                continue
            name = unique_name(Path(item.row["input"]).stem or "image", taken)
            Image.fromarray(item.prepared, "L").save(out / name)
            item.row["prepared_file"] = str(out / name)
    except OSError as err:
        raise CnnMnistError(f"cannot write the prepared images to {directory}: {err.strerror or err}") from None


def read_inputs(inputs: list[str], data_dir: str | None) -> list[PredictInput]:
    """INPUTs are test-set indices, .npy files or image files; one PredictInput per image (a .npy
    may hold many). One that cannot be read carries its one-line error, a blank image no_digit."""
    from cnn_mnist.data.images import prepare_image
    from cnn_mnist.errors import NoDigitError

    test = None
    if any(item.lstrip("-").isdigit() for item in inputs):
        from cnn_mnist.data.datasets import load_mnist

        test = load_mnist(data_dir).test  # no MNIST is an error for the whole command
    read = []

    def add(name: str, pixels=None, prepared=None, **fields):
        row = {"input": name, "class": None, "probabilities": None, "no_digit": False, **fields}
        read.append(PredictInput(row, pixels, prepared))

    for item in inputs:
        try:
            if item.lstrip("-").isdigit():
                index = int(item)
                if not 0 <= index < len(test):
                    raise DataError(f"test-set index {index} is out of range 0..{len(test) - 1}")
                add(f"test[{index}]", test.images[index].numpy().astype(np.float32) / 255.0,
                    label=int(test.labels[index]))
            elif item.lower().endswith(".npy"):
                batch = load_npy_images(item)
                for i, pixels in enumerate(batch):
                    add(item if len(batch) == 1 else f"{item}[{i}]", pixels)
            else:  # anything else is read as an image file: PNG, JPEG, BMP, GIF, WebP, TIFF, PPM
                prepared = prepare_image(item)
                add(item, prepared.astype(np.float32) / 255.0, prepared)
        except NoDigitError as err:
            add(item, no_digit=True, detail=str(err))
        except DataError as err:
            add(item, error=str(err))
    return read


def load_npy_images(path: str) -> np.ndarray:
    """A .npy file of one or many 28x28 images -> (N, 28, 28) float32 in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0]})") from None
    if array.dtype.kind not in "uif" or array.size == 0:
        raise DataError(f"{path}: expected numeric pixels, got dtype {array.dtype} with {array.size} values")
    if array.shape in ((784,), (28, 28), (1, 28, 28)):
        array = array.reshape(1, 28, 28)
    elif array.ndim == 2 and array.shape[1] == 784 or array.ndim == 4 and array.shape[1:] == (1, 28, 28):
        array = array.reshape(-1, 28, 28)
    elif not (array.ndim == 3 and array.shape[1:] == (28, 28)):
        raise DataError(f"{path}: shape {array.shape} is not 784 pixels or 28x28 images "
                        "(accepted: (784,), (28, 28), (N, 784), (N, 28, 28), (N, 1, 28, 28))")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: pixels contain NaN or infinity")
    if array.min() < 0 or array.max() > 1:
        raise DataError(f"{path}: float pixels must lie in [0, 1] (got {array.min():g}..{array.max():g}); "
                        "scale them, or save uint8 0-255")
    return array


def figure_name(input_name: str, taken: set[str]) -> str:
    """The figure of seven.png is seven.png, of test[3] test-3.png, of digits.npy[2] digits-2.png;
    -2, -3, ... where names repeat (``taken`` collects them)."""
    name_part = re.sub(r"\.(png|jpe?g|bmp|gif|webp|tiff?|ppm|npy)(?=\[|$)", "", Path(input_name).name, flags=re.I)
    return unique_name(re.sub(r"[^A-Za-z0-9._-]+", "-", name_part).strip("-") or "image", taken)


def unique_name(stem: str, taken: set[str]) -> str:
    """``stem.png``, or ``stem-2.png``, ``stem-3.png``, ... when taken; the name joins ``taken``."""
    n = 1
    while (name := f"{stem}.png" if n == 1 else f"{stem}-{n}.png") in taken:
        n += 1
    taken.add(name)
    return name
