"""The allocator setting: applied once, only where the C library has mallopt."""

import sys

import pytest

from cnn_mnist.kernels.cpu import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_takes_the_thresholds_once():
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    assert allocator.retain_freed_memory() is True
    assert allocator.retain_freed_memory() is True  # idempotent


def test_elsewhere_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.retain_freed_memory() is False
