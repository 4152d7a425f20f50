"""Images per second of the input pipeline with and without the `best` preset's augmentation,
and of whole training steps with and without it, on real MNIST.

The input pipeline alone: batches as index slices of the uint8 training tensor, scaled to
[0, 1] (what the network does first), or transformed by ``augment`` (which does the scaling
itself), or by ``augment_views`` (each image clean and damaged, as the preset trains). Training:
the `best` preset's settings through Estimator.train, a few hundred steps: without augmentation,
with one augmented view of each image and no consistency loss (the recipe before
``--consistency``), and as the preset trains (two views, the consistency loss). An image counts
once however many views of it a step computes. Prints a table and one JSON line.

Usage: python benchmarks/augment_speed.py [--batches 400] [--steps 300] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time

import torch
from common import machine_record

from cnn_mnist.data.augment import Augmentation, views_as_batch
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.data.inputs import numpy_input_fn
from cnn_mnist.training.presets import preset
from cnn_mnist.model.network import as_image_batch
from cnn_mnist.training.estimator import Estimator


def pipeline_images_per_s(images, labels, batch_size: int, batches: int, augmentation: Augmentation | None,
                          paired: bool = False) -> float:
    stream = numpy_input_fn(images, labels, batch_size=batch_size, num_epochs=None, shuffle=True,
                            augmentation=augmentation, paired=paired)()
    for _ in range(20):  # warm-up
        network_input(next(stream)[0])
    began = time.perf_counter()
    for _ in range(batches):
        network_input(next(stream)[0])
    return batches * batch_size / (time.perf_counter() - began)


def network_input(images: torch.Tensor) -> torch.Tensor:
    """What the model function and the network do first: views laid out one after another,
    uint8 -> [0, 1] float."""
    return as_image_batch(views_as_batch(images) if images.dim() == 5 else images)


def training_images_per_s(mnist, augmentation: Augmentation, steps: int, consistency: float = 0.0) -> float:
    config = preset("best").with_overrides(save_checkpoints_steps=10**9,  # no saves inside the timing
                                           consistency=consistency)
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, params=config.params, config=config.run)
        input_fn = numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=config.batch_size,
                                  num_epochs=None, shuffle=True, augmentation=augmentation,
                                  paired=bool(consistency))
        estimator.train(input_fn, max_steps=20)  # warm-up, and the first checkpoint out of the way
        began = time.perf_counter()
        estimator.train(input_fn, max_steps=20 + steps)
        return steps * config.batch_size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mnist = load_mnist(args.data_dir)
    best = preset("best")
    one_view = dataclasses.replace(best.augment, clean_share=0.5)  # half the images damaged, as before
    elastic = dataclasses.replace(one_view, elastic=1.0)
    rows = {
        "pipeline, no augmentation": pipeline_images_per_s(mnist.train.images, mnist.train.labels, best.batch_size,
                                                           args.batches, None),
        "pipeline, one view, half damaged": pipeline_images_per_s(mnist.train.images, mnist.train.labels,
                                                                  best.batch_size, args.batches, one_view),
        "pipeline, the same + elastic 1.0": pipeline_images_per_s(mnist.train.images, mnist.train.labels,
                                                                  best.batch_size, args.batches, elastic),
        "pipeline, best's two views": pipeline_images_per_s(mnist.train.images, mnist.train.labels,
                                                            best.batch_size, args.batches, best.augment, paired=True),
        "training (best), no augmentation": training_images_per_s(mnist, Augmentation(), args.steps),
        "training (best), one view": training_images_per_s(mnist, one_view, args.steps),
        "training (best), two views + consistency": training_images_per_s(
            mnist, best.augment, args.steps, best.params.consistency),
    }
    print(f"{'measurement':40} {'images/s':>12}")
    for name, value in rows.items():
        print(f"{name:40} {value:12,.0f}")
    plain = rows["training (best), no augmentation"]
    cost = 1 - rows["training (best), one view"] / plain
    views = rows["training (best), one view"] / rows["training (best), two views + consistency"]
    print(f"one augmented view costs {cost:.1%} of training throughput; two views and the consistency loss "
          f"make a step {views:.2f}x as long as one view does")
    print(json.dumps({"images_per_s": {k: round(v) for k, v in rows.items()}, "training_cost": round(cost, 4),
                      "two_views_time_ratio": round(views, 3),
                      "batch_size": best.batch_size, **machine_record()}))


if __name__ == "__main__":
    main()
