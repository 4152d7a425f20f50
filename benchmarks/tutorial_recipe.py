"""The tutorial recipe (plain SGD 0.001, batch 100, dropout 0.4) with TensorFlow's initialisation
against PyTorch's default one: test accuracy, loss and wall time of each, printed as a table
and one JSON line.

Attains (20,000 steps, seed 0, 2-core reference machine): see docs/performance.md.
Usage: python benchmarks/tutorial_recipe.py [--steps 20000] [--initializers glorot,pytorch] [--seed 0] [--threads N]
"""

import argparse
import json
import logging
import tempfile
import time

import torch
from common import machine_record

from cnn_mnist import Estimator, ModelParams, RunConfig, load_mnist, numpy_input_fn


def run(initializer: str, steps: int, mnist, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as model_dir:
        started = time.perf_counter()
        classifier = Estimator(model_dir=model_dir, params=ModelParams(initializer=initializer),
                               config=RunConfig(seed=seed))
        classifier.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=100, num_epochs=None,
                                        shuffle=True, seed=seed), max_steps=steps)
        train_s = time.perf_counter() - started
        results = classifier.evaluate(numpy_input_fn(mnist.test.images, mnist.test.labels, batch_size=1000,
                                                     num_epochs=1, shuffle=False))
        total_s = time.perf_counter() - started
    return {"initializer": initializer, **results, "train_s": round(train_s, 1), "total_s": round(total_s, 1),
            "images_per_s": round(steps * 100 / train_s)}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--initializers", default="glorot,pytorch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    mnist = load_mnist()
    rows = [run(name, args.steps, mnist, args.seed) for name in args.initializers.split(",")]
    print(f"{'initializer':<12} {'accuracy':>9} {'loss':>8} {'step':>6} {'train s':>8} {'total s':>8} {'img/s':>7}")
    for r in rows:
        print(f"{r['initializer']:<12} {r['accuracy']:>9.4f} {r['loss']:>8.4f} {r['global_step']:>6} "
              f"{r['train_s']:>8.1f} {r['total_s']:>8.1f} {r['images_per_s']:>7}")
    print(json.dumps({"benchmark": "tutorial_recipe", "steps": args.steps, "seed": args.seed, "rows": rows,
                      **machine_record()}))


if __name__ == "__main__":
    main()
