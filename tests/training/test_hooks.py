"""Hooks: when each built-in fires, and that values are read off tensors only when it does."""

import logging
from pathlib import Path

import pytest
import torch

from cnn_mnist.errors import NanLossError
from cnn_mnist.training.hooks import (
    CheckpointSaverHook,
    Hook,
    LoggingHook,
    NanGuardHook,
    ProbabilitiesLogHook,
    TrainingRun,
    end_hooks,
    fires,
)


class CountingLoss:
    """Stands in for the loss tensor and counts host reads (.item(), a sync on an accelerator)."""

    def __init__(self, value=0.5):
        self.value, self.reads = value, 0

    def item(self):
        self.reads += 1
        return self.value


def make_run(start_step=0, **kw):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    saved = []
    run = TrainingRun(model_dir=Path("."), start_step=start_step, max_steps=10_000, global_step=start_step,
                      optimizer=optimizer, save_checkpoint=lambda: saved.append(run.global_step) or Path("x"), **kw)
    return run, saved


def drive(hook, run, steps, loss=None):
    hook.begin(run)
    for _ in range(steps):
        hook.before_step(run)
        run.global_step += 1
        run.loss = loss if loss is not None else torch.tensor(0.5)
        run.predictions = {"probabilities": torch.full((2, 10), 0.1), "classes": torch.zeros(2, dtype=torch.long)}
        run.labels = torch.zeros(2, dtype=torch.long)
        hook.after_step(run)
    hook.end(run)


def test_fires_on_the_runs_first_step_and_every_multiple():
    run, _ = make_run(start_step=250)
    fired = []
    for step in range(251, 520):
        run.global_step = step
        if fires(run, 100):
            fired.append(step)
    assert fired == [251, 300, 400, 500]
    assert not fires(run, 0)


def test_logging_hook_reads_the_loss_only_when_it_logs(caplog):
    caplog.set_level(logging.INFO)
    run, _ = make_run()
    loss = CountingLoss(0.25)
    drive(LoggingHook(every_n_steps=100), run, 350, loss=loss)
    assert loss.reads == 4  # steps 1, 100, 200, 300
    assert "loss = 0.25, step = 300" in caplog.text
    assert caplog.text.count("global_step/sec") == 3


def test_probabilities_hook_logs_every_n_and_zero_means_never(caplog):
    caplog.set_level(logging.INFO)
    drive(ProbabilitiesLogHook(every_n_steps=50), make_run()[0], 120)
    assert caplog.text.count("probabilities = [[0.1") == 3  # steps 1, 50, 100
    caplog.clear()
    drive(ProbabilitiesLogHook(every_n_steps=0), make_run()[0], 120)
    assert "probabilities" not in caplog.text


class CountingProbabilities:
    """Stands in for the probabilities tensor and counts copies to the host (.cpu(), a sync)."""

    def __init__(self):
        self.reads = 0

    def detach(self):
        return self

    def cpu(self):
        self.reads += 1
        return torch.full((2, 10), 0.1)


def test_with_info_off_the_log_hooks_read_nothing_off_the_device(caplog):
    caplog.set_level(logging.WARNING, logger="cnn_mnist")  # as `train -q` and the benchmarks run
    run, _ = make_run()
    loss, probabilities = CountingLoss(), CountingProbabilities()
    hooks = [LoggingHook(every_n_steps=100), ProbabilitiesLogHook(every_n_steps=50)]
    for hook in hooks:
        hook.begin(run)
    for _ in range(350):
        run.global_step += 1
        run.loss, run.predictions = loss, {"probabilities": probabilities}
        for hook in hooks:
            hook.after_step(run)
    assert (loss.reads, probabilities.reads) == (0, 0)
    caplog.set_level(logging.INFO, logger="cnn_mnist")
    run.global_step = 400
    for hook in hooks:
        hook.after_step(run)
    assert (loss.reads, probabilities.reads) == (1, 1)


def test_nan_guard_stops_training_with_the_tutorials_message():
    run, _ = make_run()
    hook = NanGuardHook(check_every_n_steps=10)
    hook.begin(run)
    for step, value in enumerate([1.0, 2.0, float("nan"), 1.0], start=1):
        run.global_step, run.loss = step, torch.tensor(value)
        hook.after_step(run)  # the NaN at step 3 is remembered, not read yet
    with pytest.raises(NanLossError, match="NaN loss during training"):
        hook.end(run)


