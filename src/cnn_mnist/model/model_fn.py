"""The model function: one function that serves TRAIN, EVAL and PREDICT, as the tutorial's
``cnn_model_fn`` did, and the optimizers it can train with."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cnn_mnist.data.augment import views_as_batch
from cnn_mnist.model.config import ModelParams


class Mode(str, enum.Enum):
    """tf.estimator.ModeKeys: what the model function is asked to build."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


@dataclass
class EstimatorSpec:
    """What the model function returns for one batch.

    ``predictions`` always holds ``classes`` (N,) and ``probabilities`` (N, 10). ``loss`` is
    the batch-mean loss (TRAIN and EVAL). ``eval_metrics`` holds per-example values whose
    mean over the whole split is the metric (EVAL only).
    """

    mode: Mode
    predictions: dict[str, torch.Tensor]
    loss: torch.Tensor | None = None
    eval_metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def cnn_model_fn(network: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, mode: Mode,
                 params: ModelParams | None = None) -> EstimatorSpec:
    """The tutorial's ``cnn_model_fn(features, labels, mode)``, with the network passed in.

    The Estimator owns the network's weights (they persist across calls and checkpoints)
    and the optimizer; this function says what each mode computes from them. ``params``, which
    the Estimator passes when a model function takes it (as TensorFlow's did), may ask for
    label smoothing; it applies to the training loss only, so evaluation losses stay comparable.

    A training batch may hold several views of each image, (N, views, 1, 28, 28) (see
    ``augment_views``), the first one clean: the loss is then its cross-entropy alone plus
    ``params.consistency`` times the Jensen-Shannon divergence among the views' predictions (as
    AugMix trains), and the predictions are the first view's.
    """
    network.train(mode == Mode.TRAIN)  # dropout only while training
    views = images.shape[1] if mode == Mode.TRAIN and images.dim() == 5 else 1
    if views > 1:
        images = views_as_batch(images)  # one pass for every view
    logits = network(images).float()  # (N, 10); under bf16 autocast, softmax and loss still in fp32
    if views > 1:
        by_view, logits = logits.view(views, -1, logits.shape[-1]), logits[:len(labels)]
    predictions = {
        "classes": logits.argmax(dim=1),
        "probabilities": torch.softmax(logits, dim=1),
    }
    if mode == Mode.PREDICT:
        return EstimatorSpec(mode, predictions)

    if mode == Mode.TRAIN:
        smoothing = params.label_smoothing if params is not None else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)  # sparse softmax CE, batch mean
        if views > 1 and params is not None and params.consistency:
            loss = loss + params.consistency * jensen_shannon(by_view)
        return EstimatorSpec(mode, predictions, loss)
    loss = F.cross_entropy(logits, labels)

    correct = (predictions["classes"] == labels).float()  # (N,)
    return EstimatorSpec(mode, predictions, loss, eval_metrics={"accuracy": correct})


def jensen_shannon(logits: torch.Tensor) -> torch.Tensor:
    """(views, N, classes) logits -> the batch-mean Jensen-Shannon divergence among each example's
    views' softmax distributions: the mean KL divergence of each from their mixture (AugMix's
    consistency loss). 0 when the views agree; at most log(views)."""
    log_p = torch.log_softmax(logits, dim=-1)
    # log of the mixture, clamped as AugMix does so one confident view cannot make it -inf
    log_mixture = torch.logsumexp(log_p, dim=0).sub(math.log(len(logits))).clamp(min=math.log(1e-7))
    return (log_p.exp() * (log_p - log_mixture)).sum(-1).mean()


def build_optimizer(parameters, params: ModelParams) -> torch.optim.Optimizer:
    """The optimizer ``params.optimizer`` names, with TensorFlow 1.x's defaults where they differ."""
    parameters = list(parameters)
    # On a GPU, plain SGD runs fused: one kernel for every weight, and under fp16 the gradient
    # scaler's overflow check then stays on the device instead of a host sync every step. Not
    # with momentum: fused SGD makes its momentum buffers uninitialised and skips writing them on
    # a step whose gradients overflowed, which fp16's first steps often do (then NaN weights).
    fused = True if parameters and parameters[0].device.type == "cuda" else None  # None: torch's choice
    if params.optimizer == "sgd":  # tf.train.GradientDescentOptimizer
        return torch.optim.SGD(parameters, lr=params.learning_rate, fused=fused)
    if params.optimizer == "momentum":  # tf.train.MomentumOptimizer (not Nesterov)
        return torch.optim.SGD(parameters, lr=params.learning_rate, momentum=params.momentum)
    if params.optimizer == "adam":  # tf.train.AdamOptimizer: the same betas; eps 1e-8 as TF 1.x
        # The fused kernel updates all four arrays in one pass: 1.1 ms a step here, against 4.0
        # for the per-tensor loop (a fifth of a fast-preset step).
        return torch.optim.Adam(parameters, lr=params.learning_rate, eps=1e-8, fused=True)
    raise ValueError(f"unknown optimizer {params.optimizer!r}")


def learning_rate_at(step: int, total_steps: int, params: ModelParams) -> float:
    """The learning rate for the step after ``step`` steps of a run that ends at ``total_steps``.

    A pure function of the two numbers, so a resumed run continues the same schedule.
    """
    if params.lr_schedule == "constant":
        return params.learning_rate
    warmup_steps = params.warmup_fraction * total_steps
    if step < warmup_steps:
        return params.learning_rate * (step + 1) / warmup_steps
    return params.learning_rate * max(total_steps - step, 0) / max(total_steps - warmup_steps, 1)
