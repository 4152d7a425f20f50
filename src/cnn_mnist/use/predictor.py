"""A trained model loaded once for answering many prediction calls: the CLI's image path, the
HTTP service and export all use it, so they restore the same weights the same way.

It restores the newest checkpoint in a model directory (or a given one) the way ``evaluate``
and ``predict`` do: the weight average where the checkpoint carries one. The network is put in
eval mode once and never changed after, so concurrent ``predict`` calls from several threads
are safe (each runs under ``torch.inference_mode`` and writes nothing shared). It runs on the
device ``device`` names (a GPU where there is one, by default); answers come back as numpy arrays.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnn_mnist.kernels import devices
from cnn_mnist.kernels.precision import autocast, resolve_precision
from cnn_mnist.model.network import IMAGE_SIZE
from cnn_mnist.training import checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """A batch's answers. In a notebook it shows as the digits themselves, each with its class
    and probability (and its label, where ``with_labels`` gave them; wrong answers in red)."""

    classes: np.ndarray  # (N,) int64
    probabilities: np.ndarray  # (N, 10) float32
    images: np.ndarray | None = field(default=None, repr=False, compare=False)  # the pixels answered
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)  # the true classes, if known

    SHOWN = 60  # digits drawn in a notebook; the rest are counted

    def with_labels(self, labels) -> Prediction:
        """The same answers with the true classes beside them (shown, and wrong ones marked)."""
        return replace(self, labels=np.asarray(labels).reshape(-1))

    def __repr__(self) -> str:
        shown = " ".join(str(c) for c in self.classes[:20].tolist()) + (" ..." if len(self.classes) > 20 else "")
        right = "" if self.labels is None else f", {int((self.classes == self.labels).sum())} right"
        count = f"{len(self.classes)} image{'' if len(self.classes) == 1 else 's'}"
        return f"Prediction({count}{right}: classes [{shown}])"

    def _repr_html_(self) -> str:
        from cnn_mnist.use import display

        count = min(len(self.classes), self.SHOWN)
        images = None if self.images is None else np.asarray(self.images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        items = [{"index": i, "digit": int(self.classes[i]), "confidence": float(self.probabilities[i].max()),
                  "label": None if self.labels is None else int(self.labels[i]),
                  "png": None if images is None else display.png_base64(images[i])} for i in range(count)]
        return display.render("prediction.html.j2", {"items": items, "more": len(self.classes) - count,
                                                     "summary": repr(self)})


class Predictor:
    """``Predictor(model_dir).predict(pixels)`` -> classes and probabilities."""

    def __init__(self, model_dir: str | os.PathLike, checkpoint_path: str | os.PathLike | None = None,
                 precision: str = "fp32", device: str = "auto"):
        self.model_dir = Path(model_dir)
        self.device = devices.resolve_device(device)  # before the file is read: a bad device is the first error
        # The newest good checkpoint (warning about damaged newer ones), or the one given.
        self.network, state = checkpoints.restore_for_inference(self.model_dir, checkpoint_path, self.device)
        self.checkpoint_path = path = state.path
        self.global_step = state.global_step
        self.uses_weight_average = state.uses_weight_average
        self.weights = state.weights  # "weight average" or "trained weights", as every command says it
        self.classes = state.classes  # the name of each class: label i is classes[i]
        self.precision = resolve_precision(precision, self.device)
        log.info("Loaded %s (global step %d, %s) on %s", path.absolute(), self.global_step, self.weights,
                 devices.describe(self.device))

    def predict(self, pixels: np.ndarray | torch.Tensor) -> Prediction:
        """``pixels``: (28, 28), (N, 28, 28), (N, 784) or (N, 1, 28, 28); uint8 0-255 or float 0-1."""
        images = torch.as_tensor(np.ascontiguousarray(pixels) if isinstance(pixels, np.ndarray) else pixels)
        if tuple(images.shape) == (IMAGE_SIZE, IMAGE_SIZE):  # one image
            images = images.unsqueeze(0)
        with torch.inference_mode(), devices.precision_settings(self.precision):
            with autocast(self.precision, self.device.type):
                logits = self.network(images.to(self.device)).float()
            probabilities = torch.softmax(logits, dim=1)
            classes = probabilities.argmax(dim=1)
        return Prediction(classes=classes.cpu().numpy(), probabilities=probabilities.cpu().numpy(),
                          images=images.cpu().numpy() if images.device.type != "cpu" else images.numpy())
