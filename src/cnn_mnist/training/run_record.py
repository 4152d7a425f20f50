"""The run record: the full configuration a model directory was trained with (and the software
that trained it), as ``config.json`` beside its checkpoints. ``train`` writes it; ``evaluate`` and
``report`` read it."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import torch

from cnn_mnist.version import __version__
from cnn_mnist.training.config import TrainConfig
from cnn_mnist.files import write_atomically
from cnn_mnist.training.hooks import Hook

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"


class RecordRunConfigHook(Hook):
    """Writes config.json when training begins: inside the model directory's lock, so a train
    that is refused (or has nothing to do) leaves the running one's record alone."""

    chief_only = True

    def __init__(self, config: TrainConfig, preset: str | None):
        self.config, self.preset = config, preset

    def begin(self, run):
        write_run_config(run.model_dir, self.config, self.preset)


def write_run_config(model_dir: str | os.PathLike, config: TrainConfig, preset: str | None) -> Path:
    """Record the run's full configuration (and the software that ran it) in the model directory."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    record = {"preset": preset, **config.to_dict(),
              "versions": {"cnn_mnist": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    text = json.dumps(record, indent=2) + "\n"
    log.info("Run configuration: %s", json.dumps(record))
    write_atomically(model_dir / CONFIG_NAME, lambda temp: temp.write_text(text))
    return model_dir / CONFIG_NAME


def read_run_config(model_dir: str | os.PathLike) -> TrainConfig | None:
    """The configuration the directory was last trained with, if it records one."""
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    record.pop("preset", None)
    record.pop("versions", None)
    return TrainConfig.from_dict(record)
