"""The dense layer's fast paths compute what F.linear computes, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from cnn_mnist.kernels.cpu import fast_linear


def _forward_backward(function, x, weight, bias, grad):
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    y = function(x, weight, bias)
    y.backward(grad)
    return y, x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_fp32_path_matches_f_linear(batch):
    generator = torch.Generator().manual_seed(batch)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((batch, 3136), (1024, 3136), (1024,)))
    grad = torch.randn(batch, 1024, generator=generator)
    ours = _forward_backward(fast_linear.linear, x, weight, bias, grad)
    reference = _forward_backward(F.linear, x, weight, bias, grad)
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.dtype == theirs.dtype == torch.float32 and mine.shape == theirs.shape
        # sums of 3,136 products of magnitude ~1 in another order: fp32 rounding, no more
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-3)


def test_fp32_path_goes_through_onednn():
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN")
    x, weight, bias = torch.randn(4, 3136, requires_grad=True), torch.randn(1024, 3136), torch.randn(1024)
    assert type(fast_linear.linear(x, weight, bias).grad_fn).__name__ == "_OneDnnLinearBackward"


def test_bf16_path_matches_autocast_f_linear():
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((50, 3136), (1024, 3136), (1024,)))
    grad = torch.randn(50, 1024, generator=generator).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _forward_backward(fast_linear.linear, x, weight, bias, grad)
        reference = _forward_backward(F.linear, x, weight, bias, grad)
    assert ours[0].dtype == torch.bfloat16 and ours[2].dtype == torch.float32  # bf16 product, fp32 weight grad
    assert ours[2].is_contiguous()
    torch.testing.assert_close(ours[0], reference[0])  # the same bf16 product
    for mine, theirs in zip(ours[1:], reference[1:], strict=True):  # bf16 products, summed in different orders
        torch.testing.assert_close(mine.float(), theirs.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_other_calls_fall_back_to_f_linear():
    weight, bias = torch.randn(8, 6), torch.randn(8)
    three_d = torch.randn(2, 3, 6, requires_grad=True)
    assert type(fast_linear.linear(three_d, weight, bias).grad_fn).__name__ != "_OneDnnLinearBackward"
    doubles = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(fast_linear.linear(doubles, weight.double(), bias.double()),
                               F.linear(doubles, weight.double(), bias.double()))
    traced = torch.jit.trace(lambda x: fast_linear.linear(x, weight, bias), torch.randn(3, 6))
    assert "mkldnn" not in str(traced.graph)
