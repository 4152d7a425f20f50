"""Inputs to answers, one path for the command line and the HTTP service alike.

An input (a test-set index, a ``.npy`` file, a picture, JSON pixels) becomes a ``DigitInput``:
its name and the 28x28 pixels the network sees, or why there is no digit, or its one-line error.
``predict`` answers a list of them as rows of one shape, batched by the device's rule;
``explain`` explains each digit; ``file_name`` names a file written for an input. The CLI reads
its INPUT arguments with ``read_arguments``; the service builds inputs from a request's parts
with ``from_picture`` and ``from_mnist_pixels``. Both print or send the same rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_mnist.data.images import IMAGE_SIZE, MIN_INK_CONTRAST, as_mnist_pixels, prepare_image, unit_pixels
from cnn_mnist.errors import DataError, NoDigitError
from cnn_mnist.kernels.devices import inference_batch_size

NPY_SHAPES = "(784,), (28, 28), (N, 784), (N, 28, 28), (N, 1, 28, 28)"


@dataclass
class DigitInput:
    """One image to answer. ``pixels`` is None when there is nothing to give the network: then
    ``no_digit`` (a blank image) or ``error`` (an unreadable one) says why."""

    name: str
    pixels: np.ndarray | None = None  # (28, 28) float32 in [0, 1]: the network's input
    prepared: np.ndarray | None = None  # (28, 28) uint8 of a picture or of JSON pixels: what the network saw
    label: int | None = None  # a test-set image's true class
    no_digit: str | None = None  # why no digit was found
    error: str | None = None  # why the input could not be read

    def row(self) -> dict:
        """The answer's shape, before the network fills ``class``, ``name`` and ``probabilities``."""
        row = {"input": self.name, "class": None, "name": None, "probabilities": None,
               "no_digit": self.no_digit is not None}
        if self.label is not None:
            row["label"] = self.label
        if self.no_digit is not None:
            row["detail"] = self.no_digit
        if self.error is not None:
            row["error"] = self.error
        return row


# -- inputs ----------------------------------------------------------------------------------------


def from_picture(source: bytes | str | os.PathLike, name: str) -> DigitInput:
    """A picture file or its bytes, prepared as MNIST was made (``images.prepare_image``). A blank
    one is a no-digit input; an unreadable one raises ImageError (ImageTooLargeError for a bomb)."""
    try:
        prepared = prepare_image(source)
    except NoDigitError as err:
        return DigitInput(name, no_digit=str(err))
    return DigitInput(name, prepared.astype(np.float32) / 255.0, prepared)


def from_mnist_pixels(values: np.ndarray, name: str) -> DigitInput:
    """Pixels that are MNIST already (28x28, white on black, 0-1 floats), as the service's JSON
    sends them: not prepared, but a blank one has no digit, by the same threshold as pictures."""
    if values.max() < MIN_INK_CONTRAST:
        return DigitInput(name, no_digit=f"{name}: no digit found (every pixel is under {MIN_INK_CONTRAST:.0%} "
                                         "of full scale)")
    prepared = as_mnist_pixels(values, name)
    return DigitInput(name, prepared.astype(np.float32) / 255.0, prepared)


def read_arguments(arguments: list[str], data_dir: str | os.PathLike | None) -> list[DigitInput]:
    """The CLI's INPUTs: test-set indices, .npy files or picture files; one DigitInput per image
    (a .npy may hold many). One that cannot be read carries its one-line error."""
    test = None
    if any(item.lstrip("-").isdigit() for item in arguments):
        from cnn_mnist.data.datasets import load_mnist

        test = load_mnist(data_dir).test  # no MNIST is an error for the whole command
    read = []
    for item in arguments:
        try:
            if item.lstrip("-").isdigit():
                index = int(item)
                if not 0 <= index < len(test):
                    raise DataError(f"test-set index {index} is out of range 0..{len(test) - 1}")
                read.append(DigitInput(f"test[{index}]", test.images[index].numpy().astype(np.float32) / 255.0,
                                       label=int(test.labels[index])))
            elif item.lower().endswith(".npy"):
                batch = load_npy_images(item)
                read += [DigitInput(item if len(batch) == 1 else f"{item}[{i}]", pixels)
                         for i, pixels in enumerate(batch)]
            else:  # anything else is read as a picture: PNG, JPEG, BMP, GIF, WebP, TIFF, PPM
                read.append(from_picture(item, item))
        except DataError as err:
            read.append(DigitInput(item, error=str(err)))
    return read


