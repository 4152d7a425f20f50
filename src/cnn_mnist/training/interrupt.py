"""Ctrl-C during training: the first press stops the loop after the current step (which then saves
a checkpoint), a second one interrupts at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from cnn_mnist.errors import TrainingInterrupted

log = logging.getLogger(__name__)


class StopOnCtrlC:
    """While held, the first Ctrl-C sets ``pressed`` for the training loop to read, so the checkpoint
    saved on the way out is a consistent one; a second Ctrl-C raises TrainingInterrupted (not
    saved) at once. SIGINT's handler is put back on exit. Off the main thread, where Python allows
    no signal handler, it does nothing (``pressed`` stays False)."""

    def __init__(self, global_step: Callable[[], int] = lambda: 0):
        self._global_step = global_step

    def __enter__(self) -> StopOnCtrlC:
        self.pressed = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise TrainingInterrupted(self._global_step(), saved=False)
        self.pressed = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (press again to abort now)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
