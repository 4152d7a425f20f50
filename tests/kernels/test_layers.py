"""The device seam: the CPU's own kernels on the CPU, PyTorch's standard ops on every other device."""

import pytest
import torch
import torch.nn.functional as F

from cnn_mnist.kernels import layers as kernels
from cnn_mnist.model.network import ConvNet


@pytest.mark.parametrize("bf16", [False, True])
def test_inference_runs_large_batches_in_slices_with_the_same_results(bf16, monkeypatch):
    net = ConvNet(generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last).eval()
    images = torch.rand(10, 784, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        whole = net(images)
        monkeypatch.setattr(kernels, "INFERENCE_SLICE_BYTES", 3 * 32 * 28 * 28 * (2 if bf16 else 4))
        assert kernels.inference_slice_size() == 3
        assert kernels.inference_slices(images, training=False) == 4  # four slices, of 3, 3, 2 and 2
        sliced = net(images)
    assert sliced.shape == whole.shape == (10, 10)
    # oneDNN may pick another kernel for a small slice: the last bits of fp32 rounding, no more
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)
    assert kernels.inference_slices(images, training=True) == 1  # a training batch is never split


def test_the_cpu_kernels_are_chosen_on_the_cpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels.pool_relu, "max_pool_relu", lambda x: calls.append("pool") or x[:, :, ::2, ::2])
    monkeypatch.setattr(kernels.fast_linear, "linear", lambda x, w, b: calls.append("dense") or F.linear(x, w, b))
    x = torch.randn(2, 3, 4, 4)
    kernels.max_pool_relu(x)
    kernels.linear(torch.randn(2, 5), torch.randn(4, 5), torch.randn(4))
    assert calls == ["pool", "dense"]
    # On another device (the meta device stands in for a GPU here: shapes, no data) PyTorch's ops run.
    calls.clear()
    pooled = kernels.max_pool_relu(x.to("meta"))
    dense = kernels.linear(torch.randn(2, 5, device="meta"), torch.randn(4, 5, device="meta"),
                           torch.randn(4, device="meta"))
    assert calls == [] and pooled.shape == (2, 3, 2, 2) and dense.shape == (2, 4)
    assert kernels.inference_slices(torch.empty(100_000, 1, 28, 28, device="meta"), training=False) == 1


def test_the_network_runs_on_a_device_without_the_cpu_kernels():
    """The whole network on the meta device: every layer takes the path a GPU takes, and the shapes
    come out as the tutorial's (train and inference)."""
    net = ConvNet().to("meta", memory_format=torch.channels_last)
    assert net(torch.empty(7, 784, device="meta")).shape == (7, 10)
    net.eval()
    assert net(torch.empty(20_000, 1, 28, 28, device="meta")).shape == (20_000, 10)  # one batch, no slices
