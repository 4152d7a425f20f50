"""Progress for people watching: a live bar on a terminal, a plain line now and then otherwise.

A bar (tqdm) redraws in place, which is what a person at a terminal wants and what a CI log or
a file does not: there the same figures come as one INFO line every ``every_s`` seconds and
one at the end, so logs stay short and greppable. While a bar is up, log records are written
above it instead of through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TextIO

from cnn_mnist import notebook

log = logging.getLogger(__name__)

PLAIN_LINE_EVERY_S = 30.0


class Progress:
    """Progress of one task towards ``total`` units (steps, images or bytes; None if unknown).

    ``bar=None`` picks a bar when ``stream`` is a terminal and plain lines when it is not.
    ``update(done, **figures)`` sets the position; the figures (loss, accuracy, ...) are shown
    beside it. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "step", *, initial: int = 0,
                 bytes_: bool = False, stream: TextIO | None = None, bar: bool | None = None,
                 every_s: float = PLAIN_LINE_EVERY_S):
        self.description, self.total, self.unit, self.bytes_ = description, total, unit, bytes_
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.initial = self.done = initial  # a resumed run starts part-way: ETA counts from here
        self.figures = {}
        self._started = self._last_line = time.perf_counter()
        self._closed = False
        self._bar = None
        self._redirect = contextlib.ExitStack()
        in_kernel = notebook.in_kernel()
        if bar if bar is not None else in_kernel or _is_terminal(self.stream):
            from tqdm.contrib.logging import logging_redirect_tqdm

            shown = {"total": total, "desc": description, "unit": "B" if bytes_ else unit,
                     "unit_scale": bytes_ or unit == "image", "unit_divisor": 1024 if bytes_ else 1000,
                     "initial": initial, "mininterval": 0.2, "smoothing": 0.05}
            if in_kernel:  # the notebook's own bar, as wide as the page
                tqdm = notebook.progress_bar_class()
                self._bar = tqdm(**shown)
            else:
                from tqdm import tqdm

                # A terminal that reports no size (some CI ptys) would hide the bar: assume 100x24.
                unsized = _terminal_columns(self.stream) == 0
                self._bar = tqdm(**shown, file=self.stream, ncols=100 if unsized else None,
                                 nrows=24 if unsized else None, dynamic_ncols=not unsized)
            self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger()], tqdm_class=tqdm))

    @property
    def is_bar(self) -> bool:
        return self._bar is not None

    def update(self, done: int, **figures) -> None:
        advance, self.done = done - self.done, done
        self.figures.update(figures)
        if self._bar is not None:
            if figures:
                self._bar.set_postfix_str(_format_figures(self.figures), refresh=False)
            self._bar.update(advance)
        elif time.perf_counter() - self._last_line >= self.every_s:
            self._log_line()

    def close(self, **figures) -> None:
        """Finish: the bar stays on screen with its final figures; otherwise one last line."""
        if self._closed:
            return
        self._closed = True
        self.figures.update(figures)
        if self._bar is not None:
            if self.figures:
                self._bar.set_postfix_str(_format_figures(self.figures), refresh=False)
            self._bar.close()
            self._redirect.close()
        else:
            self._log_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The plain line: ``train: step 2,000/20,000 (10%), loss 0.23, ..., 1m5s elapsed, ETA 9m45s``."""
        elapsed = time.perf_counter() - self._started
        parts = [f"{self.description}: {self._position()}"]
        if self.figures:
            parts.append(_format_figures(self.figures))
        parts.append(f"{format_duration(elapsed)} elapsed")
        if self.total and self.initial < self.done < self.total and not self._closed:
            parts.append(f"ETA {format_duration(elapsed * (self.total - self.done) / (self.done - self.initial))}")
        return ", ".join(parts)

    def _position(self) -> str:
        if self.bytes_:
            done = _format_bytes(self.done)
            return f"{done}/{_format_bytes(self.total)} ({self.done / self.total:.0%})" if self.total else done
        if self.total:
            return f"{self.unit} {self.done:,}/{self.total:,} ({self.done / self.total:.0%})"
        return f"{self.done:,} {self.unit}s"

    def _log_line(self) -> None:
        log.info("%s", self.line())
        self._last_line = time.perf_counter()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_columns(stream) -> int | None:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None


def _format_figures(figures: dict) -> str:
    return ", ".join(f"{name} {_format_value(value)}" for name, value in figures.items())


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.4g}"  # 1.0 -> 1.000
    return f"{value:,}" if isinstance(value, int) else str(value)


def _format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def format_duration(seconds: float) -> str:
    """3.2 -> '3.2s', 65 -> '1m5s', 3725 -> '1h2m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{seconds}s"
    return f"{minutes // 60}h{minutes % 60}m"
