"""What each augmentation ingredient adds to a preset's robustness, measured on the validation
split only (never the test set): the preset retrained per row with that row's ingredients, then
its clean accuracy on the 5,000 validation digits and its accuracy under MNIST-C's 15
corruptions (in its style) on the first --images of them, with the training time.

The first row is the preset as it was before the robustness work (the new ingredients off); the
rows after it add one ingredient at a time, up to the preset as it is; rows marked "tried" were
measured and left out.

Prints a line and a JSON line per row as it ends, then one JSON line for the whole run.

Usage: python benchmarks/robustness_ablation.py [--preset fast|best] [--images 1000] [--seed 0] [--rows N ...]
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

OFF = {"augment_brightness": 0, "augment_contrast": 0, "augment_noise": 0, "augment_erase": 0, "augment_stroke": 0,
       "augment_outline": 0, "augment_clean_share": 0, "augment_damage_from_epoch": 0, "consistency": 0}
PHOTOMETRIC = {"augment_brightness": 0.5, "augment_contrast": 0.5, "augment_noise": 0.2}
ERASE = {**OFF, **PHOTOMETRIC, "augment_erase": 0.3}
OUTLINE = {**ERASE, "augment_outline": 0.2}
HALF_CLEAN = {**OUTLINE, "augment_clean_share": 0.5}
ROWS = {
    "fast": [
        ("as it was", OFF),
        ("+ grey background (brightness 0.5)", {**OFF, "augment_brightness": 0.5}),
        ("+ fainter ink (contrast 0.5)", {**OFF, "augment_brightness": 0.5, "augment_contrast": 0.5}),
        ("+ pixel noise (0.2)", {**OFF, **PHOTOMETRIC}),
        ("+ erasing (up to 30%)", ERASE),
        ("+ hollow strokes (outline 0.2)", OUTLINE),
        ("+ three quarters of the images clean", {**OUTLINE, "augment_clean_share": 0.75}),
        ("+ damage only after the first epoch: the preset",
         {**OUTLINE, "augment_clean_share": 0.75, "augment_damage_from_epoch": 1}),
        ("tried: erasing row + pen width 0.5", {**ERASE, "augment_stroke": 0.5}),
        ("tried: the outline row + shift 2 px", {**OUTLINE, "augment_shift": 2}),
    ],
    "best": [  # its geometric augmentation (rotation, scale, shear, shift 2 px) in every row
        ("as it was", OFF),
        ("+ brightness, contrast, noise", {**OFF, **PHOTOMETRIC}),
        ("+ erasing (up to 30%)", ERASE),
        ("+ hollow strokes (outline 0.2)", OUTLINE),
        ("+ half the images clean", HALF_CLEAN),
        ("+ each image clean and damaged, consistency loss 1: the preset", {**HALF_CLEAN, "consistency": 1.0}),
        ("tried: erasing row + pen width 0.5", {**ERASE, "augment_stroke": 0.5}),
        ("tried: the preset, damage stops after 18 epochs", {**HALF_CLEAN, "augment_damage_until_epoch": 18}),
        ("tried: the preset, damage stops after 16 epochs", {**HALF_CLEAN, "augment_damage_until_epoch": 16}),
        ("tried: the preset, 24 epochs", {**HALF_CLEAN, "steps": 10_320}),
        ("tried: the preset, outline 0.1", {**HALF_CLEAN, "augment_outline": 0.1}),
    ],
}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", choices=sorted(ROWS))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, nargs="+", help="only these rows (0 = the first)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    validation = load_mnist().validation
    rows = []
    for index, (name, flags) in enumerate(ROWS[args.preset]):
        if args.rows is not None and index not in args.rows:
            continue
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
        rows.append({"row": index, "step": name, "flags": flags, "validation_clean": clean,
                     "corrupted_mean": scores["mean"], "worst": scores["worst"], "corruptions": scores["corruptions"],
                     "train_and_test_s": seconds})
        lowest = sorted(scores["corruptions"].items(), key=lambda item: item[1])[:4]
        print(f"{index} {name:<36} clean {clean:.4f}  corrupted mean {scores['mean']:.4f}  lowest "
              + ", ".join(f"{k} {v:.3f}" for k, v in lowest) + f"  {seconds:.0f} s", flush=True)
        print(json.dumps({"row": rows[-1]}), flush=True)  # each row as it ends: a long run survives a stop
    print(json.dumps({"benchmark": "robustness_ablation", "preset": args.preset, "seed": args.seed,
                      "images": args.images, "rows": rows, **machine_record()}))


if __name__ == "__main__":
    main()
