"""The tutorial's convolutional network, layer for layer, with TensorFlow's initialisation.

conv 5x5x32 same + ReLU -> max-pool 2 -> conv 5x5x64 same + ReLU -> max-pool 2 -> dense 1024 +
ReLU -> dropout 0.4 (training only) -> dense 10 logits: 3,274,634 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnn_mnist import kernels

IMAGE_SIZE = 28
NUM_CLASSES = 10
NUM_PARAMETERS = 3_274_634  # 832 + 51,264 + 3,212,288 + 10,250
# Each stage ConvNet.stages returns, in the network's order, with its label: the tutorial's name and
# shape (TensorFlow's (height, width, channels) order). explain, the web page and summary() show them.
STAGE_LABELS = {
    "conv1": "conv1 + ReLU [batch, 28, 28, 32]",
    "pool1": "pool1 [batch, 14, 14, 32]",
    "conv2": "conv2 + ReLU [batch, 14, 14, 64]",
    "pool2": "pool2 [batch, 7, 7, 64]",
    "dense": "dense + ReLU [batch, 1024]",
    "logits": "logits [batch, 10]",
}


class ConvNet(nn.Module):
    """The network of TensorFlow's "Build a Convolutional Neural Network using Estimators"."""

    def __init__(self, dropout_rate: float = 0.4, generator: torch.Generator | None = None,
                 initializer: str = "glorot", num_classes: int = NUM_CLASSES):
        super().__init__()
        # padding=2 is TensorFlow's 'same' for a 5x5 kernel at stride 1: 28x28 stays 28x28.
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)  # the layer; forward runs it fused with its ReLU
        self.dense = nn.Linear(7 * 7 * 64, 1024)  # two 2x2 pools take 28x28 to 7x7
        self.dropout = nn.Dropout(p=dropout_rate)  # active only in train(); rate = fraction dropped
        self.logits = nn.Linear(1024, num_classes)  # MNIST's ten digits, or a dataset's own classes
        if initializer == "glorot":
            initialize_like_tensorflow(self, generator)
        elif initializer == "pytorch":  # PyTorch's own defaults, for comparison
            for module in (self.conv1, self.conv2, self.dense, self.logits):
                with torch.random.fork_rng():  # reset_parameters() draws from the global RNG
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)) if generator else 0)
                    module.reset_parameters()
        else:
            raise ValueError(f"initializer must be 'glorot' or 'pytorch', got {initializer!r}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = as_image_batch(images)  # (N, 1, 28, 28) float
        # A large inference batch on the CPU runs in cache-sized slices (see kernels); else whole.
        slices = kernels.inference_slices(x, self.training)
        if slices > 1:  # equal slices, not a short last one (oneDNN may round a tiny one apart)
            return torch.cat([self._layers(part) for part in torch.tensor_split(x, slices)])
        return self._layers(x)

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        # relu(pool(x)) gives the same values and gradients as pool(relu(x)) (max and ReLU
        # commute) on a quarter of the elements, and max_pool_relu does both in one pass each way
        # on the CPU (see kernels): together ~1/3 of a bf16 training step otherwise.
        x = kernels.max_pool_relu(self.conv1(x))  # (N, 32, 14, 14)
        x = kernels.max_pool_relu(self.conv2(x))  # (N, 64, 7, 7)
        # Flattened (7, 7, 64) row by row, as TensorFlow's NHWC reshape did; with channels-last
        # memory that is a view, where a channel-major flatten would copy (and slow the backward).
        x = x.permute(0, 2, 3, 1).flatten(1)  # (N, 3136)
        # The dense layer holds 98% of the weights and 23% of the FLOPs; on the CPU oneDNN runs
        # it ~2x faster than PyTorch's default BLAS does on AMD CPUs (see kernels).
        x = self._dropout(torch.relu(kernels.linear(x, self.dense.weight, self.dense.bias)))  # (N, 1024)
        return self.logits(x)  # (N, classes)

    def stages(self, images: torch.Tensor) -> list[StageOutput]:
        """Every stage's output for ``images``, in order, each with its name and label
        (``STAGE_LABELS``): what the network computes, spelt out for showing it. The logits are
        the forward's (tested equal); the pooling runs after the ReLU here, which gives the same
        values as the forward's fused pool-then-ReLU and keeps each ReLU map to show."""
        x = as_image_batch(images)  # (N, 1, 28, 28) float
        conv1 = torch.relu(self.conv1(x))  # (N, 32, 28, 28)
        pool1 = F.max_pool2d(conv1, 2)  # (N, 32, 14, 14)
        conv2 = torch.relu(self.conv2(pool1))  # (N, 64, 14, 14)
        pool2 = F.max_pool2d(conv2, 2)  # (N, 64, 7, 7)
        flat = pool2.permute(0, 2, 3, 1).flatten(1)  # (N, 3136), row by row as the forward flattens
        dense = torch.relu(kernels.linear(flat, self.dense.weight, self.dense.bias))  # (N, 1024)
        logits = self.logits(self._dropout(dense))  # (N, 10)
        outputs = {"conv1": conv1, "pool1": pool1, "conv2": conv2, "pool2": pool2, "dense": dense, "logits": logits}
        return [StageOutput(name, label, outputs[name]) for name, label in STAGE_LABELS.items()]

    def summary(self) -> NetworkSummary:
        """Each layer of the tutorial's network with its output shape and parameter count, read
        from the stages of a blank image (in eval mode, so no random draw is taken)."""
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                blank = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=self.conv1.weight.device)
                shapes = {stage.name: stage.output for stage in self.stages(blank)}
        finally:
            self.train(was_training)

        def nhwc(x: torch.Tensor) -> tuple[int, ...]:  # TensorFlow's order, as the tutorial's comments give it
            return tuple(x.shape[2:]) + (x.shape[1],) if x.dim() == 4 else tuple(x.shape[1:])

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return NetworkSummary((
            Layer("input", "28x28 greyscale pixels", (IMAGE_SIZE, IMAGE_SIZE, 1), 0),
            Layer("conv1", "32 filters 5x5, same padding, ReLU", nhwc(shapes["conv1"]), count(self.conv1)),
            Layer("pool1", "max-pool 2x2, stride 2", nhwc(shapes["pool1"]), 0),
            Layer("conv2", "64 filters 5x5, same padding, ReLU", nhwc(shapes["conv2"]), count(self.conv2)),
            Layer("pool2", "max-pool 2x2, stride 2", nhwc(shapes["pool2"]), 0),
            Layer("flatten", "7x7x64 as one row", (shapes["pool2"][0].numel(),), 0),
            Layer("dense", "1,024 units, ReLU", nhwc(shapes["dense"]), count(self.dense)),
            Layer("dropout", f"rate {self.dropout.p:g}, training only", nhwc(shapes["dense"]), 0),
            Layer("logits", "10 units, one per digit", nhwc(shapes["logits"]), count(self.logits)),
        ))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """``self.dropout(x)``: zero a fraction p of the units while training, scale the rest by
        1/(1-p). A uniform draw and a compare make the mask 3x faster than ``F.dropout``'s
        ``bernoulli_`` on CPU (0.27 against 0.86 ms at 100x1024 here), 4% of a bf16 step."""
        rate = self.dropout.p
        if not self.training or rate == 0:
            return x
        if rate >= 1:
            return torch.zeros_like(x)
        keep = torch.rand(x.shape, device=x.device) >= rate
        return x * keep * (1.0 / (1.0 - rate))