def test_nan_guard_catches_infinity_at_its_check_step():
    run, _ = make_run()
    hook = NanGuardHook(check_every_n_steps=5)
    hook.begin(run)
    with pytest.raises(NanLossError):
        for step in range(1, 6):
            run.global_step, run.loss = step, torch.tensor(float("inf") if step == 2 else 1.0)
            hook.after_step(run)


def test_checkpoint_saver_by_steps_saves_the_start_every_n_and_the_end():
    run, saved = make_run()
    drive(CheckpointSaverHook(save_secs=None, save_steps=10), run, 25)
    assert saved == [0, 10, 20, 25]


def test_checkpoint_saver_by_time_saves_the_end_of_a_resumed_run(monkeypatch):
    run, saved = make_run(start_step=40)  # step 40 was restored from a checkpoint: no need to save it again
    drive(CheckpointSaverHook(save_secs=600), run, 30)
    assert saved == [70]


def test_checkpoint_saver_by_time_saves_when_the_interval_has_passed(monkeypatch):
    clock = iter(range(0, 10_000, 100))  # each reading of the clock is 100 s after the last
    monkeypatch.setattr("cnn_mnist.training.hooks.time.monotonic", lambda: next(clock))
    run, saved = make_run(start_step=40)
    drive(CheckpointSaverHook(save_secs=250), run, 10)
    assert saved == [43, 46, 49, 50]


def test_checkpoint_saver_does_not_save_after_a_failure():
    run, saved = make_run(start_step=3)
    hook = CheckpointSaverHook(save_secs=600)
    hook.begin(run)
    run.global_step = 5
    run.failed = True
    hook.end(run)
    assert saved == []


def test_progress_hook_shows_means_since_its_last_refresh_and_reads_only_then(caplog):
    from cnn_mnist.training.hooks import ProgressHook

    caplog.set_level(logging.INFO, logger="cnn_mnist.progress")
    hook = ProgressHook(bar=False, refresh_s=3600)  # nothing read until the end
    run, _ = make_run()
    run.max_steps = 4
    hook.begin(run)
    for step, (loss, correct) in enumerate([(1.0, 2), (0.5, 1), (0.25, 0), (0.25, 1)], start=1):
        run.global_step, run.loss = step, torch.tensor(loss)
        run.predictions = {"classes": torch.tensor([1, 1])}
        run.labels = torch.tensor([1, 1]) if correct == 2 else torch.tensor([1, 0]) if correct else torch.tensor([0, 0])
        hook.after_step(run)
        assert hook.progress.done == 0  # not refreshed: the sums stay on the device
    hook.end(run)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "cnn_mnist.progress"]
    assert line.startswith("train: step 4/4 (100%), loss 0.5000, accuracy 0.5000, images/s ")


def test_filter_grid_shows_every_filter_enlarged_with_zero_as_mid_grey():
    from cnn_mnist.training.hooks import filter_grid

    weight = torch.zeros(32, 1, 5, 5)
    weight[0, 0, 0, 0], weight[1, 0, 0, 0] = 2.0, -1.0
    grid = filter_grid(weight, columns=8, scale=6, gap=2)
    assert grid.shape == (1, 4 * 32 + 2, 8 * 32 + 2)
    assert grid[0, 2, 2] == 1.0 and grid[0, 2, 34] == 0.25  # largest |w| is white; -1/2 of it darker grey
    assert grid[0, 10, 10] == 0.5  # zero weight: mid-grey


class Ends(Hook):
    """Records the run's state when its end() runs, then fails if given an error to raise."""

    def __init__(self, error=None):
        self.error, self.saw_failed = error, None

    def end(self, run):
        self.saw_failed = run.failed
        if self.error is not None:
            raise self.error


def test_every_hook_ends_after_one_fails_and_the_later_ones_see_the_run_failed():
    run, _ = make_run()
    first, failing, later = Ends(), Ends(NanLossError("NaN loss during training")), Ends()
    with pytest.raises(NanLossError):
        end_hooks([first, failing, later], run, raise_errors=True)
    assert (first.saw_failed, later.saw_failed, run.failed) == (False, True, True)


def test_after_a_failed_run_each_end_failure_is_logged_not_raised(caplog):
    run, _ = make_run()
    run.failed = True
    later = Ends()
    end_hooks([Ends(OSError("disk full")), later], run, raise_errors=False)
    assert later.saw_failed and "Ends.end() failed after the run had failed: disk full" in caplog.text
