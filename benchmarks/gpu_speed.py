"""cnn-mnist on one GPU, against a plain PyTorch loop and Lightning's Trainer measured in the same run.

Prints a table and one JSON line:
- training images/s at batch 100 (the tutorial's) and 256 (the fast preset's) of
  - the plain loop, as pytorch/examples writes it: a DataLoader over CPU tensors, ``.to(device)``
    per batch, fp32, SGD;
  - Lightning's Trainer on the same network and DataLoader (fp32, and bf16-mixed);
  - cnn-mnist's Estimator.train (data resident on the device, the preset's precision, every
    built-in hook running), with --deterministic and without;
- the tutorial preset's 20,000 steps and the best preset's 8,600: training time and test accuracy;
- the bare training step eager and under torch.compile(mode="reduce-overhead") (CUDA graphs), to
  decide whether the Estimator should capture its step;
- the fast preset's training time to 99.0% test accuracy, seeds 0-2 (evaluated every 10 steps;
  evaluation pauses excluded, as benchmarks/speed.py measures it on the CPU);
- prediction images/s at batch 10,000 (Estimator.predict, and the Predictor the CLI and the
  service use); peak GPU memory of the training runs.
Every window is timed between device synchronisations, after a warm-up.

Usage: python benchmarks/gpu_speed.py [--device cuda] [--data-dir DIR] [--steps 300] [--quick]
(--quick: short runs that check the script on any device, a CPU included; its figures mean nothing.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PlainNet, time_to_99  # noqa: E402  (what the CPU benchmark times too)

from cnn_mnist import Estimator, RunConfig, load_mnist, numpy_input_fn  # noqa: E402
from cnn_mnist.experiment import train_and_evaluate  # noqa: E402
from cnn_mnist.kernels import devices
from cnn_mnist.model.config import PRESETS  # noqa: E402
from cnn_mnist.model.network import ConvNet  # noqa: E402
from cnn_mnist.training import checkpoints
from cnn_mnist.training.hooks import Hook  # noqa: E402
from cnn_mnist.use.predictor import Predictor  # noqa: E402

BATCHES = (100, 256)  # the tutorial's and the fast preset's


def plain_loop_images_per_s(mnist, device, batch_size, steps, warmup):
    """pytorch/examples' loop: a DataLoader of CPU float tensors, each batch copied to the device."""
    loader = DataLoader(TensorDataset(mnist.train.images.float().div(255).unsqueeze(1), mnist.train.labels),
                        batch_size=batch_size, shuffle=True)
    model = PlainNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    model.train()

    def batches():
        while True:
            yield from loader

    stream = batches()
    for step in range(warmup + steps):
        if step == warmup:
            devices.synchronize(device)
            started = time.perf_counter()
        x, y = next(stream)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    devices.synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def lightning_images_per_s(mnist, device, batch_size, steps, warmup, precision):
    """Lightning's Trainer on PlainNet and the plain loop's DataLoader; None if Lightning is absent."""
    try:
        import lightning as L
    except ImportError:
        try:
            import pytorch_lightning as L
        except ImportError:
            return None

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = PlainNet()

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.001)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if trainer.global_step == warmup and not hasattr(self, "started"):  # index restarts each epoch
                devices.synchronize(device)
                self.started = time.perf_counter()

        def on_train_end(self, trainer, module):
            devices.synchronize(device)
            self.seconds = time.perf_counter() - self.started

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):  # its tips and banners, at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    loader = DataLoader(TensorDataset(mnist.train.images.float().div(255).unsqueeze(1), mnist.train.labels),
                        batch_size=batch_size, shuffle=True)
    timer = Timer()
    accelerator = {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")
    trainer = L.Trainer(accelerator=accelerator, devices=[device.index or 0] if device.type == "cuda" else 1,
                        max_steps=warmup + steps, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(Module(), loader)
    return steps * batch_size / timer.seconds


class StepTimer(Hook):
    """Times the loop from step ``warmup`` to the end, between device synchronisations."""

    def __init__(self, warmup):
        self.warmup = warmup

    def after_step(self, run):
        if run.global_step - run.start_step == self.warmup:
            devices.synchronize(run.device)
            self.started, self.first = time.perf_counter(), run.global_step

    def end(self, run):
        devices.synchronize(run.device)
        self.images_per_s = (run.global_step - self.first) * run.batch_size / (time.perf_counter() - self.started)


def package_images_per_s(mnist, device, preset, batch_size, steps, warmup, deterministic=False):
    """Estimator.train with the preset's recipe at ``batch_size``: every built-in hook (loss log,
    summaries, NaN guard, checkpoint saver) runs; the restore and final save are outside the window."""
    config = PRESETS[preset]
    run = RunConfig(**{**config.run.__dict__, "device": str(device), "deterministic": deterministic})
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, params=config.params, config=run)
        timer = StepTimer(warmup)
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=batch_size,
                                       num_epochs=None), steps=warmup + steps, hooks=[timer])
        return timer.images_per_s, estimator.describe()