@dataclass(frozen=True)
class StageOutput:
    """One stage of ``ConvNet.stages``: its name, its label and its output for the batch."""

    name: str
    label: str  # "conv1 + ReLU [batch, 28, 28, 32]"
    output: torch.Tensor  # (N, C, H, W) for the convolutional stages, (N, units) for dense and logits


@dataclass(frozen=True)
class Layer:
    name: str
    does: str
    output: tuple[int, ...]  # one image's output, in TensorFlow's (height, width, channels) order
    parameters: int


@dataclass(frozen=True)
class NetworkSummary:
    """The network layer by layer (``ConvNet.summary()``): a table as text, and in a notebook."""

    layers: tuple[Layer, ...]

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows = [(layer.name, layer.does, f"[batch, {', '.join(map(str, layer.output))}]", f"{layer.parameters:,}")
                for layer in self.layers]
        return rows + [("total", "", "", f"{self.parameters:,}")]

    def __str__(self) -> str:
        header, rows = ("layer", "what it does", "output shape", "parameters"), self._rows()
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
        return "\n".join("  ".join(cell.rjust(width) if i == 3 else cell.ljust(width)
                                   for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
                         for row in (header, *rows))

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        lines = ["| layer | what it does | output shape | parameters |", "|---|---|---|---:|"]
        return "\n".join(lines + [f"| {' | '.join(row)} |" for row in self._rows()])


def as_image_batch(images: torch.Tensor) -> torch.Tensor:
    """(N, 784), (N, 28, 28) or (N, 1, 28, 28) pixels -> (N, 1, 28, 28) float in [0, 1].

    uint8 pixels are scaled by 1/255 here, so datasets stay uint8 in memory (a quarter of
    the bytes of float32) and are normalised one batch at a time.
    """
    if images.dim() == 2 and images.shape[1] == IMAGE_SIZE * IMAGE_SIZE:
        images = images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    elif images.dim() == 3 and images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        images = images.unsqueeze(1)
    elif not (images.dim() == 4 and images.shape[1:] == (1, IMAGE_SIZE, IMAGE_SIZE)):
        raise ValueError(
            f"images must have shape (N, 784), (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def initialize_like_tensorflow(network: nn.Module, generator: torch.Generator | None = None) -> None:
    """Glorot-uniform kernels and zero biases, as tf.layers did.

    PyTorch's default (Kaiming-uniform with a=sqrt(5)) starts with smaller weights; with the
    tutorial's plain SGD at 0.001 that leaves it well short of 97.3% after 20,000 steps.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            nn.init.zeros_(module.bias)


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
