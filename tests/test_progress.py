"""Progress: a bar on a terminal, plain INFO lines elsewhere, and the figures both show."""

import io
import logging

import pytest

from cnn_mnist.progress import Progress, format_duration


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_the_output_is_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="cnn_mnist.progress")
    stream = io.StringIO()
    with Progress("train", total=200, stream=stream, every_s=0) as progress:
        assert not progress.is_bar
        progress.update(50, loss=0.25, accuracy=0.9)
    lines = [r.getMessage() for r in caplog.records if r.name == "cnn_mnist.progress"]
    assert lines[0].startswith("train: step 50/200 (25%), loss 0.2500, accuracy 0.9000, ")
    assert "ETA" in lines[0]
    assert len(lines) == 2 and "ETA" not in lines[1]  # the closing line; nothing left to wait for
    assert stream.getvalue() == ""  # no bar characters in a log file


def test_plain_lines_are_spaced_out_in_time(caplog):
    caplog.set_level(logging.INFO, logger="cnn_mnist.progress")
    with Progress("train", total=1000, stream=io.StringIO(), every_s=3600) as progress:
        for step in range(1, 1001):
            progress.update(step)
    assert len([r for r in caplog.records if r.name == "cnn_mnist.progress"]) == 1  # only the end


def test_a_bar_on_a_terminal_with_the_figures_and_log_lines_above_it(caplog):
    terminal = FakeTerminal()
    with Progress("train", total=100, stream=terminal) as progress:
        assert progress.is_bar
        progress.update(100, loss=0.125, accuracy=0.875, **{"images/s": 6120.4})
    text = terminal.getvalue()
    assert "train: 100%" in text and "100/100" in text
    assert "loss 0.1250, accuracy 0.8750, images/s 6,120" in text
    assert not [r for r in caplog.records if r.name == "cnn_mnist.progress"]  # the bar replaces the lines


def test_a_resumed_run_counts_its_eta_from_where_it_started(monkeypatch):
    clock = iter([0.0, 10.0]).__next__  # started, then now
    monkeypatch.setattr("cnn_mnist.progress.time.perf_counter", clock)
    progress = Progress("train", total=2000, initial=1000, stream=io.StringIO(), every_s=3600)
    progress.done = 1500  # 500 steps in 10 s: 500 left take 10 s more
    assert progress.line() == "train: step 1,500/2,000 (75%), 10.0s elapsed, ETA 10.0s"


def test_bytes_are_shown_as_bytes():
    progress = Progress("download x.gz", total=4 * 1024 * 1024, bytes_=True, stream=io.StringIO())
    progress.done = 1024 * 1024
    assert progress.line().startswith("download x.gz: 1.0 MiB/4.0 MiB (25%)")


@pytest.mark.parametrize("seconds, text", [(3.24, "3.2s"), (65, "1m5s"), (3725, "1h2m")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
