"""What each photometric augmentation adds to a preset's robustness, measured on the validation
split only (never the test set): the preset trained with each set of extra augmentation flags,
then its clean accuracy on the 5,000 validation digits and its accuracy under MNIST-C's 15
corruptions (in its style) on the first --images of them, with the training time.

Usage: python benchmarks/robustness_ablation.py [--preset fast] [--images 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

from common import machine_record

from cnn_mnist import PRESETS, load_mnist
from cnn_mnist.experiment import train_and_evaluate
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.robustness import evaluate_corruptions

# Each row adds to the one before it.
STEPS = [
    ("the preset as it is", {}),
    ("+ grey background (brightness 0.5)", {"augment_brightness": 0.5}),
    ("+ fainter ink (contrast 0.5)", {"augment_brightness": 0.5, "augment_contrast": 0.5}),
    ("+ pixel noise (0.2)", {"augment_brightness": 0.5, "augment_contrast": 0.5, "augment_noise": 0.2}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    validation = load_mnist().validation
    rows = []
    for name, flags in STEPS:
        config = PRESETS[args.preset].with_overrides(seed=args.seed, eval_every=0, **flags)
        with tempfile.TemporaryDirectory() as model_dir:
            started = time.perf_counter()
            train_and_evaluate(config, model_dir)  # its test figures are not looked at
            seconds = time.perf_counter() - started
            predictor = Predictor(model_dir, device="cpu")
            clean = float((predictor.predict(validation.images.numpy().astype("float32") / 255).classes
                           == validation.labels.numpy()).mean())
            scores = evaluate_corruptions(predictor, validation.images[:args.images].numpy(),
                                          validation.labels[:args.images].numpy())
        rows.append({"step": name, "flags": flags, "validation_clean": clean, "corrupted_mean": scores["mean"],
                     "worst": scores["worst"], "corruptions": scores["corruptions"], "train_and_test_s": seconds})
        print(f"{name:<40} clean {clean:.4f}  corrupted mean {scores['mean']:.4f}  worst "
              f"{scores['worst']['corruption']} {scores['worst']['accuracy']:.3f}  {seconds:.0f} s", flush=True)
    print(json.dumps({"benchmark": "robustness_ablation", "preset": args.preset, "seed": args.seed,
                      "images": args.images, "rows": rows, **machine_record()}))


if __name__ == "__main__":
    main()