def compiled_step_images_per_s(mnist, device, batch_size, steps, warmup):
    """The candidate for fewer launches a step: the network's training step (resident data, bf16
    autocast, fused SGD) eager, and under torch.compile(mode="reduce-overhead"), which replays it
    as a CUDA graph. The compile itself (tens of seconds) is outside the window."""
    images, labels = mnist.train.images.to(device), mnist.train.labels.to(device)
    rates = {}
    for name in ("eager", "reduce-overhead"):
        network = ConvNet().to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.001, fused=True)
        forward = network if name == "eager" else torch.compile(network, mode="reduce-overhead")
        order = torch.randperm(len(images), device=device)
        for step in range(warmup + steps):
            if step == warmup:
                devices.synchronize(device)
                started = time.perf_counter()
            index = order[(step * batch_size) % (len(images) - batch_size):][:batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(images[index]).float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        devices.synchronize(device)
        rates[name] = steps * batch_size / (time.perf_counter() - started)
    return rates


def preset_run(preset, device, data_dir, steps=None):
    """A preset trained from scratch and evaluated on the test set, as `cnn-mnist train` runs it."""
    config = PRESETS[preset].with_overrides(device=str(device), **({"steps": steps} if steps else {}))
    with tempfile.TemporaryDirectory() as model_dir:
        started = time.perf_counter()
        results = train_and_evaluate(config, model_dir, data_dir)
        wall_s = time.perf_counter() - started
        state = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(model_dir))
    return {"preset": preset, "steps": config.steps, "accuracy": results["accuracy"], "loss": results["loss"],
            "training_s": state["training_seconds"], "wall_s": wall_s}


