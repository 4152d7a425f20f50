"""The evaluation loop: a network's accuracy and mean loss over every example an input yields,
once; under torchrun each process takes its part of every batch and the sums are added up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch

from cnn_mnist.data.inputs import ArrayStream
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels import devices
from cnn_mnist.kernels.precision import autocast
from cnn_mnist.model.model_fn import EstimatorSpec, Mode
from cnn_mnist.progress import Progress
from cnn_mnist.training import distributed

Model = Callable[[torch.nn.Module, torch.Tensor, "torch.Tensor | None", Mode], EstimatorSpec]


def measure(model: Model, network: torch.nn.Module, stream: Iterable, device: torch.device, precision: str,
            progress: bool = False) -> dict[str, float]:
    """The mean of each of the model's ``eval_metrics`` and its mean ``loss`` on ``network``, over
    every (images, labels) batch of ``stream``, computed in ``precision`` on ``device``. In a
    distributed run, a collective: every rank must call it on the same batches.
    ``progress`` shows a bar on a terminal (rank 0 alone)."""
    seen, count, loss_sum, metric_sums = 0, 0, torch.zeros((), dtype=torch.float64, device=device), {}
    total = len(stream) * stream.num_epochs if isinstance(stream, ArrayStream) and stream.num_epochs else None
    show = progress and distributed.is_chief()
    with (torch.inference_mode(), devices.precision_settings(precision), autocast(precision, device.type),
          Progress("evaluate", total, unit="image") if show else contextlib.nullcontext() as bar):
        for images, labels in stream:
            if labels is None:
                raise ConfigError("evaluate needs labels; this input function yields images only")
            seen += len(labels)
            part = distributed.shard(len(labels))
            images, labels = images[part].to(device), labels[part].to(device)  # there already, mostly
            if len(labels) == 0:  # a batch smaller than the number of processes
                continue
            spec = model(network, images, labels, Mode.EVAL)
            count += len(labels)
            loss_sum += spec.loss.double() * len(labels)  # batch mean -> sum
            for key, values in spec.eval_metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + values.double().sum()
            if bar is not None:
                bar.update(seen, accuracy=float(metric_sums.get("accuracy", 0) / count))
    if distributed.world_size() > 1:
        if distributed.any_rank(count == 0):  # so every rank knows the same metric names
            raise ConfigError(f"evaluate needs batches of at least {distributed.world_size()} examples, "
                              "one for each process")
        keys = sorted(metric_sums)
        # float64 sums of float32 values: the total is one process's to ~1e-15 (sync: one all-reduce)
        totals = distributed.sum_over_ranks(torch.stack(
            [torch.tensor(float(count), dtype=torch.float64, device=device), loss_sum,
             *(metric_sums[key] for key in keys)]))
        count, loss_sum, metric_sums = int(totals[0].item()), totals[1], dict(zip(keys, totals[2:], strict=True))
    if count == 0:
        raise ConfigError("evaluate got no examples from the input function")
    results = {key: float(total / count) for key, total in metric_sums.items()}
    results["loss"] = float(loss_sum / count)
    return results
