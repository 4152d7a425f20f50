"""The main job, as the tutorial's ``main()`` ran it: load MNIST (or ``--data``'s folder of
pictures), train to the target step, evaluate on the test set. The CLI's ``train`` is this function."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cnn_mnist.data.datasets import classes_of, load_dataset
from cnn_mnist.data.inputs import numpy_input_fn
from cnn_mnist.errors import ConfigError
from cnn_mnist.training.config import TrainConfig
from cnn_mnist.training import distributed
from cnn_mnist.training.estimator import Estimator
from cnn_mnist.training.hooks import ProbabilitiesLogHook, ProgressHook, ValidationHook
from cnn_mnist.training.run_record import RecordRunConfigHook

log = logging.getLogger(__name__)


def train_and_evaluate(config: TrainConfig, model_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                       preset: str | None = None, progress: bool = False) -> dict:
    """Train ``model_dir`` up to ``config.steps``, then evaluate on the test set and return the result.

    ``progress`` adds bars (download, training, evaluation) on a terminal and periodic plain
    lines elsewhere. Under torchrun (inside ``distributed.process_group()``) every process runs
    this; ``config.batch_size`` is then the global batch, shared evenly among them.
    """
    processes = distributed.world_size()
    if config.batch_size % processes:
        nearest = [size for size in (config.batch_size // processes * processes,) if size] + \
            [(config.batch_size // processes + 1) * processes]
        raise ConfigError(f"batch size {config.batch_size} (the global batch) does not divide evenly among "
                          f"{processes} processes; use a multiple of {processes}, such as "
                          f"{' or '.join(map(str, nearest))}")
    if processes > 1:
        log.info("Global batch %d: %d images per process", config.batch_size, config.batch_size // processes)
    if config.data != "mnist":  # recorded whole in config.json, so evaluate finds it from anywhere
        config = config.with_overrides(data=str(Path(config.data).expanduser().absolute()))
    classes = classes_of(config.data)  # the folders' names: the network's outputs, before any picture is read
    if classes != config.params.classes:
        config = config.with_overrides(classes=classes)
        log.info("Training on %s: %d classes (%s)", config.data, len(classes), ", ".join(classes))
    # The Estimator first: a device the machine lacks is an error before the data is read.
    classifier = Estimator(model_dir=model_dir, params=config.params, config=config.run)
    data = load_dataset(config.data, data_dir, train_on_all=config.train_on_all, prepare=config.prepare,
                        test_fraction=config.test_fraction, seed=config.run.seed, progress=progress)
    train_input_fn = numpy_input_fn(data.train.images, data.train.labels, batch_size=config.batch_size,
                                    num_epochs=None, shuffle=True, seed=config.run.seed,
                                    augmentation=config.augment, paired=bool(config.params.consistency))
    hooks = [RecordRunConfigHook(config, preset)]
    if progress:
        hooks.append(ProgressHook())
    if config.log_probabilities_every:
        hooks.append(ProbabilitiesLogHook(config.log_probabilities_every))
    if config.eval_every:
        hooks.append(ValidationHook(config.eval_every, classifier.input_fn_for(data.validation)))
    classifier.train(train_input_fn, max_steps=config.steps, hooks=hooks)
    # In fp32 whatever the training precision, as `cnn-mnist evaluate` runs: one checkpoint, one answer.
    return classifier.evaluate(classifier.input_fn_for(data.test), progress=progress, precision="fp32")