def prediction_images_per_s(mnist, device, precision, rounds=5):
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, config=RunConfig(device=str(device), precision=precision))
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=100, num_epochs=None),
                        max_steps=1)
        predictor = Predictor(model_dir, device=str(device), precision=precision)
        input_fn = numpy_input_fn(mnist.test.images, batch_size=10_000, shuffle=False)
        results = {}
        for name, run in (("estimator_predict", lambda: sum(1 for _ in estimator.predict(input_fn))),
                          ("predictor", lambda: len(predictor.predict(mnist.test.images).classes))):
            run()  # warm-up (cuDNN picks its algorithms on the first batch)
            devices.synchronize(device)
            started = time.perf_counter()
            count = sum(run() for _ in range(rounds))
            results[name] = count / (time.perf_counter() - started)  # the answers are on the host: synced
        return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device to measure (default: cuda)")
    parser.add_argument("--data-dir", help="MNIST's directory (default: cnn-mnist's cache)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per throughput figure")
    parser.add_argument("--quick", action="store_true", help="tiny runs, to check the script itself")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = devices.resolve_device(args.device)
    steps, warmup = (5, 2) if args.quick else (args.steps, 30)
    tutorial_steps = 20 if args.quick else None
    seeds = [0] if args.quick else [0, 1, 2]
    mnist = load_mnist(args.data_dir)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result = {"device": devices.describe(device), "torch": torch.__version__, "python": platform.python_version(),
              "train_images_per_s": {}}
    for batch in BATCHES:
        preset = "tutorial" if batch == 100 else "fast"
        row = {"plain_loop_fp32": plain_loop_images_per_s(mnist, device, batch, steps, warmup)}
        for precision in ("32-true", "bf16-mixed"):
            row[f"lightning_{precision}"] = lightning_images_per_s(mnist, device, batch, steps, warmup, precision)
        row["cnn_mnist"], row["cnn_mnist_runs_as"] = package_images_per_s(mnist, device, preset, batch, steps, warmup)
        row["cnn_mnist_deterministic"], _ = package_images_per_s(mnist, device, preset, batch, steps, warmup,
                                                                 deterministic=True)
        result["train_images_per_s"][str(batch)] = row
        print(f"batch {batch}: {json.dumps(row)}", flush=True)
    if device.type == "cuda":
        result["compiled_step_images_per_s"] = compiled_step_images_per_s(mnist, device, 100, steps, warmup)
        print(f"compiled step: {json.dumps(result['compiled_step_images_per_s'])}", flush=True)
    result["tutorial"] = preset_run("tutorial", device, args.data_dir, tutorial_steps)
    print(f"tutorial: {json.dumps(result['tutorial'])}", flush=True)
    result["best"] = preset_run("best", device, args.data_dir, 20 if args.quick else None)
    print(f"best: {json.dumps(result['best'])}", flush=True)
    result["fast_time_to_99"] = [time_to_99(mnist, seed, device=str(device)) for seed in seeds]
    print(f"fast: {json.dumps(result['fast_time_to_99'])}", flush=True)
    result["predict_images_per_s"] = {precision: prediction_images_per_s(mnist, device, precision)
                                      for precision in ("fp32", "auto")}
    if device.type == "cuda":
        result["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20

    print(f"\ncnn-mnist on {result['device']}, torch {result['torch']}")
    print(f"{'training images/s':<34}" + "".join(f"{'batch ' + str(b):>16}" for b in BATCHES))
    names = ("plain_loop_fp32", "lightning_32-true", "lightning_bf16-mixed", "cnn_mnist", "cnn_mnist_deterministic")
    for name in names:
        cells = [result["train_images_per_s"][str(b)][name] for b in BATCHES]
        print(f"  {name:<32}" + "".join(f"{c:>16,.0f}" if c else f"{'(absent)':>16}" for c in cells))
    plain = result["train_images_per_s"]["100"]["plain_loop_fp32"]
    ours = result["train_images_per_s"]["100"]["cnn_mnist"]
    print(f"  cnn-mnist / plain loop at batch 100: {ours / plain:.2f}x")
    if "compiled_step_images_per_s" in result:
        rates = result["compiled_step_images_per_s"]
        print(f"  the bare step at batch 100, eager {rates['eager']:,.0f}, "
              f"torch.compile reduce-overhead {rates['reduce-overhead']:,.0f}")
    for run in (result["tutorial"], result["best"]):
        print(f"{run['preset']} preset, {run['steps']:,} steps: {run['training_s']:.1f} s of training "
              f"({run['wall_s']:.1f} s in all), test accuracy {run['accuracy']:.4f}")
    for run in result["fast_time_to_99"]:
        reached = f"{run['time_to_99_s']:.2f} s (step {run['step_at_99']})" if run["time_to_99_s"] else "not reached"
        print(f"fast preset, seed {run['seed']}: 99.0% after {reached}; final {run['final_accuracy']:.4f}")
    for precision, rates in result["predict_images_per_s"].items():
        rates_text = ", ".join(f"{name} {rate:,.0f} images/s" for name, rate in rates.items())
        print(f"prediction at batch 10,000, {precision}: {rates_text}")
    if "peak_gpu_memory_mib" in result:
        print(f"peak GPU memory: {result['peak_gpu_memory_mib']:,.0f} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
