"""Numeric precision of the network's matrix work: fp32, or autocast to bf16 or fp16.

Under autocast, convolutions and the dense layers run in the lower precision; the weights, the
optimizer and the loss stay fp32. ``auto`` picks, per device:

- CPU: bf16 where the CPU has bf16 units (AVX512-BF16 or AMX), about twice the speed of fp32
  here; fp32 elsewhere, where bf16 would be emulated and slower.
- CUDA: bf16 on GPUs with bf16 tensor cores (compute capability 8.0 and up: A100, H100, RTX 30xx
  and later); fp16 with a gradient scaler on older ones (a T4, V100), whose fp16 range needs the
  loss scaled so small gradients do not round to zero.
- MPS: fp32 (untested here: the lower precisions are left for the user to ask for).
"""

from __future__ import annotations

import contextlib
import logging

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DESCRIPTIONS = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler"}

log = logging.getLogger(__name__)
_CPU = torch.device("cpu")


def bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cuda_bf16_fast(device: torch.device) -> bool:
    """Whether this GPU has bf16 tensor cores (compute capability 8.0 and up)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(precision: str, device: torch.device = _CPU) -> str:
    """``auto`` -> what suits ``device`` (see above); the others stay as they are, with a warning
    where the device can only emulate them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cpu":
            return "bf16" if bf16_supported() else "fp32"
        if device.type == "cuda":
            return "bf16" if cuda_bf16_fast(device) else "fp16"
        return "fp32"
    if device.type == "cpu":
        if precision == "bf16" and not bf16_supported():
            log.warning("this CPU has no native bf16: bf16 autocast will be emulated, and slower than fp32")
        elif precision == "fp16":
            log.warning("fp16 autocast on the CPU is emulated and slower than fp32; it is meant for GPUs")
    elif device.type == "cuda" and precision == "bf16" and not cuda_bf16_fast(device):
        log.warning("%s has no bf16 tensor cores: bf16 autocast will be slow there; auto picks fp16", device)
    return precision


def autocast(precision: str, device_type: str = "cpu", cache: bool = True) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision on a device type (a no-op for fp32).
    ``cache=False`` for a step captured as a CUDA graph, as CUDA graphs' rules ask (each weight is
    cast once a step either way, so the cache saves nothing here)."""
    if precision in DTYPES:
        return torch.autocast(device_type, dtype=DTYPES[precision], cache_enabled=cache)
    return contextlib.nullcontext()


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 training's loss scaler (None for the other precisions, which need none). Its state
    (the scale and its growth counter) goes into every checkpoint, so a resumed run is exact."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
