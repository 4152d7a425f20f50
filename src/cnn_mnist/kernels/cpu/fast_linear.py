"""The dense layer's matrix products, arranged for CPUs: ``F.linear`` with the same results,
about twice as fast here in fp32 and 1.6x in bf16 (fwd + bwd, measured on this 2-core AMD
machine with ``benchmarks/speed.py``).

fp32: PyTorch's default BLAS (MKL) runs AVX2 code on AMD processors, ~190 GFLOP/s here, while
oneDNN's inner-product kernels use AVX-512, ~340. PyTorch exposes oneDNN's forward and backward
inner products as ``aten::mkldnn_linear*`` but wires them into autograd only for its opaque
mkldnn tensors; :class:`_OneDnnLinear` does that wiring for ordinary tensors.

bf16 autocast: ``F.linear`` casts the fp32 weight to bf16, and its backward hands the weight
gradient back as a transposed view, which the cast back to fp32 then copies element by element:
2.3 ms of a 15.5 ms step. :class:`_Bf16Linear` computes that gradient as a contiguous
(out, in) product, so the cast is a 0.15 ms streaming copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnn_mnist.kernels.cpu import native


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x_onednn = x.contiguous().to_mkldnn()  # a layout tag and a copy: ~1% of the product's time
        ctx.save_for_backward(weight)
        ctx.x_onednn, ctx.x_shape = x_onednn, x.shape
        return torch.ops.aten.mkldnn_linear(x_onednn, weight, bias).to_dense()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_onednn = grad_output.contiguous().to_mkldnn()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.mkldnn_linear_backward_input(ctx.x_shape, grad_onednn, weight).to_dense()
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_weight, grad_bias = torch.ops.aten.mkldnn_linear_backward_weights(
                grad_onednn, ctx.x_onednn, weight, True)
        ctx.x_onednn = None
        return grad_x, grad_weight, grad_bias


class _Bf16Linear(torch.autograd.Function):
    """What bf16 autocast does for linear (bf16 products, fp32 weights and gradients), with a
    contiguous weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x16, weight16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x16, weight16)
        return torch.addmm(bias.to(torch.bfloat16), x16, weight16.t())

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x16, weight16 = ctx.saved_tensors
        grad16 = grad_output.to(torch.bfloat16)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad16.mm(weight16)
        if ctx.needs_input_grad[1]:
            grad_weight = grad16.t().mm(x16).float()  # (out, in), contiguous
        if ctx.needs_input_grad[2]:
            grad_bias = grad16.float().sum(0)
        return grad_x, grad_weight, grad_bias


def _plain_cpu_call(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 weights and a 2-D input on the CPU, outside tracing, scripting, compiling and ONNX
    export (which need the standard op)."""
    return (
        x.device.type == "cpu" and weight.device.type == "cpu" and weight.dtype == torch.float32 and x.dim() == 2
        and native.eager()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through the faster arrangement where one applies."""
    if _plain_cpu_call(x, weight):
        if torch.is_autocast_enabled("cpu"):
            if torch.get_autocast_dtype("cpu") == torch.bfloat16:
                return _Bf16Linear.apply(x, weight, bias)
        elif x.dtype == torch.float32 and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
            return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
