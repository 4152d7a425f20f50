"""Accuracy under the 15 corruptions of MNIST-C (see ``data.corruptions``): the same test digits
clean and corrupted each way, answered by a trained model, and the mean over the corruptions,
the benchmark's score."""

from __future__ import annotations

import numpy as np

from cnn_mnist.data.corruptions import CORRUPTIONS, corrupt

DEFAULT_IMAGES = 1_000  # the first test digits: ~12 s to corrupt and answer here (glass blur is most of it)


def evaluate_corruptions(predictor, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """``predictor`` (a Predictor or an Ensemble) on ``images`` (N, 28, 28) uint8, clean and under
    every corruption: ``{"clean", "corruptions": {name: accuracy}, "mean", "worst", "images", "seed"}``."""
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)

    def accuracy(batch: np.ndarray) -> float:
        return float((predictor.predict(batch.astype(np.float32) / 255.0).classes == labels).mean())

    scores = {name: accuracy(corrupt(images, name, seed)) for name in CORRUPTIONS}
    worst = min(scores, key=scores.get)
    return {"clean": accuracy(images), "corruptions": scores, "mean": float(np.mean(list(scores.values()))),
            "worst": {"corruption": worst, "accuracy": scores[worst]}, "images": len(images), "seed": seed}


def format_table(results: dict) -> str:
    lines = [f"{'corruption':<14} accuracy", f"{'(clean)':<14} {results['clean']:.4f}"]
    lines += [f"{name:<14} {value:.4f}" for name, value in results["corruptions"].items()]
    lines.append(f"{'mean of 15':<14} {results['mean']:.4f}   "
                 f"({results['images']:,} test digits, seed {results['seed']})")
    return "\n".join(lines)