def load_npy_images(path: str | os.PathLike) -> np.ndarray:
    """A .npy file of one or many 28x28 images -> (N, 28, 28) float32 in [0, 1], its values
    checked as every pixel array is (``images.unit_pixels``)."""
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0]})") from None
    if array.size == 0:
        raise DataError(f"{path}: holds no pixels (shape {array.shape})")
    if array.shape in ((IMAGE_SIZE * IMAGE_SIZE,), (IMAGE_SIZE, IMAGE_SIZE), (1, IMAGE_SIZE, IMAGE_SIZE)):
        array = array.reshape(1, IMAGE_SIZE, IMAGE_SIZE)
    elif (array.ndim == 2 and array.shape[1] == IMAGE_SIZE * IMAGE_SIZE
          or array.ndim == 4 and array.shape[1:] == (1, IMAGE_SIZE, IMAGE_SIZE)):
        array = array.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    elif not (array.ndim == 3 and array.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)):
        raise DataError(f"{path}: shape {array.shape} is not 784 pixels or 28x28 images (accepted: {NPY_SHAPES})")
    return unit_pixels(array, os.fspath(path))


# -- answers ---------------------------------------------------------------------------------------


def predict(model, inputs: list[DigitInput], include_prepared: bool = False) -> list[dict]:
    """One row per input, in order: ``input``, ``class`` (an index), ``name`` (that class's name:
    "7" for MNIST), ``probabilities`` (rounded to 6 places, in class order), ``no_digit``, and
    ``label``, ``detail`` or ``error`` where the input has one. ``model`` is a Predictor or an
    Ensemble; the digits go through it in batches of its device's inference size."""
    rows = [item.row() for item in inputs]
    readable = [(row, item) for row, item in zip(rows, inputs, strict=True) if item.pixels is not None]
    size = inference_batch_size(model.device)
    for start in range(0, len(readable), size):
        batch = readable[start:start + size]
        prediction = model.predict(np.stack([item.pixels for _, item in batch]))
        for (row, _), digit, probabilities in zip(batch, prediction.classes.tolist(),
                                                  prediction.probabilities.tolist(), strict=True):
            row.update({"class": digit, "name": model.classes[digit],
                        "probabilities": [round(p, 6) for p in probabilities]})
    if include_prepared:
        for row, item in zip(rows, inputs, strict=True):
            row["prepared"] = None if item.prepared is None else item.prepared.tolist()
    return rows


def explain(predictor, inputs: list[DigitInput]) -> Iterator[tuple[DigitInput, object]]:
    """(input, its ``explain.Explanation``) for each input, the Explanation None where the input
    holds no digit or could not be read."""
    from cnn_mnist.use.explain import explain as explain_digit

    for item in inputs:
        yield item, None if item.pixels is None else explain_digit(predictor, item.pixels)


def file_name(input_name: str, taken: set[str]) -> str:
    """The PNG written for an input: for seven.png seven.png, for test[3] test-3.png, for
    digits.npy[2] digits-2.png; -2, -3, ... where names repeat (``taken`` collects them)."""
    stem = re.sub(r"\.(png|jpe?g|bmp|gif|webp|tiff?|ppm|npy)(?=\[|$)", "", Path(input_name).name, flags=re.I)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "image"
    n = 1
    while (name := f"{stem}.png" if n == 1 else f"{stem}-{n}.png") in taken:
        n += 1
    taken.add(name)
    return name
