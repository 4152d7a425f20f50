"""cnn-mnist on one GPU, against a plain PyTorch loop and Lightning's Trainer measured in the same run.

Sections, each run on its own: an error in one is recorded in the JSON and the others go on.
- ``train_100``, ``train_256``: training images/s at batch 100 (the tutorial's) and 256 (the fast
  preset's) of the plain loop as pytorch/examples writes it (a DataLoader over CPU tensors,
  ``.to(device)`` per batch, fp32, SGD); Lightning's Trainer on the same network and DataLoader
  (fp32 and bf16-mixed); and cnn-mnist's Estimator.train (data resident on the device, the
  preset's precision, every built-in hook running): the step eager or replayed as a CUDA graph,
  each with and without --deterministic (graphs and deterministic are the defaults). Each cell
  is isolated too: Lightning failing loses only its cells.
- ``tutorial``, ``best``: the preset trained from scratch as `cnn-mnist train` runs it: training
  time and test accuracy.
- ``fast_time_to_99``: the fast preset's training time to 99.0% test accuracy, seeds 0-2
  (evaluated every 10 steps; evaluation pauses excluded, as benchmarks/speed.py measures it).
- ``predict``: images/s at batch 10,000, fp32 and the device's fast precision: ``network`` on
  test images already on the device (the GPU's figure), ``predictor`` from a host array to
  answers on the host (the user's figure: copy in, answers out), ``estimator_predict`` through
  Estimator.predict (checkpoint reload and hash, one dict per image).
- ``profile``: the tutorial's step at batch 100 under torch.profiler, eager and graphed: wall and
  GPU-busy microseconds a step, kernel launches a step, the costliest kernels and host calls.
- ``tutorial_eager``, ``fast_eager``, ``best_eager``: the presets as before the defaults (eager
  step, cuDNN autotuned), for comparison.
- ``compiled_step`` (last: a cold Inductor compile takes 30-120 s): the bare training step eager
  and under torch.compile(mode="reduce-overhead") (CUDA graphs of the network alone).
Every window is timed between device synchronisations, after a warm-up; each section records its
wall time and, on CUDA, its peak GPU memory.

The results go to --json (default gpu_speed.json), rewritten after every section, so a run cut
short keeps what finished. ``--skip-done`` reads that file and runs only the sections that have
no figures yet; ``--sections`` picks some; ``--budget-s`` starts no section that would end past
the budget (by the estimate beside each section); ``--fail SECTION`` makes one raise, to check
the isolation.

Usage: python benchmarks/gpu_speed.py [--device cuda] [--data-dir DIR] [--steps 300] [--quick]
       [--json PATH] [--sections a,b] [--skip-done] [--budget-s S]
(--quick: short runs that check the script on any device, a CPU included; its figures mean nothing.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PlainLoop, PlainNet, machine_record, plain_loader, time_to_99  # noqa: E402

from cnn_mnist import Estimator, RunConfig, load_mnist, numpy_input_fn  # noqa: E402
from cnn_mnist.experiment import train_and_evaluate  # noqa: E402
from cnn_mnist.kernels import devices  # noqa: E402
from cnn_mnist.kernels.precision import autocast, resolve_precision  # noqa: E402
from cnn_mnist.training.presets import PRESETS  # noqa: E402
from cnn_mnist.model.network import ConvNet  # noqa: E402
from cnn_mnist.training import checkpoints  # noqa: E402
from cnn_mnist.training.hooks import Hook  # noqa: E402
from cnn_mnist.use.predictor import Predictor  # noqa: E402

BATCHES = (100, 256)  # the tutorial's and the fast preset's


def plain_loop_images_per_s(mnist, device, batch_size, steps, warmup):
    """pytorch/examples' loop: a DataLoader of CPU float tensors, each batch copied to the device."""
    loop = PlainLoop(mnist.train.images, mnist.train.labels, batch_size, device)
    loop.run(warmup)
    devices.synchronize(device)
    started = time.perf_counter()
    loop.run(steps)
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
    loader = plain_loader(mnist.train.images, mnist.train.labels, batch_size)
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


