"""Ctrl-C during training: the first press asks for a stop, the second interrupts, the old handler returns."""

import os
import signal
import threading

import pytest

from cnn_mnist.errors import TrainingInterrupted
from cnn_mnist.training.interrupt import StopOnCtrlC


def test_the_first_ctrl_c_asks_the_loop_to_stop_and_the_second_interrupts_at_once(caplog):
    before = signal.getsignal(signal.SIGINT)
    with StopOnCtrlC(lambda: 41) as ctrl_c:
        assert not ctrl_c.pressed
        os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.pressed and "stopping after this step and saving a checkpoint" in caplog.text
        with pytest.raises(TrainingInterrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)
    assert (stop.value.global_step, stop.value.saved) == (41, False)
    assert signal.getsignal(signal.SIGINT) is before


def test_off_the_main_thread_it_installs_nothing():
    # Python lets only the main thread set a signal handler; training in a worker thread still runs.
    before, seen = signal.getsignal(signal.SIGINT), []

    def train():
        with StopOnCtrlC() as ctrl_c:
            seen.append((ctrl_c.pressed, signal.getsignal(signal.SIGINT)))

    worker = threading.Thread(target=train)
    worker.start()
    worker.join()
    assert seen == [(False, before)]
    assert signal.getsignal(signal.SIGINT) is before
