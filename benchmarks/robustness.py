"""Accuracy under MNIST-C's 15 corruptions (in its style, see cnn_mnist/data/corruptions.py) for
trained model directories: clean and per-corruption accuracy on the first --images test digits,
and the mean over the 15, the benchmark's score. Prints a table and one JSON line.

Train the presets first, e.g. `cnn-mnist train --preset best --model-dir runs/best`.

Usage: python benchmarks/robustness.py --model-dir runs/tutorial --model-dir runs/fast ... [--images 1000]
"""

from __future__ import annotations

import argparse
import json
import logging

from common import machine_record

from cnn_mnist import load_mnist
from cnn_mnist.data.corruptions import CORRUPTIONS
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.robustness import evaluate_corruptions


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", action="append", required=True)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    test = load_mnist().test
    rows = {}
    for model_dir in args.model_dir:
        rows[model_dir] = evaluate_corruptions(Predictor(model_dir, device="cpu"),
                                               test.images[:args.images].numpy(), test.labels[:args.images].numpy())
    print(f"{'corruption':<14}" + "".join(f"{name[-18:]:>20}" for name in rows))
    print(f"{'(clean)':<14}" + "".join(f"{row['clean']:>20.4f}" for row in rows.values()))
    for corruption in CORRUPTIONS:
        print(f"{corruption:<14}" + "".join(f"{row['corruptions'][corruption]:>20.4f}" for row in rows.values()))
    print(f"{'mean of 15':<14}" + "".join(f"{row['mean']:>20.4f}" for row in rows.values()))
    print(json.dumps({"benchmark": "robustness", "images": args.images, "models": rows, **machine_record()}))


if __name__ == "__main__":
    main()