def package_images_per_s(mnist, device, preset, batch_size, steps, warmup, deterministic=False, cuda_graphs=False,
                         hook=None):
    """Estimator.train with the preset's recipe at ``batch_size``: every built-in hook (loss log,
    summaries, NaN guard, checkpoint saver) runs; the restore and final save are outside the window."""
    config = PRESETS[preset]
    run = RunConfig(**{**config.run.__dict__, "device": str(device), "deterministic": deterministic,
                       "cuda_graphs": cuda_graphs})
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, params=config.params, config=run)
        timer = hook or StepTimer(warmup)
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=batch_size,
                                       num_epochs=None), steps=warmup + steps, hooks=[timer])
        return timer.images_per_s, estimator.describe()


class ProfileHook(StepTimer):
    """StepTimer under torch.profiler: where a step's time goes, on the host and on the device."""

    def after_step(self, run):
        super().after_step(run)
        if run.global_step - run.start_step == self.warmup:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if run.device.type == "cuda" else []))
            self.profiler.__enter__()

    def end(self, run):
        super().end(run)
        self.profiler.__exit__(None, None, None)
        steps = run.global_step - self.first
        events = self.profiler.key_averages()

        def device_us(event):
            return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)

        kernels = [e for e in events if device_us(e) > 0 and str(e.device_type).endswith("CUDA")]
        launch_calls = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        launches = sum(e.count for e in events if e.key in launch_calls)
        self.summary = {
            "wall_us_per_step": round(run.batch_size / self.images_per_s * 1e6, 1),
            "gpu_busy_us_per_step": round(sum(device_us(e) for e in kernels) / steps, 1),
            "kernel_launches_per_step": round(launches / steps, 1),
            "graph_launches_per_step": round(sum(e.count for e in events if e.key == "cudaGraphLaunch") / steps, 2),
            "top_gpu_us_per_step": {e.key[:60]: round(device_us(e) / steps, 1)
                                    for e in sorted(kernels, key=device_us, reverse=True)[:8]},
            "top_host_us_per_step": {e.key[:60]: round(e.self_cpu_time_total / steps, 1)
                                     for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]},
        }


def profile(mnist, device, steps, warmup):
    """The tutorial preset's step at batch 100, eager and graphed, under torch.profiler."""
    results = {}
    for name, graphs in (("eager", False), ("cuda_graphs", True)):
        hook = ProfileHook(warmup)
        package_images_per_s(mnist, device, "tutorial", 100, steps, warmup, cuda_graphs=graphs, hook=hook)
        results[name] = hook.summary
    return results


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


def preset_run(preset, device, data_dir, steps=None, **overrides):
    """A preset trained from scratch and evaluated on the test set, as `cnn-mnist train` runs it."""
    config = PRESETS[preset].with_overrides(device=str(device), **({"steps": steps} if steps else {}), **overrides)
    with tempfile.TemporaryDirectory() as model_dir:
        started = time.perf_counter()
        results = train_and_evaluate(config, model_dir, data_dir)
        wall_s = time.perf_counter() - started
        state = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(model_dir))
    return {"preset": preset, "steps": config.steps, "cuda_graphs": config.run.cuda_graphs,
            "deterministic": config.run.deterministic,
            "accuracy": results["accuracy"], "loss": results["loss"],
            "training_s": state["training_seconds"], "wall_s": wall_s}


