"""Several trained models answering together: their softmax probabilities averaged.

Networks trained from different seeds make partly different mistakes, so the average of their
probabilities is right more often than any one of them (docs/train.md's ``best`` section measures
3 and 5). Each member is restored as ``predict`` restores a model (the weight average where
there is one), and each keeps its own precision setting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.devices import inference_batch_size
from cnn_mnist.use.predictor import Prediction, Predictor


class Ensemble:
    """``Ensemble([dir_a, dir_b, dir_c]).predict(pixels)``: the members' mean probabilities."""

    def __init__(self, model_dirs: Sequence[str | os.PathLike], precision: str = "fp32", device: str = "auto"):
        if not model_dirs:
            raise ConfigError("an ensemble needs at least one model directory")
        resolved = [Path(d).resolve() for d in model_dirs]
        if len(set(resolved)) != len(resolved):
            raise ConfigError("the same model directory is named twice; an ensemble's members must differ")
        self.members = [Predictor(model_dir, precision=precision, device=device) for model_dir in model_dirs]
        for member in self.members[1:]:
            if member.classes != self.members[0].classes:
                raise ConfigError(f"an ensemble's members must share their classes; {member.model_dir} has "
                                  f"{', '.join(member.classes)} and {self.members[0].model_dir} "
                                  f"{', '.join(self.members[0].classes)}")

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names every member was trained on."""
        return self.members[0].classes

    @property
    def device(self) -> torch.device:
        """Where the members run: one device for all (each Predictor was given the same one)."""
        return self.members[0].device

    @property
    def global_steps(self) -> list[int]:
        return [member.global_step for member in self.members]

    def predict(self, pixels: np.ndarray | torch.Tensor) -> Prediction:
        """As ``Predictor.predict``; the probabilities are the members' mean."""
        return self.predict_with_members(pixels)[0]

    def predict_with_members(self, pixels) -> tuple[Prediction, list[Prediction]]:
        """The ensemble's prediction and each member's, from one pass of each network."""
        each = [member.predict(pixels) for member in self.members]
        probabilities = np.mean([p.probabilities for p in each], axis=0, dtype=np.float64).astype(np.float32)
        return Prediction(classes=probabilities.argmax(axis=1), probabilities=probabilities,
                          images=each[0].images), each

    def evaluate(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict:
        """Accuracy and mean cross-entropy of the mean probabilities, and the same for each member.

        ``{"accuracy", "loss", "members": [{"model_dir", "global_step", "accuracy", "loss"}, ...]}``.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if len(images) != len(labels) or len(labels) == 0:
            raise ConfigError(f"evaluate needs as many labels as images, got {len(images)} and {len(labels)}")
        ensemble_probs, member_probs = [], [[] for _ in self.members]
        size = inference_batch_size(self.device)
        for start in range(0, len(labels), size):
            together, each = self.predict_with_members(images[start:start + size])
            ensemble_probs.append(together.probabilities)
            for collected, prediction in zip(member_probs, each, strict=True):
                collected.append(prediction.probabilities)
        results = _scores(np.concatenate(ensemble_probs), labels)
        results["members"] = [
            {"model_dir": str(member.model_dir), "global_step": member.global_step,
             **_scores(np.concatenate(collected), labels)}
            for member, collected in zip(self.members, member_probs, strict=True)
        ]
        return results


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    picked = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    # Floored where every member gives the true class a probability that underflows fp32 (log 0).
    loss = float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean())
    return {"accuracy": float((probabilities.argmax(axis=1) == labels).mean()), "loss": loss}
