"""Time to 99% test accuracy of the fast preset against a variant of it, measured in one run
(seeds interleaved, so the machine's drift falls on both alike): each trained from scratch on the
CPU, its averaged weights evaluated on the 10,000 test images every 10 steps; the figure is
training wall time, evaluation pauses excluded, at the first evaluation at or above 99.0%.
Prints a line per run, the ratio of the mean times, and one JSON line.

Usage: python benchmarks/time_to_99.py [--seeds 0 1 2] --variant augment_erase=0 [--variant KEY=VALUE ...]
  (KEY is a TrainConfig.with_overrides name, VALUE a number)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics

from common import machine_record, time_to_99

from cnn_mnist import PRESETS, load_mnist


def override(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", type=override, action="append", required=True, metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mnist = load_mnist()
    recipes = {"fast": PRESETS["fast"], "variant": PRESETS["fast"].with_overrides(**dict(args.variant))}
    runs = {name: [] for name in recipes}
    for seed in args.seeds:
        for name, config in recipes.items():
            run = time_to_99(mnist, seed, device="cpu", config=config)
            runs[name].append(run)
            reached = f"{run['time_to_99_s']:.1f} s (step {run['step_at_99']})" if run["time_to_99_s"] else "never"
            print(f"{name:<8} seed {seed}: 99% after {reached}; {run['final_accuracy']:.4f} at the end "
                  f"({run['training_s']:.1f} s of training)", flush=True)
    means = {name: statistics.mean(r["time_to_99_s"] or float("inf") for r in rs) for name, rs in runs.items()}
    print(f"mean time to 99%: fast {means['fast']:.1f} s, variant {means['variant']:.1f} s, "
          f"ratio fast/variant {means['fast'] / means['variant']:.2f}")
    print(json.dumps({"benchmark": "time_to_99", "variant": dict(args.variant), "runs": runs,
                      "mean_time_to_99_s": means, **machine_record()}))


if __name__ == "__main__":
    main()