def prediction_images_per_s(mnist, device, precision, rounds):
    """Three figures at batch 10,000, each the mean of ``rounds`` after one warm-up (cuDNN picks
    its algorithms on the first batch): the network alone on resident images, the Predictor from
    a host array, and Estimator.predict."""
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, config=RunConfig(device=str(device), precision=precision))
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=100, num_epochs=None),
                        max_steps=1)
        predictor = Predictor(model_dir, device=str(device), precision=precision)
        resident = torch.as_tensor(mnist.test.images).to(device)  # uint8, as the Predictor sends it
        resolved = resolve_precision(precision, device)

        def network():
            with torch.inference_mode(), autocast(resolved, device.type):
                classes = predictor.network(resident).float().softmax(dim=1).argmax(dim=1)
            devices.synchronize(device)  # the answers stay on the device: wait for them
            return len(classes)

        input_fn = numpy_input_fn(mnist.test.images, batch_size=10_000, shuffle=False)
        results = {"precision": resolved}
        for name, run in (("network", network),
                          ("predictor", lambda: len(predictor.predict(mnist.test.images).classes)),
                          ("estimator_predict", lambda: sum(1 for _ in estimator.predict(input_fn)))):
            run()
            devices.synchronize(device)
            started = time.perf_counter()
            count = sum(run() for _ in range(rounds))
            results[name] = count / (time.perf_counter() - started)  # answers on the host: synced
        return results


