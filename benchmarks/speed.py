"""Training and prediction throughput of the tutorial network: cnn-mnist's real paths against a
plain PyTorch loop measured in the same run, with the roofline and peak memory. Prints a table
and one JSON line.

Baseline ("plain loop"): the network as an nn.Module in the tutorial's layer order with PyTorch's
defaults, a DataLoader over a TensorDataset of float images, eager fp32, SGD, batch 100; for
prediction the same module, model.eval() and no_grad, batches of 1,000. cnn-mnist: Estimator.train
with its built-in hooks (loss/steps-per-second log, summaries, NaN guard, checkpoint saver) and the
final checkpoint save included; Estimator.predict at batch 1,000.

Time to 99%: the `fast` preset trained from scratch, its (averaged) weights evaluated on the
10,000 test images every 10 steps; the figure is training wall time (evaluation pauses excluded)
at the first evaluation at or above 99.0%.

Each throughput figure is the best of --rounds interleaved rounds, each measurement in a fresh
process: the package sets a process-wide allocator option when it trains (see
cnn_mnist/allocator.py) that would otherwise speed up a baseline measured after it.

Usage: python benchmarks/speed.py [--steps 300] [--rounds 3] [--threads N] [--skip-time-to-99]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time

import torch
from common import PlainLoop, PlainNet, machine_record, run_cli, time_to_99
from torch.utils.data import DataLoader, TensorDataset

from cnn_mnist import Estimator, ModelParams, RunConfig, load_mnist, numpy_input_fn
from cnn_mnist.kernels.cpu import native
from cnn_mnist.kernels.precision import bf16_supported

# Multiply-accumulates per image, layer by layer (output positions x kernel size x channels).
MACS = {"conv1": 28 * 28 * 32 * (5 * 5 * 1), "conv2": 14 * 14 * 64 * (5 * 5 * 32),
        "dense": 3136 * 1024, "logits": 1024 * 10}
FORWARD_FLOPS = 2 * sum(MACS.values())
# Backward: weight gradients cost one forward each; input gradients too, except conv1's (the
# images need none).
TRAIN_FLOPS = 3 * FORWARD_FLOPS - 2 * MACS["conv1"]


# Each figure is the best of several timed windows, for the baselines and the package alike:
# this VM's throughput wanders by several percent from minute to minute. Every measurement runs
# in its own process (the package sets a process-wide allocator option when it trains, which
# would otherwise leak into the baselines), and the rounds interleave all of them, so a slow
# minute hurts every figure alike instead of one.
REPEATS = 1  # timed windows per process, after a warm-up


def plain_train_images_per_s(images, labels, steps, warmup=20):
    loop, best = PlainLoop(images, labels), 0.0
    for window in range(REPEATS + 1):  # window 0 is the warm-up
        started = time.perf_counter()
        seen = loop.run(warmup if window == 0 else steps)
        if window:
            best = max(best, seen / (time.perf_counter() - started))
    return best


def plain_predict_images_per_s(images):
    loader = DataLoader(TensorDataset(images.float().div(255).unsqueeze(1)), batch_size=1000)
    model, best = PlainNet().eval(), 0.0
    with torch.no_grad():
        for window in range(REPEATS + 1):  # window 0 is the warm-up
            started = time.perf_counter()
            for (x,) in loader:
                torch.softmax(model(x), 1).argmax(1)
            if window:
                best = max(best, len(images) / (time.perf_counter() - started))
    return best


def package_train_images_per_s(mnist, steps, precision, log_every=100, warmup=20):
    with tempfile.TemporaryDirectory() as model_dir:
        config = RunConfig(precision=precision, log_step_count_steps=log_every, save_summary_steps=log_every)
        estimator = Estimator(model_dir=model_dir, params=ModelParams(), config=config)
        input_fn = numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=100, num_epochs=None)
        estimator.train(input_fn, max_steps=warmup)
        best = 0.0
        for _ in range(REPEATS):
            started = time.perf_counter()
            estimator.train(input_fn, steps=steps)  # restore, hooks, logging, final checkpoint: all timed
            best = max(best, steps * 100 / (time.perf_counter() - started))
        return best


def package_predict_images_per_s(mnist, precision):
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, config=RunConfig(precision=precision))
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=100, num_epochs=None),
                        max_steps=1)
        input_fn = numpy_input_fn(mnist.test.images, batch_size=1000, shuffle=False)
        best = 0.0
        for window in range(REPEATS + 1):  # window 0 is the warm-up
            started = time.perf_counter()
            count = sum(1 for _ in estimator.predict(input_fn))
            if window:
                best = max(best, count / (time.perf_counter() - started))
        return best


MEASUREMENTS = {
    "plain_train_fp32": lambda mnist, steps: plain_train_images_per_s(mnist.train.images, mnist.train.labels, steps),
    "plain_predict_fp32": lambda mnist, steps: plain_predict_images_per_s(mnist.test.images),
    "train_fp32": lambda mnist, steps: package_train_images_per_s(mnist, steps, "fp32"),
    "train_fp32_no_logging": lambda mnist, steps: package_train_images_per_s(mnist, steps, "fp32", log_every=10**9),
    "train_bf16": lambda mnist, steps: package_train_images_per_s(mnist, steps, "bf16"),
    "predict_fp32": lambda mnist, steps: package_predict_images_per_s(mnist, "fp32"),
    "predict_bf16": lambda mnist, steps: package_predict_images_per_s(mnist, "bf16"),
}


def measure_in_subprocess(name, args) -> float:
    command = [sys.executable, __file__, "--only", name, "--steps", str(args.steps)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])[name]


def matmul_peak_gflops(dtype, size=2048, repeats=10, onednn=False):
    """Square matrix products through torch.mm (PyTorch's BLAS for fp32, oneDNN for bf16), or
    through oneDNN's inner product for fp32 (the path the package's dense layer takes)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    if onednn:
        def product():
            return torch.ops.aten.mkldnn_linear(a.to_mkldnn(), b, None).to_dense()
    else:
        def product():
            return torch.mm(a, b)
    product()
    started = time.perf_counter()
    for _ in range(repeats):
        product()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def training_run_peak_rss_mib(steps):
    """Peak resident memory of a whole `cnn-mnist train` process (data, model, optimizer, hooks)."""
    with tempfile.TemporaryDirectory() as model_dir:
        return run_cli("train", "--model-dir", model_dir, "--steps", str(steps), "--log-probabilities-every", "0")[2]


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per measurement")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-time-to-99", action="store_true", help="skip the fast-preset runs (~40 s each)")
    parser.add_argument("--fast-seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="seeds of the fast-preset runs (default: 0); the first gives time_to_99_s")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure is the best")
    parser.add_argument("--only", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)  # one, in this process
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    mnist = load_mnist()
    if args.only:
        print(json.dumps({args.only: MEASUREMENTS[args.only](mnist, args.steps)}))
        return

    figures = dict.fromkeys(MEASUREMENTS, 0.0)
    for _ in range(args.rounds):
        for name in MEASUREMENTS:
            figures[name] = max(figures[name], measure_in_subprocess(name, args))
    peaks = {"fp32_blas": matmul_peak_gflops(torch.float32),
             "fp32_onednn": matmul_peak_gflops(torch.float32, onednn=True),
             "bf16_onednn": matmul_peak_gflops(torch.bfloat16)}
    fast_runs = [] if args.skip_time_to_99 else [time_to_99(mnist, seed, device="cpu") for seed in args.fast_seeds]
    fast = fast_runs[0] if fast_runs else None
    peak_rss_mib = training_run_peak_rss_mib(args.steps)
    c_kernels = native.library("pool_relu") is not None

    def roofline(name, value):
        """GFLOP/s, and the fraction of the machine's measured peak for that precision: the
        BLAS fp32 peak for the plain loop (which runs on it), oneDNN's for the package."""
        flops = (TRAIN_FLOPS if "train" in name else FORWARD_FLOPS) * value / 1e9
        peak = peaks["bf16_onednn" if "bf16" in name else "fp32_blas" if "plain" in name else "fp32_onednn"]
        return flops, flops / peak

    print(f"{'measurement':<24} {'images/s':>9} {'vs plain':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for name, value in figures.items():
        baseline = figures["plain_predict_fp32" if "predict" in name else "plain_train_fp32"]
        gflops, fraction = roofline(name, value)
        print(f"{name:<24} {value:>9.0f} {value / baseline:>8.2f}x {gflops:>8.0f} {fraction:>7.0%}")
    logging_cost = 1 - figures["train_fp32"] / figures["train_fp32_no_logging"]
    print(f"logging every 100 steps costs {logging_cost:+.1%} against no logging")
    print(f"matrix-product peaks (GFLOP/s): fp32 via PyTorch's BLAS {peaks['fp32_blas']:.0f}, fp32 via oneDNN "
          f"{peaks['fp32_onednn']:.0f}, bf16 via oneDNN {peaks['bf16_onednn']:.0f}; FLOPs per image: "
          f"forward {FORWARD_FLOPS / 1e6:.1f} M, training step {TRAIN_FLOPS / 1e6:.1f} M")
    for run in fast_runs:
        reached = (f"99% test accuracy after {run['time_to_99_s']:.1f} s of training (step {run['step_at_99']})"
                   if run["time_to_99_s"] is not None else "never reached 99% test accuracy")
        print(f"fast preset, seed {run['seed']}: {reached}; {run['final_accuracy']:.4f} at its end "
              f"(step {run['steps']}, {run['training_s']:.1f} s of training)")
    if len(fast_runs) > 1:
        finals = torch.tensor([run["final_accuracy"] for run in fast_runs], dtype=torch.float64)
        print(f"fast preset over {len(fast_runs)} seeds: final accuracy mean {finals.mean():.4f}, "
              f"min {finals.min():.4f}, max {finals.max():.4f}, std {finals.std():.4f}")
    machine = machine_record()
    print(f"peak RSS of a training run: {peak_rss_mib:.0f} MiB; threads {machine['threads']}; C kernels "
          f"{'on' if c_kernels else 'off'}; {machine['cpu']}")
    print(json.dumps({
        "benchmark": "speed", "steps": args.steps, "rounds": args.rounds,
        "images_per_s": {k: round(v) for k, v in figures.items()},
        "ratios": {"train_fp32": figures["train_fp32"] / figures["plain_train_fp32"],
                   "train_bf16": figures["train_bf16"] / figures["plain_train_fp32"],
                   "predict_fp32": figures["predict_fp32"] / figures["plain_predict_fp32"],
                   "predict_bf16": figures["predict_bf16"] / figures["plain_predict_fp32"]},
        "logging_cost": logging_cost, "time_to_99_s": fast and fast["time_to_99_s"], "fast_preset": fast_runs,
        "peak_rss_mib": round(peak_rss_mib),
        "flops_per_image": {"forward": FORWARD_FLOPS, "train": TRAIN_FLOPS},
        "peak_gflops": {k: round(v) for k, v in peaks.items()},
        "roofline_fraction": {k: round(roofline(k, v)[1], 3) for k, v in figures.items()},
        "bf16_native": bf16_supported(), "c_kernels": c_kernels, **machine,
    }))


if __name__ == "__main__":
    main()
