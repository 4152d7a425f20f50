"""Numeric precision of the network's matrix work: fp32, or bf16 autocast on CPUs with bf16 units.

bf16 autocast runs convolutions and the dense layers in bfloat16 through oneDNN (weights, the
optimizer and the loss stay fp32). On a CPU with AVX512-BF16 or AMX that is about twice the
speed of fp32 here; elsewhere it is emulated and slower, so ``auto`` picks it only where the
hardware has it.
"""

from __future__ import annotations

import contextlib
import logging

import torch

PRECISIONS = ("fp32", "bf16", "auto")

log = logging.getLogger(__name__)


def bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where supported natively, else ``fp32``; the others stay as they are."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if precision == "bf16" and not bf16_supported():
        log.warning("this CPU has no native bf16: bf16 autocast will be emulated, and slower than fp32")
    return precision


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
