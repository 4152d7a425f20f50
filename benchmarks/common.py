"""What several benchmarks share: the plain PyTorch loop they time cnn-mnist against, the fast
preset's time to 99% (on any device), a `cnn-mnist` command timed with its peak memory, and the
record of the machine each JSON line ends with.

Import it from a script in this folder (the folder is on sys.path when the script runs)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_mnist import Estimator, RunConfig, numpy_input_fn
from cnn_mnist.kernels import devices
from cnn_mnist.training.presets import PRESETS
from cnn_mnist.training.hooks import ValidationHook


class PlainNet(nn.Module):
    """The tutorial network as a plain PyTorch example would write it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.dropout = nn.Dropout(0.4)
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        return self.fc2(self.dropout(F.relu(self.fc1(torch.flatten(x, 1)))))


def plain_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> DataLoader:
    """pytorch/examples' input: a shuffled DataLoader over a TensorDataset of float images in [0, 1]
    on the host (a float copy of the whole training set, made once)."""
    return DataLoader(TensorDataset(images.float().div(255).unsqueeze(1), labels), batch_size=batch_size,
                      shuffle=True)


class PlainLoop:
    """The baseline: PlainNet trained as pytorch/examples trains it (eager fp32, SGD at the
    tutorial's 0.001, PyTorch's defaults), each batch copied to ``device`` as it is used."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100, device="cpu"):
        self.device = torch.device(device)
        self.loader = plain_loader(images, labels, batch_size)
        self.model = PlainNet().to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.001)
        self.model.train()
        self.batches = self._endless()

    def _endless(self):
        while True:
            yield from self.loader

    def run(self, steps: int) -> int:
        """``steps`` training steps; returns how many images they took (the epoch's last batch
        may be short). On a GPU the steps may still be running: synchronise before reading a clock."""
        seen = 0
        for _ in range(steps):
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)  # no copy on the CPU
            self.optimizer.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()
            seen += len(y)
        return seen


def time_to_99(mnist, seed: int = 0, every: int = 10, device: str = "auto", config=None) -> dict:
    """The fast preset (or ``config``) from scratch, its (averaged) weights evaluated on the 10,000
    test images every ``every`` steps; the figure is training wall time, evaluation pauses excluded
    (the hook synchronises a GPU first), at the first evaluation at or above 99.0%."""
    config = config or PRESETS["fast"]
    with tempfile.TemporaryDirectory() as model_dir:
        estimator = Estimator(model_dir=model_dir, params=config.params,
                              config=RunConfig(**{**config.run.__dict__, "seed": seed, "device": device}))
        train_fn = numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=config.batch_size,
                                  num_epochs=None, seed=seed, augmentation=config.augment)
        test_fn = numpy_input_fn(mnist.test.images, mnist.test.labels, shuffle=False, num_epochs=1,
                                 batch_size=devices.inference_batch_size(estimator.device))
        hook = ValidationHook(every, test_fn, name="test")
        estimator.train(train_fn, max_steps=config.steps, hooks=[hook])
    first = next((h for h in hook.history if h["accuracy"] >= 0.99), None)
    return {"seed": seed, "time_to_99_s": first and first["training_s"], "step_at_99": first and first["global_step"],
            "final_accuracy": hook.history[-1]["accuracy"], "training_s": hook.history[-1]["training_s"],
            "steps": config.steps, "batch_size": config.batch_size}


def run_cli(*args: str) -> tuple[dict, float, float]:
    """``cnn-mnist ARGS -q --json`` in a fresh process, as a user runs it: the result it prints,
    its wall time in seconds and its peak resident memory in MiB (data, model, optimizer, hooks)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen([sys.executable, "-m", "cnn_mnist", *args, "-q", "--json"],
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
        output = process.stdout.read()
        # wait4 gives this child's own peak; RUSAGE_CHILDREN would be the largest of every child
        # waited for so far (the benchmark's other processes too).
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"cnn-mnist {' '.join(args)} failed:\n{errors.read()}")
    return json.loads(output.strip().splitlines()[-1]), wall_s, usage.ru_maxrss / 1024  # Linux reports KiB


def machine_record(device: torch.device | str = "cpu") -> dict:
    """Where and when a figure was measured, for the end of a benchmark's JSON line: the CPU, its
    cores and torch's threads, the versions, the device it ran on, and for CUDA the toolkit, cuDNN,
    compute capability and driver. ``date`` is the one field two runs on one machine differ in."""
    device = torch.device(device)
    record = {"cpu": devices.cpu_name(), "arch": platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "device": devices.describe(device), "torch": torch.__version__,
              "python": platform.python_version()}
    if device.type == "cuda":
        record.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                      capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                      driver=_nvidia_driver(device))
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return record


def _nvidia_driver(device: torch.device) -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({type(error).__name__})"
