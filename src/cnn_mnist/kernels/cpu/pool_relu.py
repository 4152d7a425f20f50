"""``relu(max_pool2d(x, 2))``, the network's two pooling layers, as one C pass each way on
channels-last CPU tensors (``csrc/pool_relu.c``), and PyTorch's ops everywhere else.

Both give the same values and gradients, bit for bit (ties, NaN and the ReLU's zero included).
PyTorch's pair costs 1.4 ms fwd + bwd on the first layer's bf16 output at batch 100 here (a
pass to pool, an int64 index, a zero-fill and a scalar scatter back, a pass each way for the
ReLU); the kernel 0.5 ms: 8% of a bf16 training step, 4% of an fp32 one.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cnn_mnist.kernels.cpu import native


def max_pool_relu(x: torch.Tensor) -> torch.Tensor:
    """``relu(max_pool2d(x, kernel_size=2, stride=2))`` for an (N, C, H, W) batch."""
    kernels = _kernels_for(x)
    if kernels is None:
        return torch.relu(F.max_pool2d(x, kernel_size=2, stride=2))
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPoolReLU.apply(x, kernels)
    return _forward(kernels, x, record_corners=False)[0]


class _Kernels:
    """The library's four entry points, with their C signatures."""

    def __init__(self, library: ctypes.CDLL):
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        for name in ("pool_relu_forward_bf16", "pool_relu_forward_f32"):
            getattr(library, name).argtypes = [pointer, pointer, pointer, size, size, size, size, ctypes.c_int]
        for name in ("pool_relu_backward_16bit", "pool_relu_backward_32bit"):
            getattr(library, name).argtypes = [pointer, pointer, pointer, size, size, size, size, ctypes.c_int]
        self.forward = {torch.bfloat16: library.pool_relu_forward_bf16, torch.float32: library.pool_relu_forward_f32}
        self.backward = {2: library.pool_relu_backward_16bit, 4: library.pool_relu_backward_32bit}


_loaded: list[_Kernels | None] = []


def _kernels_for(x: torch.Tensor) -> _Kernels | None:
    """The kernels, where they apply to ``x``: a CPU bf16 or fp32 batch in channels-last memory
    with even height and width, run eagerly; None elsewhere."""
    if not (native.eager() and x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32)
            and x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last)):
        return None
    if not _loaded:
        library = native.library("pool_relu")
        _loaded.append(_Kernels(library) if library is not None else None)
    return _loaded[0]


def _forward(kernels: _Kernels, x: torch.Tensor, record_corners: bool):
    n, c, h, w = x.shape
    y = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=torch.channels_last)
    # Which corner of each window won (or that the ReLU zeroed it): a byte per output, where
    # PyTorch's pool keeps an int64.
    corners = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8) if record_corners else None
    kernels.forward[x.dtype](x.data_ptr(), y.data_ptr(), None if corners is None else corners.data_ptr(),
                             n, h, w, c, torch.get_num_threads())
    return y, corners


class _MaxPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, kernels: _Kernels) -> torch.Tensor:
        y, corners = _forward(kernels, x, record_corners=True)
        ctx.save_for_backward(corners)
        ctx.kernels, ctx.input_shape = kernels, x.shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        (corners,) = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        n, c, h, w = ctx.input_shape
        grad_x = torch.empty(ctx.input_shape, dtype=grad_y.dtype, memory_format=torch.channels_last)
        ctx.kernels.backward[grad_y.element_size()](grad_y.data_ptr(), corners.data_ptr(), grad_x.data_ptr(),
                                                    n, h, w, c, torch.get_num_threads())
        return grad_x, None
