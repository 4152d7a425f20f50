"""What the network learns with: the model function's hyperparameters (TensorFlow's ``params``).
Every field says what it means; bad values fail early. How the Estimator runs, and the recipes,
are training's settings (training/config.py, training/presets.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cnn_mnist.data.datasets import DIGITS
from cnn_mnist.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "adam")
INITIALIZERS = ("glorot", "pytorch")
LR_SCHEDULES = ("constant", "one_cycle")
MAX_CLASSES = 1_000


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters of the model function (TensorFlow's ``params``)."""

    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    """sgd (plain, the tutorial's), momentum or adam."""
    learning_rate: float = field(default=0.001, metadata={"metavar": "LR"})
    """Optimizer step size; on resume, this run's value wins over the saved one."""
    momentum: float = field(default=0.9, metadata={"metavar": "M"})
    """Momentum coefficient of the momentum optimizer."""
    dropout: float = field(default=0.4, metadata={"metavar": "RATE"})
    """Fraction (TensorFlow's rate) of the 1024 dense units dropped while training."""
    lr_schedule: str = field(default="constant", metadata={"choices": LR_SCHEDULES})
    """constant (the tutorial's), or one_cycle: a linear warm-up to the learning rate over the run's first
    warmup_fraction (set by the preset), then a linear decay to 0 at the last step."""
    warmup_fraction: float = field(default=0.2, metadata={"flag": False})
    """Share of the run spent warming up, for lr_schedule one_cycle."""
    initializer: str = field(default="glorot", metadata={"choices": INITIALIZERS})
    """glorot (TensorFlow's: Glorot-uniform kernels, zero biases) or pytorch (PyTorch's layer defaults)."""
    ema_decay: float = field(default=0.0, metadata={"metavar": "D"})
    """Keep a moving average of the weights, moved 1 - D of the way toward them after every step (as
    tf.train.ExponentialMovingAverage); evaluate, predict, report, export and serve then use it; 0 turns it off."""
    label_smoothing: float = field(default=0.0, metadata={"metavar": "X"})
    """Train towards 1 - X on the true class and X/10 on each class; 0 turns it off."""
    consistency: float = field(default=0.0, metadata={"metavar": "W"})
    """Show each training image twice, clean and damaged by the augmentation's damage ingredients (twice the work a
    step; the augmentation's clean share then plays no part): the loss is the clean view's cross-entropy plus W times
    the Jensen-Shannon divergence between the two views' predictions, as AugMix trains (Hendrycks et al., 2020), so
    a damaged digit only has to read as the same digit; needs a damage ingredient; 0 turns it off."""
    classes: tuple[str, ...] = field(default=DIGITS, repr=False, metadata={"flag": False})  # logged apart
    """The name of each class, label i being classes[i]: MNIST's digits "0" to "9", or a picture folder's class
    folders (set from --data); the last layer has one output per class, and a checkpoint records them."""

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.learning_rate}")
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
        if not 2 <= len(self.classes) <= MAX_CLASSES or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"a model needs 2 to {MAX_CLASSES:,} classes, each named once; got {len(self.classes)}"
                              f"{'' if len(set(self.classes)) == len(self.classes) else ' with a name repeated'}")
        object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))  # a list from JSON too
        if self.initializer not in INITIALIZERS:
            raise ConfigError(f"initializer must be one of {', '.join(INITIALIZERS)}, got {self.initializer!r}")
