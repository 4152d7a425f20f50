"""What several benchmarks share: the plain network they time cnn-mnist against, the fast preset's
time to 99% (on any device), and the record of the machine each JSON line ends with.

Import it from a script in this folder (the folder is on sys.path when the script runs)."""

from __future__ import annotations

import os
import platform
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

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
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(self.dropout(F.relu(self.fc1(torch.flatten(x, 1)))))


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


def machine_record() -> dict:
    """Where a figure was measured, for the end of a benchmark's JSON line."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "cpu": devices.describe(torch.device("cpu"))}
