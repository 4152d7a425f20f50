"""How training runs: the Estimator's settings (TensorFlow's ``RunConfig``) and one training job
as the CLI runs it (a preset plus overrides). Every field says what it means; bad values fail early."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cnn_mnist.data.augment import Augmentation
from cnn_mnist.data.datasets import DEFAULT_TEST_FRACTION
from cnn_mnist.data.folders import PREPARE_MODES
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.devices import check_device_name
from cnn_mnist.kernels.precision import PRECISIONS
from cnn_mnist.model.config import ModelParams


@dataclass(frozen=True)
class RunConfig:
    """How the Estimator runs (TensorFlow's ``tf.estimator.RunConfig``)."""

    seed: int = field(default=0, metadata={"metavar": "N"})
    """Seeds the initial weights, the data order, dropout and augmentation."""
    save_checkpoints_secs: float | None = field(default=600, metadata={"metavar": "S"})
    """Seconds between checkpoints, unless saving by steps."""
    save_checkpoints_steps: int | None = field(default=None, metadata={"metavar": "N"})
    """Steps between checkpoints; when set, it replaces the seconds between them."""
    keep_checkpoint_max: int = field(default=5, metadata={"metavar": "N"})
    """How many of the newest checkpoints to keep."""
    log_step_count_steps: int = field(default=100, metadata={"flag": False})
    """Log the loss and steps/s every this many steps."""
    save_summary_steps: int = field(default=100, metadata={"flag": False})
    """Write TensorBoard scalars every this many steps."""
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS})
    """fp32; bf16 or fp16 autocast (the convolutions and dense layers in 16 bits; fp16 with a gradient scaler); auto:
    bf16 where the CPU or GPU runs it natively, fp16 on GPUs without bf16, else fp32."""
    device: str = field(default="auto", metadata={"metavar": "DEVICE"})
    """auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps; torchrun gives each process its own GPU."""
    # On by default: on an H200 it cost nothing measurable (docs/gpu.md).
    deterministic: bool = True
    """Use torch's deterministic algorithms (and no cuDNN autotuning): on a GPU, the same seed then gives the same
    weights, and kill-and-resume the uninterrupted run's; CPU runs are deterministic anyway."""
    # Captured after three eager steps: one launch a step instead of about eighty (docs/performance.md). The
    # optimizers are fused there; fp16's gradient scaler decides on the host, so its step cannot be captured.
    cuda_graphs: bool = True
    """On a CUDA GPU, replay the training step (forward, backward, the optimizer, the weight average) as one captured
    CUDA graph, several times the eager step's images/s; it applies to one process, the sgd or adam optimizer, not
    fp16; elsewhere the step runs eagerly."""

    def __post_init__(self):
        if self.save_checkpoints_steps is not None:
            if self.save_checkpoints_steps <= 0:
                raise ConfigError(f"save_checkpoints_steps must be positive, got {self.save_checkpoints_steps}")
            object.__setattr__(self, "save_checkpoints_secs", None)
        elif self.save_checkpoints_secs is None or not self.save_checkpoints_secs > 0:
            raise ConfigError("save_checkpoints_secs must be positive (or set save_checkpoints_steps)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check_device_name(self.device)
        for name in ("keep_checkpoint_max", "log_step_count_steps", "save_summary_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """One training job as the CLI runs it: a preset, plus any flags that override it."""

    data: str = field(default="mnist", metadata={"metavar": "DATA"})
    """What to train on: mnist (the tutorial's), or a folder with one subfolder of pictures per class, the subfolder's
    name being the class's (any picture Pillow reads, any size); its train/ and test/ folders where it has both, else
    a stratified test-fraction of each class held out as the test set; the same share of the rest is the validation
    split."""
    prepare: str = field(default="auto", metadata={"choices": PREPARE_MODES})
    """How a folder's pictures become 28x28: auto keeps a 28x28 greyscale picture as it is (white on black, as
    MNIST's) and prepares any other as predict does (ink found, cropped to 20 px, centred); mnist prepares every
    picture; as-is takes 28x28 pictures only, made greyscale."""
    test_fraction: float = field(default=DEFAULT_TEST_FRACTION, metadata={"metavar": "F"})
    """Share of each class of a folder held out as its test set, drawn with the seed (a folder with train/ and test/
    is split as given)."""
    steps: int = field(default=20_000, metadata={"metavar": "N"})
    """Global step to train to: an absolute target, so a re-run never trains past it."""
    batch_size: int = field(default=100, metadata={"metavar": "N"})
    """Images per step; under torchrun, all processes together: the global batch, shared evenly."""
    train_on_all: bool = field(default=False, metadata={"negatable": False})
    """Train on all 60,000 training images instead of 55,000 (for a folder, on its validation split too): the
    validation split becomes training data, so validation during training is turned off (a non-zero eval-every
    with it is an error)."""
    log_probabilities_every: int = field(default=50, metadata={"metavar": "N"})
    """Log a training batch's softmax probabilities every N steps, as the tutorial did; 0 turns it off."""
    eval_every: int = field(default=0, metadata={"metavar": "N"})
    """Evaluate on the 5,000 validation images every N steps and at the end (logged, and in TensorBoard under
    eval_validation/); it changes no weight; 0 turns it off."""
    params: ModelParams = field(default_factory=ModelParams)
    """Hyperparameters of the model function (TensorFlow's params)."""
    run: RunConfig = field(default_factory=RunConfig)
    """How the Estimator runs (TensorFlow's RunConfig)."""
    augment: Augmentation = field(default_factory=Augmentation)
    """Random transforms of the training images (none in the tutorial)."""

    def __post_init__(self):
        if self.steps <= 0:
            raise ConfigError(f"steps must be a positive number, got {self.steps}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be a positive number, got {self.batch_size}")
        if self.eval_every < 0:
            raise ConfigError(f"eval-every must be 0 (off) or positive, got {self.eval_every}")
        if self.prepare not in PREPARE_MODES:
            raise ConfigError(f"prepare must be one of {', '.join(PREPARE_MODES)}, got {self.prepare!r}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test-fraction must be between 0 and 1, got {self.test_fraction}")
        if self.eval_every and self.train_on_all:
            raise ConfigError("eval-every needs the validation split, which --train-on-all trains on; drop one")
        if self.params.consistency and not self.augment.damages:
            raise ConfigError("consistency compares each image with its damaged view: it needs a damage ingredient "
                              "(--augment-brightness, -contrast, -noise, -stroke, -erase or -outline)")
        if self.log_probabilities_every < 0:
            raise ConfigError(
                f"log-probabilities-every must be 0 (off) or positive, got {self.log_probabilities_every}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        params = ModelParams(**values.pop("params", {}))
        run = RunConfig(**values.pop("run", {}))
        augment = Augmentation(**values.pop("augment", {}))
        return cls(**values, params=params, run=run, augment=augment)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with fields replaced by name, wherever they live (``learning_rate=0.01, steps=5``).

        Augmentation ranges are named ``augment_<field>`` (``augment_rotation=10``). Training on all
        images turns this config's validation off, unless ``eval_every`` is given too (then it is an error)."""
        own = {f.name for f in dataclasses.fields(self)}
        sections = {"params": {f.name for f in dataclasses.fields(ModelParams)},
                    "run": {f.name for f in dataclasses.fields(RunConfig)},
                    "augment": {f"augment_{f.name}" for f in dataclasses.fields(Augmentation)}}
        top, nested = {}, {"params": {}, "run": {}, "augment": {}}
        for name, value in overrides.items():
            section = next((s for s, names in sections.items() if name in names), None)
            if section == "augment":
                nested[section][name.removeprefix("augment_")] = value
            elif section is not None:
                nested[section][name] = value
            elif name in own:
                top[name] = value
            else:
                raise ConfigError(f"unknown setting {name!r}")
        if top.get("train_on_all"):
            top.setdefault("eval_every", 0)  # the validation split is part of training now
        run_values = nested["run"]
        if "save_checkpoints_secs" in run_values and "save_checkpoints_steps" not in run_values:
            run_values["save_checkpoints_steps"] = None  # an explicit seconds flag switches back to time
        return dataclasses.replace(
            self,
            **top,
            params=dataclasses.replace(self.params, **nested["params"]),
            run=dataclasses.replace(self.run, **run_values),
            augment=dataclasses.replace(self.augment, **nested["augment"]),
        )
