"""Configuration as dataclasses: what the network learns with, how the Estimator runs, and the
named presets (recipes) the CLI trains. Every field says what it means; bad values fail early."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from cnn_mnist.data.augment import Augmentation
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.devices import check_device_name
from cnn_mnist.kernels.precision import PRECISIONS

OPTIMIZERS = ("sgd", "momentum", "adam")
INITIALIZERS = ("glorot", "pytorch")
LR_SCHEDULES = ("constant", "one_cycle")


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters of the model function (TensorFlow's ``params``)."""

    optimizer: str = "sgd"
    """One of sgd (plain gradient descent, the tutorial's), momentum, adam."""
    learning_rate: float = 0.001
    """Step size; the tutorial used 0.001 with plain SGD."""
    momentum: float = 0.9
    """Momentum coefficient, used only by the momentum optimizer."""
    dropout: float = 0.4
    """Fraction of the 1024 dense units dropped while training (TensorFlow's rate)."""
    lr_schedule: str = "constant"
    """constant (the tutorial's), or one_cycle: linear warm-up to learning_rate over the first
    warmup_fraction of the run, then linear decay to zero at the last step."""
    warmup_fraction: float = 0.2
    """Share of the run spent warming up, for lr_schedule one_cycle."""
    initializer: str = "glorot"
    """glorot: Glorot-uniform kernels and zero biases, as tf.layers; pytorch: PyTorch's defaults."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights, moved by (1 - ema_decay) toward them
    after every step; evaluate and predict then use the average (as tf.train.ExponentialMovingAverage
    was used). 0 = off."""
    label_smoothing: float = 0.0
    """Train towards (1 - x) on the true class and x/10 spread over all ten; 0 = off (the tutorial's)."""
    consistency: float = 0.0
    """Weight of a consistency loss (AugMix's, Hendrycks et al. 2020): every training image comes
    twice, clean and damaged by the augmentation's damage ingredients (twice the work a step), and
    the loss is the clean view's cross-entropy plus this times the Jensen-Shannon divergence between
    the two views' predictions: the damaged digits teach only that they are the same digit. 0 = off."""

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (math.isfinite(self.consistency) and self.consistency >= 0):
            raise ConfigError(f"consistency must be a finite number >= 0, got {self.consistency}")
        if self.initializer not in INITIALIZERS:
            raise ConfigError(f"initializer must be one of {', '.join(INITIALIZERS)}, got {self.initializer!r}")


