"""The `tutorial` preset as a user runs it: `cnn-mnist train --preset tutorial` in a fresh process
and a fresh model directory (data from the cache, train 20,000 steps with every hook the preset
has, evaluate on the test set), timed from the outside, once per precision; then `cnn-mnist
evaluate` (fp32) on the same directory. Prints a table and one JSON line.

Attains (2-core reference machine, seed 0): see docs/performance.md.
Usage: python benchmarks/tutorial_preset.py [--precisions auto,fp32] [--steps 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile

from common import machine_record, run_cli

from cnn_mnist.kernels.precision import resolve_precision


def run(precision: str, steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as model_dir:
        trained, train_s, peak_rss_mib = run_cli("train", "--preset", "tutorial", "--model-dir", model_dir,
                                                 "--steps", str(steps), "--seed", str(seed), "--precision", precision)
        evaluated, _, _ = run_cli("evaluate", "--model-dir", model_dir)
    return {"precision": precision, "runs_as": resolve_precision(precision), "accuracy": trained["accuracy"],
            "loss": trained["loss"], "global_step": trained["global_step"], "wall_s": round(train_s, 1),
            "fp32_evaluate": {"accuracy": evaluated["accuracy"], "loss": evaluated["loss"]},
            "peak_rss_mib": round(peak_rss_mib)}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="auto,fp32", help="comma-separated, each a --precision value")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [run(precision, args.steps, args.seed) for precision in args.precisions.split(",")]
    print(f"{'precision':<12} {'accuracy':>9} {'loss':>8} {'step':>6} {'wall':>9} {'peak RSS':>9}  fp32 evaluate")
    for r in rows:
        minutes, seconds = divmod(r["wall_s"], 60)
        print(f"{r['precision'] + ' (' + r['runs_as'] + ')':<12} {r['accuracy']:>9.4f} {r['loss']:>8.4f} "
              f"{r['global_step']:>6} {int(minutes):>3}m {seconds:4.1f}s {r['peak_rss_mib']:>5} MiB  "
              f"{r['fp32_evaluate']['accuracy']:.4f} / "
              f"{r['fp32_evaluate']['loss']:.4f}")
    print(json.dumps({"benchmark": "tutorial_preset", "steps": args.steps, "seed": args.seed, "rows": rows,
                      **machine_record()}))


if __name__ == "__main__":
    main()
