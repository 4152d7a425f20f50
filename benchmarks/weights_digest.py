"""A fingerprint of what training computes: the tutorial preset trained from scratch for --steps
(500 by default), then the SHA-256 of every weight's bytes and the test accuracy and loss.

Run it on two commits (``PYTHONPATH=<checkout>/src python benchmarks/weights_digest.py``): the same
digest means a change (a refactor, a move of modules) computes nothing differently. It uses the
public API alone, so it runs on any commit that has it. About 1 min here.

Usage: python benchmarks/weights_digest.py [--steps 500] [--preset tutorial]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile

import cnn_mnist
from cnn_mnist import PRESETS, Estimator, load_mnist, numpy_input_fn


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--preset", default="tutorial", choices=sorted(PRESETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mnist, config = load_mnist(), PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, params=config.params, config=config.run)
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=config.batch_size,
                                       num_epochs=None, seed=config.run.seed, augmentation=config.augment),
                        max_steps=args.steps)
        digest = hashlib.sha256()
        for name, tensor in sorted(estimator.evaluation_network.state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().contiguous().numpy().tobytes())
        results = estimator.evaluate(numpy_input_fn(mnist.test.images, mnist.test.labels, batch_size=1000,
                                                    num_epochs=1, shuffle=False), write_summaries=False)
    print(f"{args.preset} preset, {args.steps} steps, from {cnn_mnist.__file__}:")
    print(f"  weights sha256 {digest.hexdigest()}")
    print(f"  test accuracy {results['accuracy']:.4f}, loss {results['loss']:.6f}")
    print(json.dumps({"benchmark": "weights_digest", "preset": args.preset, "steps": args.steps,
                      "sha256": digest.hexdigest(), "accuracy": results["accuracy"], "loss": results["loss"]}))


if __name__ == "__main__":
    main()
