"""Where a run computes: the device a name asks for (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``),
what to call it in the log, and the process-wide settings each device trains under.

``auto`` picks CUDA, then Apple's MPS, then the CPU. Which layer implementation runs on which
device is decided in ``kernels``; the numeric precision in ``precision``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import threading
from collections.abc import Iterator

import torch

from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.cpu.allocator import retain_freed_memory

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
CUDA_HINT = ("for a CUDA build of torch, install it from https://pytorch.org/get-started/locally/ "
             "(on Linux: pip install torch from PyPI)")
# cuBLAS is deterministic only with a fixed workspace (CUDA's documentation; torch refuses otherwise).
CUBLAS_WORKSPACE = ":4096:8"

log = logging.getLogger(__name__)


def check_device_name(name: str) -> str:
    """``name`` if it is one of the forms a device is asked for by, else a ConfigError."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {name!r}")
    return name


def available() -> list[str]:
    """The devices this machine can compute on, as names ``resolve_device`` accepts."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` for a device name; a one-line ConfigError naming what there is instead
    when the machine lacks it."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            _fix_cublas_workspace()
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    there = ", ".join(available())
    if name.startswith("cuda") and torch.cuda.is_available():
        _fix_cublas_workspace()
    if name == "mps":
        if not _mps_available():
            raise ConfigError(f"--device mps: this machine has no Apple MPS device (there is: {there})")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
        hint = CUDA_HINT if torch.version.cuda is None else "check nvidia-smi and CUDA_VISIBLE_DEVICES"
        raise ConfigError(f"--device {name}: {why} (there is: {there}); {hint}")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                          f"(there is: {there})")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)``, ``cpu (AMD EPYC 9R14, 2 threads)``, ``mps``: for the first log line."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    return str(device)


def inference_batch_size(device: torch.device) -> int:
    """Images per evaluation or prediction batch: 1,000 on the CPU (the network slices it to the
    caches anyway); 10,000 on a GPU, where one large batch keeps thousands of cores busy."""
    return 1_000 if device.type == "cpu" else 10_000


class _ExactFp32:
    """While held, fp32 means fp32 on CUDA: no TF32 in convolutions (PyTorch allows it there by
    default) or in products. The fast path on a GPU is bf16 autocast; fp32 is there for fidelity
    (and the ONNX parity check). The flags are process-wide and read by CUDA kernels alone, but
    they are set on every device, so that the path the CPU tests run is the one a GPU runs.

    The last holder to leave puts back the flags as the first found them, so building or using an
    Estimator or Predictor leaves a user's own settings alone, and threads sharing one Predictor
    (the service's) all compute in fp32 until the last of them is done."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._found: list = []

    @staticmethod
    def _flags() -> list[tuple[object, str, object]]:
        """(object, attribute, exact value) for cuDNN's convolutions and cuBLAS's products."""
        backends = torch.backends
        if hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision"):
            # torch 2.9+: once a user sets these, reading the older allow_tf32 flags raises
            return [(backends.cudnn.conv, "fp32_precision", "ieee"), (backends.cuda.matmul, "fp32_precision", "ieee")]
        return [(backends.cudnn, "allow_tf32", False), (backends.cuda.matmul, "allow_tf32", False)]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._found = [(owner, name, getattr(owner, name)) for owner, name, _ in self._flags()]
                for owner, name, exact in self._flags():
                    setattr(owner, name, exact)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    for owner, name, found in self._found:
                        setattr(owner, name, found)


_exact_fp32 = _ExactFp32()


def precision_settings(precision: str) -> contextlib.AbstractContextManager:
    """The process-wide settings computing in ``precision`` needs while it runs: for fp32, no TF32
    (see ``_ExactFp32``); nothing for the others, whose autocast decides."""
    return _exact_fp32() if precision == "fp32" else contextlib.nullcontext()


@contextlib.contextmanager
def training_settings(device: torch.device, deterministic: bool) -> Iterator[None]:
    """The process-wide settings a training run needs, restored afterwards.

    On the CPU, freed memory stays in the process (see ``allocator``: 5-20% of a step otherwise
    goes to page faults); that setting alone lasts until the process exits.

    ``deterministic``: torch's deterministic algorithms (an op that has none raises) and cuDNN's
    autotuner off (cuBLAS's fixed workspace is set when the device is chosen: see
    ``_fix_cublas_workspace``). Otherwise cuDNN times its algorithms on the
    first batch of each shape and keeps the fastest, which may differ from run to run. On the CPU
    every op this network uses is deterministic either way; the flag changes nothing there but
    the check. torch's NaN-filling of fresh tensors (a debugging aid in deterministic mode) stays
    off: nothing here reads memory it has not written, and the fill is a pass over every tensor.
    """
    from torch.utils import deterministic as torch_deterministic

    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                torch_deterministic.fill_uninitialized_memory)
    if device.type == "cpu":
        retain_freed_memory()
    torch.use_deterministic_algorithms(deterministic)
    torch_deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        torch_deterministic.fill_uninitialized_memory = previous[2]


def _fix_cublas_workspace() -> None:
    """Give cuBLAS the fixed workspace its deterministic products need, unless the user chose one.

    torch reads CUBLAS_WORKSPACE_CONFIG once, at the process's first cuBLAS product, and refuses
    deterministic products for good if it was unset then. So it is set when a CUDA device is
    chosen, before anything runs there, and ``--deterministic`` works whenever it is asked for."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def rng_state(device: torch.device) -> dict:
    """The device's own random stream, for a checkpoint: on a GPU, dropout draws from it there
    (``{"cuda": state}``); elsewhere the CPU stream the caller saves is the only one."""
    return {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}


def restore_rng_state(device: torch.device, saved: dict, seed: int) -> None:
    """Put back what ``rng_state`` saved; a checkpoint from another device (none saved) starts the
    GPU's stream from ``seed`` instead, a stream fixed by the run."""
    if device.type != "cuda":
        return
    if "cuda" in saved:
        torch.cuda.set_rng_state(saved["cuda"], device)
    else:
        torch.cuda.manual_seed(seed)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where the OS shows it), for logs and benchmark records."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
