"""max_pool_relu is relu(max_pool2d(x, 2)), values and gradients bit for bit, on either path."""

import pytest
import torch
import torch.nn.functional as F

from cnn_mnist.kernels.cpu import native, pool_relu

needs_kernel = pytest.mark.skipif(native.library("pool_relu") is None, reason="no C compiler: the kernel is off")


def reference(x):
    return torch.relu(F.max_pool2d(x, kernel_size=2, stride=2))


def hostile_batch(shape, dtype, seed):
    """Values on a coarse grid, so windows hold ties (equal maxima), plus NaN and both infinities."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=generator) * 2).round().to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    flat = x.permute(0, 2, 3, 1).view(-1)  # the memory order
    flat[::97], flat[::89], flat[::83] = float("nan"), float("-inf"), float("inf")
    return x


def values_and_gradient(function, x, grad):
    x = x.detach().clone().requires_grad_()
    y = function(x)
    y.backward(grad)
    return y, x.grad


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(100, 32, 28, 28), (7, 64, 14, 14), (2, 3, 4, 6), (1, 1, 2, 2)])
def test_kernel_matches_pytorch_bit_for_bit(dtype, shape):
    x = hostile_batch(shape, dtype, seed=sum(shape))
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2).to(dtype)
    y, grad_x = values_and_gradient(pool_relu.max_pool_relu, x, grad)
    assert type(y.grad_fn).__name__ == "_MaxPoolReLUBackward"  # the kernel ran, not the fallback
    y_ref, grad_ref = values_and_gradient(reference, x, grad)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    # Ties: the gradient goes to the first maximum only, as PyTorch's does; never split or doubled.
    assert torch.equal(grad_x, grad_ref)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert grad_x.is_contiguous(memory_format=torch.channels_last)


@needs_kernel
def test_ties_and_relu_edge_cases_route_the_gradient_like_pytorch():
    # one window each: a 4-way tie, a tie at zero (ReLU passes nothing), all negative, a NaN
    windows = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, -1.0, 0.0], [-5.0, -2.0, -3.0, -4.0],
                            [1.0, float("nan"), 2.0, 0.5]])
    x = windows.view(4, 1, 2, 2).contiguous(memory_format=torch.channels_last)
    grad = torch.full((4, 1, 1, 1), 2.0)
    y, grad_x = values_and_gradient(pool_relu.max_pool_relu, x, grad)
    y_ref, grad_ref = values_and_gradient(reference, x, grad)
    assert torch.equal(grad_x, grad_ref)
    assert grad_x.view(4, 4).tolist() == [[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0]]
    assert y.flatten()[:3].tolist() == [3.0, 0.0, 0.0] and y.flatten()[3].isnan()


@needs_kernel
def test_without_gradients_the_kernel_gives_the_same_values():
    x = hostile_batch((5, 8, 6, 10), torch.float32, seed=1)
    with torch.inference_mode():
        y = pool_relu.max_pool_relu(x)
    assert torch.equal(y.nan_to_num(), reference(x).nan_to_num())


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 3, 8, 8),  # channel-major memory
    lambda: torch.randn(2, 3, 7, 9).contiguous(memory_format=torch.channels_last),  # odd sizes: floor, as PyTorch
    lambda: torch.randn(2, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last),
    lambda: torch.randn(3, 8, 8),  # unbatched
])
def test_what_the_kernel_does_not_take_goes_to_pytorchs_ops(make):
    x = make().requires_grad_()
    y = pool_relu.max_pool_relu(x)
    assert type(y.grad_fn).__name__ != "_MaxPoolReLUBackward"
    assert torch.equal(y, reference(x))


def test_without_the_library_pytorchs_ops_run(monkeypatch):
    monkeypatch.setattr(pool_relu, "_loaded", [None])
    x = hostile_batch((2, 4, 6, 6), torch.float32, seed=3).requires_grad_()
    y = pool_relu.max_pool_relu(x)
    assert type(y.grad_fn).__name__ != "_MaxPoolReLUBackward"
    assert torch.equal(y.nan_to_num(), reference(x).nan_to_num())


@needs_kernel
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_tracing_records_pytorchs_ops():
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    traced = torch.jit.trace(pool_relu.max_pool_relu, x)
    assert "max_pool2d" in str(traced.graph)
    assert torch.equal(traced(x), reference(x))
