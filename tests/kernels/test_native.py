"""C kernels build once per machine into the cache, and every way of not building them falls back."""

import ctypes
import logging
import shutil

import pytest

from cnn_mnist.kernels.cpu import native

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="no C compiler on this machine")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty kernel cache and nothing loaded yet in this process."""
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(native, "_loaded", {})
    return tmp_path / "kernels"


@needs_compiler
def test_builds_into_the_cache_once_and_reuses_it(fresh, monkeypatch):
    library = native.library("pool_relu")
    assert isinstance(library, ctypes.CDLL)
    built = list(fresh.glob("pool_relu-*.so"))
    assert len(built) == 1 and not list(fresh.glob(".build-*"))  # no temporary left behind
    monkeypatch.setattr(native, "_loaded", {})  # a new process, in effect
    monkeypatch.setattr(native, "_compile", lambda *args: pytest.fail("compiled again"))
    assert native.library("pool_relu") is not None


def test_turned_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert native.library("pool_relu") is None
    assert not fresh.exists()


def test_no_compiler_means_no_kernel_and_says_so(fresh, monkeypatch, caplog):
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with caplog.at_level(logging.INFO, logger="cnn_mnist.kernels.cpu.native"):
        assert native.library("pool_relu") is None
    assert "no C compiler" in caplog.text


def test_a_compiler_that_fails_means_no_kernel_and_says_why(fresh, monkeypatch, tmp_path, caplog):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with caplog.at_level(logging.INFO, logger="cnn_mnist.kernels.cpu.native"):
        assert native.library("pool_relu") is None
    assert "broken-cc: cannot compile" in caplog.text
    assert not list(fresh.glob("*.so"))
