"""One trainer per model directory; a lock from a dead process never blocks."""

import os
import subprocess
import sys
import textwrap

import pytest

from cnn_mnist.errors import ModelDirLockedError
from cnn_mnist.training.lock import HOLDER_NAME, ModelDirLock


def test_second_holder_is_refused_with_who_holds_it(tmp_path):
    with ModelDirLock(tmp_path):
        with pytest.raises(ModelDirLockedError, match=rf"in use by a running train \(pid {os.getpid()} on"):
            ModelDirLock(tmp_path).acquire()
    with ModelDirLock(tmp_path):  # released on exit
        pass


def test_lock_held_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from cnn_mnist.training.lock import ModelDirLock
            lock = ModelDirLock({str(tmp_path)!r}); lock.acquire()
            print("held", flush=True); sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ModelDirLockedError, match=f"pid {holder.pid}"):
            ModelDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with ModelDirLock(tmp_path):  # the kernel dropped the killed process's lock
        pass


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path, caplog):
    (tmp_path / HOLDER_NAME).write_text("pid 999999 on elsewhere since 2026-01-01 00:00:00")
    with ModelDirLock(tmp_path):
        assert "taking over the lock" in caplog.text and "pid 999999" in caplog.text
    assert (tmp_path / HOLDER_NAME).read_text() == ""  # a clean release leaves no stale PID