@dataclass(frozen=True)
class RunConfig:
    """How the Estimator runs (TensorFlow's ``tf.estimator.RunConfig``)."""

    seed: int = 0
    """Seeds the initial weights, the data order and dropout; same seed, same run."""
    save_checkpoints_secs: float | None = 600
    """Seconds between checkpoints; None when saving by steps."""
    save_checkpoints_steps: int | None = None
    """Steps between checkpoints; when set, it replaces save_checkpoints_secs."""
    keep_checkpoint_max: int = 5
    """How many of the newest checkpoints to keep; older ones are deleted."""
    log_step_count_steps: int = 100
    """Log the loss and steps/s every this many steps."""
    save_summary_steps: int = 100
    """Write TensorBoard scalars every this many steps."""
    precision: str = "fp32"
    """fp32; bf16 or fp16 (autocast: convolutions and dense layers in 16 bits; fp16 with a gradient
    scaler); auto: bf16 where the CPU or GPU runs it natively, fp16 on GPUs without bf16, else fp32."""
    device: str = "auto"
    """Where to compute: auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:N or mps."""
    deterministic: bool = True
    """Use torch's deterministic algorithms (and no cuDNN autotuning): on a GPU, the same seed then
    gives the same weights run after run, and a resumed run the uninterrupted one's. On by default:
    on an H200 it cost nothing measurable (docs/gpu.md). CPU runs are deterministic either way."""
    cuda_graphs: bool = True
    """On a CUDA GPU, capture the training step (forward, backward, the optimizer, the weight
    average) as one CUDA graph after three eager steps and replay it: one launch a step instead of
    about eighty, several times the eager step's images/s (docs/performance.md). Used where
    it applies: one process, the sgd or adam optimizer (fused there), not fp16 (its gradient
    scaler decides on the host); elsewhere, and on other devices, the step runs eagerly."""

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

    steps: int = 20_000
    """Global step to train to (an absolute target: re-running never trains past it)."""
    batch_size: int = 100
    """Images per training step; under torchrun, all processes together (the global batch, shared evenly)."""
    train_on_all: bool = False
    """Train on all 60,000 training images instead of 55,000 (no validation split left)."""
    log_probabilities_every: int = 50
    """Log a batch's softmax probabilities every this many steps, as the tutorial did; 0 = off."""
    eval_every: int = 0
    """Evaluate on the validation split every this many steps and at the end; 0 = off."""
    params: ModelParams = field(default_factory=ModelParams)
    run: RunConfig = field(default_factory=RunConfig)
    augment: Augmentation = field(default_factory=Augmentation)
    """Random transforms of the training images (none in the tutorial)."""

    def __post_init__(self):
        if self.steps <= 0:
            raise ConfigError(f"steps must be a positive number, got {self.steps}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be a positive number, got {self.batch_size}")
        if self.eval_every < 0:
            raise ConfigError(f"eval-every must be 0 (off) or positive, got {self.eval_every}")
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

        Augmentation ranges are named ``augment_<field>`` (``augment_rotation=10``)."""
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


# What the world does to digits, in training (chosen on the validation split against MNIST-C's
# corruptions, docs/performance.md): a grey paper, fainter ink, pixel noise, an erased patch and
# hollow strokes, on half the images; the other half stay clean, which keeps clean accuracy.
ROBUST = Augmentation(brightness=0.5, contrast=0.5, noise=0.2, erase=0.3, outline=0.2, clean_share=0.5)

PRESETS: dict[str, TrainConfig] = {
    # The tutorial exactly: plain SGD at 0.001, batch 100, 20,000 steps, dropout 0.4. Validation
    # every 2,000 steps (~0.5 s each, 1% of the run; it changes no weight) gives the report and
    # TensorBoard a validation curve. bf16 where the CPU has it natively (1.7x the speed of fp32
    # here, the same test accuracy to 0.0001 on this recipe); --precision fp32 for TensorFlow's.
    "tutorial": TrainConfig(eval_every=2000, run=RunConfig(precision="auto")),
    # High accuracy in seconds: Adam with a one-cycle schedule over ~2.1 epochs of 256, weights
    # averaged over the last ~20 steps (it crosses 99% ~100 steps sooner than the raw weights),
    # bf16 where the CPU has it. ROBUST's changes (grey paper, faded ink, noise, erased patches,
    # hollow strokes) on a quarter of the images after the first epoch make it robust to MNIST-C's
    # corruptions (mean 0.85 -> 0.91 on validation), and it still crosses 99% where it did.
    # Tuned and measured in docs/performance.md.
    "fast": TrainConfig(
        steps=460, batch_size=256, log_probabilities_every=0, eval_every=100,
        params=ModelParams(optimizer="adam", learning_rate=6e-3, lr_schedule="one_cycle", warmup_fraction=0.1,
                           ema_decay=0.95),
        run=RunConfig(precision="auto"),
        # 460 steps: the first epoch clean (it crosses 99% as before), then a quarter of the images damaged.
        augment=dataclasses.replace(ROBUST, clean_share=0.75, damage_from_epoch=1.0),
    ),
    # The most accuracy from the same network in minutes: 20 epochs of 128 with each image
    # randomly rotated, scaled, sheared and shifted, Adam on a one-cycle schedule, label smoothing
    # and a weight average; each image also comes damaged by ROBUST's changes, and AugMix's
    # consistency loss teaches that the two views are one digit (the label comes from the clean
    # one): 1.6x the time of a step, which bought back the clean accuracy the damage had cost.
    # Chosen on the validation split; docs/train.md's "best" section and docs/performance.md
    # have the ablations.
    "best": TrainConfig(
        steps=8_600, batch_size=128, log_probabilities_every=0, eval_every=1000,
        params=ModelParams(optimizer="adam", learning_rate=3e-3, lr_schedule="one_cycle", warmup_fraction=0.2,
                           ema_decay=0.999, label_smoothing=0.1, consistency=1.0),
        run=RunConfig(precision="auto"),
        # clean_share plays no part with the consistency loss; --consistency 0 gives the half-damaged recipe
        augment=dataclasses.replace(ROBUST, rotation=10, scale=0.1, shear=10, shift=2),
    ),
}


def preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
