"""The allocator setting: applied once, only where the C library has mallopt."""

import sys

import pytest

from cnn_mnist.kernels.cpu import allocator


class RecordingLibc:
    """Stands in for ``ctypes.CDLL(None)``: its mallopt records each call and accepts it."""

    def __init__(self):
        self.calls = []

        def mallopt(option, value):
            self.calls.append((option, value))
            return 1

        self.mallopt = mallopt


def test_the_thresholds_are_set_once_through_mallopt(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(allocator, "_applied", False)  # as in a fresh process
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.retain_freed_memory() is True
    assert libc.calls == [(allocator._M_MMAP_THRESHOLD, 32 << 20), (allocator._M_TRIM_THRESHOLD, 1 << 30)]
    assert allocator.retain_freed_memory() is True
    assert len(libc.calls) == 2  # the second call changed nothing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_itself_takes_the_thresholds(monkeypatch):
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    monkeypatch.setattr(allocator, "_applied", False)  # so the real mallopt is called, not skipped
    assert allocator.retain_freed_memory() is True


def test_elsewhere_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.retain_freed_memory() is False
