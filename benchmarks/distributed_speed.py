"""Training throughput of one process against two on this machine: 1 process x 2 threads against
2 processes x 1 thread each (torchrun, gloo on loopback), the tutorial network at a global batch of
100, fp32 and bf16. Prints a table and one JSON line.

Each figure is images per second through Estimator.train (hooks, logging, the stop vote and the
final checkpoint included) over --steps steps after a 20-step warm-up, the best of --rounds
interleaved rounds, every measurement in fresh processes. For two processes the table also gives
the milliseconds per step spent in the gradient all-reduce (13 MB of fp32 gradients) and in the
stop vote, timed on rank 0.

On 2 cores two processes cannot beat one with 2 threads: they compute the same work on the same
cores and add the all-reduce on top. The figure says what data-parallel costs here, not what it
buys on machines with more cores or more machines.

Usage: python benchmarks/distributed_speed.py [--steps 300] [--rounds 2] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import torch
from common import machine_record

WARMUP_STEPS = 20
BATCH_SIZE = 100


def measure(precision: str, steps: int) -> dict:
    """Run in each process of a layout: train, and (on rank 0) return the figures."""
    from cnn_mnist import Estimator, ModelParams, RunConfig, load_mnist, numpy_input_fn
    from cnn_mnist.training import distributed

    timers = {"all_reduce": 0.0, "vote": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - started
        return wrapper

    distributed.sum_gradients = timed("all_reduce", distributed.sum_gradients)
    distributed.any_rank = timed("vote", distributed.any_rank)
    with distributed.process_group(), tempfile.TemporaryDirectory() as model_dir:
        mnist = load_mnist()
        estimator = Estimator(model_dir=model_dir, params=ModelParams(),
                              config=RunConfig(precision=precision, save_checkpoints_secs=3600))
        input_fn = numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=BATCH_SIZE, num_epochs=None)
        estimator.train(input_fn, max_steps=WARMUP_STEPS)
        timers.update(all_reduce=0.0, vote=0.0)
        started = time.perf_counter()
        estimator.train(input_fn, steps=steps)
        seconds = time.perf_counter() - started
        return {"images_per_s": steps * BATCH_SIZE / seconds, "all_reduce_ms": 1e3 * timers["all_reduce"] / steps,
                "vote_ms": 1e3 * timers["vote"] / steps, "processes": distributed.world_size(),
                "threads": torch.get_num_threads(), "chief": distributed.is_chief()}


def run_layout(processes: int, precision: str, steps: int) -> dict:
    worker = [__file__, "--worker", precision, "--steps", str(steps)]
    if processes == 1:
        command = [sys.executable, *worker, "--threads", "2"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   *worker, "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es), {precision}: exit {done.returncode}\n{done.stderr[-3000:]}")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each figure is the best")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--worker", choices=["fp32", "bf16"], help=argparse.SUPPRESS)  # one measurement, here
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        torch.set_num_threads(args.threads)
        figures = measure(args.worker, args.steps)
        if figures.pop("chief"):
            print(json.dumps(figures))
        return 0

    layouts = [(processes, precision) for precision in args.precisions for processes in (1, 2)]
    best: dict[tuple[int, str], dict] = {}
    for _ in range(args.rounds):
        for layout in layouts:
            figures = run_layout(*layout, args.steps)
            if layout not in best or figures["images_per_s"] > best[layout]["images_per_s"]:
                best[layout] = figures
    print(f"{'layout':<26} {'precision':<9} {'images/s':>9} {'vs 1 process':>13} {'all-reduce ms/step':>19} "
          f"{'vote ms/step':>13}")
    for processes, precision in layouts:
        figures, single = best[(processes, precision)], best[(1, precision)]
        layout = f"{processes} process{'es' if processes > 1 else ''} x {figures['threads']} thread" + \
            ("s" if figures["threads"] > 1 else "")
        print(f"{layout:<26} {precision:<9} {figures['images_per_s']:>9.0f} "
              f"{figures['images_per_s'] / single['images_per_s']:>12.2f}x {figures['all_reduce_ms']:>19.1f} "
              f"{figures['vote_ms']:>13.2f}")
    load, machine = os.getloadavg(), machine_record()
    print(f"global batch {BATCH_SIZE}, {args.steps} timed steps, best of {args.rounds} rounds; "
          f"{machine['cores']} cores; load average at the end {load[0]:.2f} (others' work on a shared machine lowers "
          "every figure)")
    print(json.dumps({"benchmark": "distributed_speed", "steps": args.steps, "rounds": args.rounds,
                      "batch_size": BATCH_SIZE, "load_average": load[0],
                      "results": [{"processes": p, "precision": q, **{k: round(v, 2) if isinstance(v, float) else v
                                                                      for k, v in best[(p, q)].items()}}
                                  for p, q in layouts], **machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
