"""The package's C kernels (``csrc/<name>.c``): compiled with this machine's C compiler on first
use (~0.3 s), cached under ``~/.cache/cnn_mnist/kernels``, loaded with ctypes.

Where there is no C compiler, or ``CNN_MNIST_NATIVE=0``, :func:`library` returns None and the
callers run PyTorch's own ops instead: the same results, bit for bit, only slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

import torch

NATIVE_ENV = "CNN_MNIST_NATIVE"  # 0 turns the C kernels off
CACHE_ENV = "CNN_MNIST_KERNEL_CACHE"  # where compiled kernels are kept (default ~/.cache/cnn_mnist/kernels)

# Tried in order. -march=native because the library is built on, and for, the machine that runs
# it (its CPU's flags are part of the cache key). -fopenmp shares PyTorch's OpenMP runtime: the
# library's libgomp.so.1 resolves to the copy torch already loaded, so there is one thread pool.
_FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-march=native"),
    ("-O3",),
)
_COMPILE_TIMEOUT_S = 120

log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def enabled() -> bool:
    return os.environ.get(NATIVE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def eager() -> bool:
    """Outside tracing, scripting, compiling and ONNX export, which need PyTorch's standard ops."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


def library(name: str) -> ctypes.CDLL | None:
    """``csrc/<name>.c`` compiled and loaded (once per process), or None where that cannot be done."""
    if not enabled():
        return None
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build_and_load(name)
        return _loaded[name]


def cache_dir() -> Path:
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(base) / "cnn_mnist" / "kernels"


def _build_and_load(name: str) -> ctypes.CDLL | None:
    source = (resources.files(__package__) / "csrc" / f"{name}.c").read_bytes()
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        log.info("no C compiler found: the %s kernel is off, PyTorch's ops run instead (slower)", name)
        return None
    errors = []
    for flags in _FLAG_SETS:
        path = cache_dir() / f"{name}-{_cache_key(source, compiler, flags)}.so"
        try:
            if not path.exists():
                _compile(source, compiler, flags, path)
            return ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as error:
            message = str(error).strip() or type(error).__name__
            errors.append(f"{' '.join(flags)}: {message.splitlines()[-1]}")  # a compiler's last line says most
    log.info("could not build the %s kernel (%s): PyTorch's ops run instead (slower)", name, "; ".join(errors))
    return None


def _cache_key(source: bytes, compiler: str, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256(source)
    for part in (compiler, " ".join(flags), platform.machine(), _cpu_flags(), torch.__version__):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    """The CPU's feature list (what -march=native compiles for), where the OS shows it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _compile(source: bytes, compiler: str, flags: tuple[str, ...], path: Path) -> None:
    """Compile into a temporary file beside ``path``, then rename: concurrent builds and a kill
    mid-build never leave a half-written library under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as build:
        source_path, library_path = Path(build) / "kernel.c", Path(build) / "kernel.so"
        source_path.write_bytes(source)
        result = subprocess.run([compiler, *flags, "-std=c11", "-shared", "-fPIC", "-o", str(library_path),
                                 str(source_path)], capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            raise OSError(result.stderr.strip() or f"{compiler} exited with {result.returncode}")
        os.replace(library_path, path)
    log.debug("compiled %s with %s %s", path.name, compiler, " ".join(flags))
