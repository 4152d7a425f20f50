"""The seam between the network and the hardware: which implementation of each layer runs where.

The network names its layers through these three functions and nothing device-specific; this
module is the one place that branches on the device.

- the 2x2 max-pool and its ReLU: on the CPU one C pass each way (``pool_relu``); elsewhere
  ``max_pool2d`` then ``relu``;
- the 3136 -> 1024 dense layer: on the CPU oneDNN's products, or a bf16 arrangement
  (``fast_linear``); elsewhere ``F.linear`` (cuBLAS on CUDA);
- a large inference batch: on the CPU, slices whose activations fit in the L3 cache; elsewhere
  one batch.

"On the CPU" means eagerly: while tracing, compiling or exporting, PyTorch's standard ops run
everywhere.

The CPU paths give PyTorch's results (bit for bit for the pool, to rounding for the dense layer)
and were measured to be faster here (docs/performance.md). On a GPU, cuDNN and cuBLAS already
run these layers well, and a batch of 10,000 keeps the chip busy, so PyTorch's standard ops run.
The allocator setting, the other CPU-only measure, is applied by ``devices.training_settings``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnn_mnist.kernels.cpu import fast_linear, native, pool_relu

IMAGE_SIZE = 28
# Inference on the CPU runs large batches in slices whose first-layer output is about this size:
# it then stays in the L3 cache (32 MB on the reference machine; 12.5 MB slices were fastest there).
INFERENCE_SLICE_BYTES = 12_500_000
FIRST_LAYER_VALUES = 32 * IMAGE_SIZE * IMAGE_SIZE  # conv1's output per image: 25,088 values


def _on_cpu_eagerly(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and native.eager()


def max_pool_relu(x: torch.Tensor) -> torch.Tensor:
    """``relu(max_pool2d(x, 2, 2))``: the C kernel on the CPU, PyTorch's two ops elsewhere."""
    if _on_cpu_eagerly(x):
        return pool_relu.max_pool_relu(x)
    return torch.relu(F.max_pool2d(x, kernel_size=2, stride=2))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: oneDNN's products (or the bf16 arrangement) on the CPU."""
    if _on_cpu_eagerly(x):
        return fast_linear.linear(x, weight, bias)
    return F.linear(x, weight, bias)


def inference_slices(x: torch.Tensor, training: bool) -> int:
    """Into how many equal slices to cut an inference batch: on the CPU, enough that each slice's
    first-layer output fits in the caches (at 1,000 images that output is 100 MB in fp32 and
    every layer runs at memory speed: 10,000 -> 17,000 images/s here, the same results: no
    image's depend on another's; only a slice of a few images may round its last bit differently,
    where oneDNN picks another kernel for it). 1 elsewhere, for a training batch (its gradient is
    one product), and while tracing or exporting (a branch on the batch size would fix it in the graph)."""
    if training or not _on_cpu_eagerly(x):
        return 1
    return -(-len(x) // inference_slice_size())


def inference_slice_size() -> int:
    """At most how many images one CPU inference slice holds, at the autocast precision now in force."""
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return max(1, INFERENCE_SLICE_BYTES // (FIRST_LAYER_VALUES * (2 if bf16 else 4)))