def cells(**measures):
    """Each measurement of a row on its own: a failing one records its error, the rest go on."""
    row = {}
    for name, measure in measures.items():
        try:
            row[name] = measure()
        except Exception as error:  # noqa: BLE001  (recorded: the point is to keep the other figures)
            row[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  {name} failed: {row[name]['error']}", flush=True)
    return row


def training_row(mnist, device, batch, steps, warmup):
    preset = "tutorial" if batch == 100 else "fast"
    row = cells(
        plain_loop_fp32=lambda: plain_loop_images_per_s(mnist, device, batch, steps, warmup),
        **{f"lightning_{p}": (lambda p=p: lightning_images_per_s(mnist, device, batch, steps, warmup, p))
           for p in ("32-true", "bf16-mixed")},
        cnn_mnist_eager=lambda: package_images_per_s(mnist, device, preset, batch, steps, warmup),
        cnn_mnist_eager_deterministic=lambda: package_images_per_s(mnist, device, preset, batch, steps, warmup,
                                                             deterministic=True)[0],
        cnn_mnist_graphs=lambda: package_images_per_s(mnist, device, preset, batch, steps, warmup,
                                                      cuda_graphs=True)[0],
        cnn_mnist_graphs_deterministic=lambda: package_images_per_s(mnist, device, preset, batch, steps, warmup,
                                                                    deterministic=True, cuda_graphs=True)[0])
    if isinstance(row["cnn_mnist_eager"], tuple):
        row["cnn_mnist_eager"], row["cnn_mnist_runs_as"] = row["cnn_mnist_eager"]
    return row


# What the defaults replaced (measured against them): the step launched op by op, cuDNN autotuned.
EAGER = {"cuda_graphs": False, "deterministic": False}


def fast_runs(args, **overrides):
    """time_to_99 of the fast preset (with ``overrides``), seeds 0-2."""
    config = PRESETS["fast"].with_overrides(**overrides, **({"steps": 20} if args.quick else {}))
    return [time_to_99(args.mnist, seed, device=str(args.device_), config=config)
            for seed in ([0] if args.quick else [0, 1, 2])]


# (name, rough seconds on an H200 for the budget, what it measures): run in this order, compile last.
SECTIONS = (
    ("train_100", 40, lambda a: training_row(a.mnist, a.device_, 100, a.timed_steps, a.warmup)),
    ("train_256", 40, lambda a: training_row(a.mnist, a.device_, 256, a.timed_steps, a.warmup)),
    ("tutorial", 15, lambda a: preset_run("tutorial", a.device_, a.data_dir, 20 if a.quick else None)),
    ("fast_time_to_99", 10, lambda a: fast_runs(a)),
    ("predict", 15, lambda a: {p: prediction_images_per_s(a.mnist, a.device_, p, 2 if a.quick else 20)
                               for p in ("fp32", "auto")}),
    ("best", 30, lambda a: preset_run("best", a.device_, a.data_dir, 20 if a.quick else None)),
    ("profile", 20, lambda a: profile(a.mnist, a.device_, a.timed_steps, a.warmup)),
    ("tutorial_eager", 80, lambda a: preset_run("tutorial", a.device_, a.data_dir, 20 if a.quick else None, **EAGER)),
    ("fast_eager", 15, lambda a: fast_runs(a, **EAGER)),
    ("best_eager", 70, lambda a: preset_run("best", a.device_, a.data_dir, 20 if a.quick else None, **EAGER)),
    ("compiled_step", 150, lambda a: compiled_step_images_per_s(a.mnist, a.device_, 100, a.timed_steps, a.warmup)),
)


def write_json(path, result):
    """Rewritten whole after each section, through a temporary file: a kill leaves the last complete one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(result, file, indent=1)
    os.replace(temporary, path)


def same_machine(earlier, now) -> bool:
    """Whether figures measured then stand for this run: the same machine record, date aside."""
    return {**(earlier or {}), "date": None} == {**now, "date": None}


def done(entry):
    return isinstance(entry, dict) and "result" in entry and "error" not in entry


def run_sections(args, result):
    started = time.monotonic()
    for name, estimate_s, measure in SECTIONS:
        if name not in args.sections or (args.skip_done and done(result["sections"].get(name))):
            continue
        elapsed = time.monotonic() - started
        if args.budget_s is not None and elapsed + (0 if args.quick else estimate_s) > args.budget_s:
            result["sections"][name] = {"skipped": f"time budget: {elapsed:.0f} s of {args.budget_s:.0f} s used, "
                                                   f"~{estimate_s} s needed"}
            print(f"{name}: skipped, {result['sections'][name]['skipped']}", flush=True)
            write_json(args.json, result)
            continue
        if args.device_.type == "cuda":
            torch.cuda.reset_peak_memory_stats(args.device_)
        began = time.perf_counter()
        try:
            if name == args.fail:
                raise RuntimeError(f"--fail {name}: this section made to fail, to check the others go on")
            entry = {"result": measure(args)}
        except Exception as error:  # noqa: BLE001  (recorded in the JSON: the next section still runs)
            entry = {"error": f"{type(error).__name__}: {error}",
                     "traceback": traceback.format_exc(limit=-8).splitlines()[-12:]}
        entry["seconds"] = round(time.perf_counter() - began, 2)
        if args.device_.type == "cuda":
            entry["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(args.device_) / 2**20, 1)
        result["sections"][name] = entry
        shown = entry.get("error") or json.dumps(entry["result"])
        print(f"{name} ({entry['seconds']:.1f} s){' FAILED' if 'error' in entry else ''}: {shown}", flush=True)
        write_json(args.json, result)


def figure(result, name):
    entry = result["sections"].get(name, {})
    return entry.get("result") if done(entry) else None


def print_table(result):
    """The figures that came back, as a table; a missing section says why in one line."""
    env = result["environment"]
    print(f"\ncnn-mnist on {env['device']}, torch {env['torch']}, CUDA {env.get('cuda', '-')}, "
          f"driver {env.get('driver', '-')}")
    for name, entry in result["sections"].items():
        if not done(entry):
            print(f"  {name}: {entry.get('error') or entry.get('skipped')}")
    rows = {b: figure(result, f"train_{b}") for b in BATCHES}
    if any(rows.values()):
        print(f"{'training images/s':<34}" + "".join(f"{'batch ' + str(b):>16}" for b in BATCHES))
        for name in ("plain_loop_fp32", "lightning_32-true", "lightning_bf16-mixed", "cnn_mnist_eager",
                     "cnn_mnist_eager_deterministic", "cnn_mnist_graphs", "cnn_mnist_graphs_deterministic"):
            values = [(rows[b] or {}).get(name) for b in BATCHES]
            print(f"  {name:<32}" + "".join(f"{v:>16,.0f}" if isinstance(v, (int, float)) else f"{'-':>16}"
                                            for v in values))
        row = rows[100] or {}
        ours = "cnn_mnist_graphs_deterministic"  # the defaults
        if all(isinstance(row.get(k), (int, float)) for k in (ours, "plain_loop_fp32")):
            print(f"  cnn-mnist (its defaults) / plain loop at batch 100: {row[ours] / row['plain_loop_fp32']:.2f}x")
    rates = figure(result, "compiled_step")
    if rates:
        print(f"  the bare step at batch 100, eager {rates['eager']:,.0f}, "
              f"torch.compile reduce-overhead {rates['reduce-overhead']:,.0f}")
    for name in ("tutorial", "best", "tutorial_eager", "best_eager"):
        run = figure(result, name)
        if run:
            print(f"{name}: {run['steps']:,} steps, {run['training_s']:.1f} s of training "
                  f"({run['wall_s']:.1f} s in all), test accuracy {run['accuracy']:.4f}")
    for name in ("fast_time_to_99", "fast_eager"):
        for run in figure(result, name) or []:
            reached = (f"{run['time_to_99_s']:.2f} s (step {run['step_at_99']})" if run["time_to_99_s"]
                       else "not reached")
            print(f"{name}, seed {run['seed']}: 99.0% after {reached}; final {run['final_accuracy']:.4f}")
    for name, summary in (figure(result, "profile") or {}).items():
        print(f"profile, tutorial step at batch 100, {name}: {json.dumps(summary)}")
    for precision, rates in (figure(result, "predict") or {}).items():
        print(f"prediction at batch 10,000, {precision} ({rates['precision']}): "
              + ", ".join(f"{k} {v:,.0f} images/s" for k, v in rates.items() if k != "precision"))
    peaks = {n: e["peak_gpu_memory_mib"] for n, e in result["sections"].items() if "peak_gpu_memory_mib" in e}
    if peaks:
        print("peak GPU memory (MiB): " + ", ".join(f"{n} {v:,.0f}" for n, v in peaks.items()))


def main():
    names = [name for name, _, _ in SECTIONS]
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device to measure (default: cuda)")
    parser.add_argument("--data-dir", help="MNIST's directory (default: cnn-mnist's cache)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per throughput figure")
    parser.add_argument("--quick", action="store_true", help="tiny runs, to check the script itself")
    parser.add_argument("--json", default="gpu_speed.json", help="where the results go (rewritten each section)")
    parser.add_argument("--sections", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--skip-done", action="store_true", help="keep the sections --json already has figures of")
    parser.add_argument("--budget-s", type=float, help="start no section that would end past this many seconds")
    parser.add_argument("--fail", choices=names, help="make this section raise (checks that the others go on)")
    args = parser.parse_args()
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(names))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    logging.basicConfig(level=logging.WARNING)
    args.device_ = devices.resolve_device(args.device)
    args.timed_steps, args.warmup = (5, 2) if args.quick else (args.steps, 30)
    result = {"sections": {}, "environment": machine_record(args.device_), "quick": args.quick}
    if args.skip_done and os.path.exists(args.json):
        with open(args.json) as file:
            earlier = json.load(file)
        if (same_machine(earlier.get("environment"), result["environment"])
                and earlier.get("quick") == result["quick"]):
            result = earlier  # its sections with figures are kept
        else:
            print(f"--skip-done: {args.json} holds another machine's or mode's figures; measuring anew", flush=True)
    try:
        args.mnist = load_mnist(args.data_dir)
    except Exception as error:  # every section needs MNIST: say so in the JSON, as a section would
        result["data_error"] = f"{type(error).__name__}: {error}"
        write_json(args.json, result)
        sys.exit(f"gpu_speed.py: no MNIST, so no figures: {result['data_error']}")
    run_sections(args, result)
    print_table(result)
    failed = [name for name in args.sections if "error" in result["sections"].get(name, {})]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
