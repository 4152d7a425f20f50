"""Training hooks: code that runs at four points of a training run (begin, before a step, after a
step, end), and the built-in ones: loss and speed log, probabilities log, NaN guard,
TensorBoard summaries, checkpoint saving, validation and a progress bar.

A hook that does not fire on a step costs an integer comparison: values are read off the
tensors (``.item()``, a host-device sync on an accelerator) only on the steps where it fires,
and the two log hooks do not fire while their logger would drop the line (INFO off).

In a distributed run a hook with ``chief_only`` runs on rank 0 alone; the others run on every
rank, so anything collective in them must happen at step numbers, which all ranks share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cnn_mnist.errors import NanLossError
from cnn_mnist.kernels import devices
from cnn_mnist.model.network import as_image_batch
from cnn_mnist.progress import Progress
from cnn_mnist.training import distributed

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What hooks see: the run's settings, and after each step what the step produced."""

    model_dir: Path
    start_step: int
    max_steps: int
    global_step: int
    optimizer: torch.optim.Optimizer
    save_checkpoint: Callable[[], Path]
    network: torch.nn.Module | None = None  # the weights being trained
    images: torch.Tensor | None = None  # the last step's input batch, as the input function gave it
    evaluate: Callable[[Callable], dict] | None = None  # metrics of the current weights on an input_fn
    loss: torch.Tensor | None = None  # batch-mean loss of the last step (the whole batch's, over all ranks)
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)  # of the last step (this rank's part)
    labels: torch.Tensor | None = None  # of the last step (this rank's part)
    batch_size: int | None = None  # examples in the last step's batch, all ranks' parts together
    device: torch.device = torch.device("cpu")  # where the network, and so the step's tensors, live
    stop_requested: bool = False
    failed: bool = False  # set when the run ends with an exception other than Ctrl-C

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def is_first_step(self) -> bool:
        return self.global_step == self.start_step + 1

    def request_stop(self) -> None:
        self.stop_requested = True


class Hook:
    """Override any of the four points; each receives the same ``TrainingRun``."""

    chief_only = False
    """In a distributed run, run on rank 0 alone (a hook that logs or writes files) rather than on every rank."""

    def begin(self, run: TrainingRun) -> None: ...

    def before_step(self, run: TrainingRun) -> None: ...

    def after_step(self, run: TrainingRun) -> None: ...

    def end(self, run: TrainingRun) -> None: ...


def fires(run: TrainingRun, every_n_steps: int) -> bool:
    """True on the run's first step and on every multiple of ``every_n_steps``."""
    return every_n_steps > 0 and (run.is_first_step() or run.global_step % every_n_steps == 0)


def end_hooks(hooks: list[Hook], run: TrainingRun, raise_errors: bool) -> None:
    """Run every hook's end(), even after one of them fails (the NaN guard raises there); a
    failure marks the run failed, so later hooks (the checkpoint saver) see it. The first failure
    is raised afterwards where ``raise_errors``; else (the run failed already) each is logged."""
    first_error = None
    for hook in hooks:
        try:
            hook.end(run)
        except Exception as error:
            run.failed = True
            first_error = first_error or error
            if not raise_errors:
                log.warning("%s.end() failed after the run had failed: %s", type(hook).__name__, error)
    if first_error is not None and raise_errors:
        raise first_error


class LoggingHook(Hook):
    """The tutorial's INFO lines: ``loss = ..., step = ...`` and ``global_step/sec: ...``."""

    chief_only = True

    def __init__(self, every_n_steps: int = 100):
        self.every_n_steps = every_n_steps

    def begin(self, run):
        self._last_step, self._last_time = run.global_step, time.perf_counter()

    def after_step(self, run):
        if not fires(run, self.every_n_steps) or not log.isEnabledFor(logging.INFO):
            return
        loss = run.loss.item()  # sync: only on logging steps, and only when the line is shown
        now = time.perf_counter()
        elapsed_s = now - self._last_time
        log.info("loss = %.6g, step = %d (%.3f sec)", loss, run.global_step, elapsed_s)
        if not run.is_first_step():
            log.info("global_step/sec: %.4g", (run.global_step - self._last_step) / elapsed_s)
        self._last_step, self._last_time = run.global_step, now


class ProbabilitiesLogHook(Hook):
    """The tutorial's ``LoggingTensorHook`` on ``softmax_tensor``: a batch's probabilities."""

    chief_only = True

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps

    def after_step(self, run):
        if fires(run, self.every_n_steps) and log.isEnabledFor(logging.INFO):
            probabilities = run.predictions["probabilities"].detach().cpu().numpy()  # sync
            text = np.array2string(probabilities, precision=4, suppress_small=True, threshold=40, edgeitems=2)
            log.info("probabilities = %s", text.replace("\n", ""))


class NanGuardHook(Hook):
    """Stops training with ``NaN loss during training`` when the loss stops being finite.

    Finiteness is accumulated on the device every step and read every ``check_every_n_steps``
    and at the end, so the guard adds no sync; checkpoints refuse non-finite weights on their
    own, so the last checkpoint saved is always a good one. In a distributed run every rank
    checks the same loss (the whole batch's), so all of them stop at the same step.
    """

    def __init__(self, check_every_n_steps: int = 100):
        self.check_every_n_steps = check_every_n_steps

    def begin(self, run):
        self._all_finite = torch.ones((), dtype=torch.bool, device=run.device)
        self._checked_step = run.global_step

    def after_step(self, run):
        self._all_finite &= torch.isfinite(run.loss.detach())
        if fires(run, self.check_every_n_steps):
            self._check(run)

    def end(self, run):
        if not run.failed:
            self._check(run)

    def _check(self, run):
        if not self._all_finite.item():  # sync
            raise NanLossError(
                f"NaN loss during training (between steps {self._checked_step} and {run.global_step}); "
                "the last good checkpoint is kept: lower the learning rate and run again to resume from it"
            )
        self._checked_step = run.global_step


class SummaryHook(Hook):
    """TensorBoard summaries: scalars (loss, batch accuracy, learning rate, global_step/sec) every
    ``every_n_steps``; images of the first batch's inputs once, and of the first-layer filters on
    the first step, every ``images_every_n_steps`` and at the end."""

    INPUT_IMAGES = 8
    chief_only = True

    def __init__(self, every_n_steps: int = 100, images_every_n_steps: int = 1000):
        self.every_n_steps, self.images_every_n_steps = every_n_steps, images_every_n_steps

    def begin(self, run):
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: ~1 s, so only here

        self._writer = SummaryWriter(log_dir=str(run.model_dir))
        self._last_step, self._last_time = run.global_step, time.perf_counter()
        self._filters_step = None

    def after_step(self, run):
        step = run.global_step
        if run.is_first_step() and run.images is not None:
            inputs = run.images.flatten(0, 1) if run.images.dim() == 5 else run.images  # views side by side
            self._writer.add_images("inputs", as_image_batch(inputs[:self.INPUT_IMAGES]), step)
        if fires(run, self.images_every_n_steps):
            self._write_filters(run)
        if not fires(run, self.every_n_steps):
            return
        now = time.perf_counter()
        accuracy = (run.predictions["classes"] == run.labels).float().mean()
        self._writer.add_scalar("loss", run.loss.item(), step)  # sync
        self._writer.add_scalar("accuracy", accuracy.item(), step)
        self._writer.add_scalar("learning_rate", run.learning_rate, step)
        if step > self._last_step and not run.is_first_step():
            self._writer.add_scalar("global_step/sec", (step - self._last_step) / (now - self._last_time), step)
        self._last_step, self._last_time = step, now

    def end(self, run):
        if not run.failed and self._filters_step != run.global_step:
            self._write_filters(run)
        self._writer.close()

    def _write_filters(self, run):
        if run.network is None or not hasattr(run.network, "conv1"):
            return
        self._writer.add_image("conv1/filters", filter_grid(run.network.conv1.weight), run.global_step)
        self._filters_step = run.global_step


def filter_grid(weight: torch.Tensor, columns: int = 8, scale: int = 6, gap: int = 2) -> torch.Tensor:
    """First-layer filters (N, 1, k, k) as one (1, H, W) grey image: each filter enlarged ``scale``
    times so TensorBoard shows it at a readable size, 0 as mid-grey, one shared scale for all."""
    kernels = weight.detach().float().cpu()[:, 0]  # one copy from a GPU, not one per filter
    kernels = 0.5 + 0.5 * kernels / kernels.abs().max().clamp_min(1e-12)
    kernels = kernels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    count, size = kernels.shape[0], kernels.shape[1]
    rows = -(-count // columns)
    grid = torch.ones(rows * (size + gap) + gap, columns * (size + gap) + gap)
    for i in range(count):
        top, left = gap + (i // columns) * (size + gap), gap + (i % columns) * (size + gap)
        grid[top:top + size, left:left + size] = kernels[i]
    return grid.unsqueeze(0)


class CheckpointSaverHook(Hook):
    """Saves at the start of a fresh run, every ``save_secs`` or ``save_steps``, and at the end.

    A resumed run does not save at its start: that state is the checkpoint it was restored from.
    Saving is rank 0's alone and involves no other rank, so it may fire on time.
    """

    chief_only = True

    def __init__(self, save_secs: float | None = 600, save_steps: int | None = None):
        if (save_secs is None) == (save_steps is None):
            raise ValueError("give exactly one of save_secs and save_steps")
        self.save_secs, self.save_steps = save_secs, save_steps

    def begin(self, run):
        self._last_saved_step, self._last_save_time = run.start_step, time.monotonic()
        if run.start_step == 0:  # the initial weights: what the seed made, before any step
            self._save(run)

    def after_step(self, run):
        if self.save_steps is not None:
            due = run.global_step % self.save_steps == 0
        else:
            due = time.monotonic() - self._last_save_time >= self.save_secs
        if due:
            self._save(run)

    def end(self, run):
        # Also on Ctrl-C (the step loop stops between steps); never after a failure, whose
        # weights may be the reason it failed.
        if not run.failed and self._last_saved_step != run.global_step:
            self._save(run)

    def _save(self, run):
        path = run.save_checkpoint()
        log.info("Saving checkpoints for %d into %s.", run.global_step, path)
        self._last_saved_step, self._last_save_time = run.global_step, time.monotonic()


class ValidationHook(Hook):
    """Evaluates the current weights on held-out data every ``every_n_steps`` and at the end.

    Logs ``validation: accuracy = ..., loss = ...``, writes the figures as TensorBoard scalars
    under ``model_dir/eval_<name>``, and keeps them in ``history`` with the training time so far
    (wall time since the run began, less the time spent evaluating). In a distributed run every
    rank evaluates its part (a collective, on step numbers) and rank 0 logs and writes.
    """

    def __init__(self, every_n_steps: int, input_fn: Callable, name: str = "validation"):
        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps, self.input_fn, self.name = every_n_steps, input_fn, name
        self.history: list[dict] = []

    def begin(self, run):
        from torch.utils.tensorboard import SummaryWriter

        writes = distributed.is_chief()  # every rank evaluates; rank 0 alone logs and writes
        self._writer = SummaryWriter(log_dir=str(run.model_dir / f"eval_{self.name}")) if writes else None
        self._started, self._evaluating_s = time.perf_counter(), 0.0

    def after_step(self, run):
        if run.global_step % self.every_n_steps == 0:
            self._evaluate(run)

    def end(self, run):
        if not run.failed and (not self.history or self.history[-1]["global_step"] != run.global_step):
            self._evaluate(run)
        if self._writer is not None:
            self._writer.close()

    def _evaluate(self, run):
        devices.synchronize(run.device)  # sync: on a GPU the steps queued so far count as training time
        began = time.perf_counter()
        training_s = began - self._started - self._evaluating_s
        results = run.evaluate(self.input_fn)
        self._evaluating_s += time.perf_counter() - began
        self.history.append({"global_step": run.global_step, "training_s": training_s, **results})
        if self._writer is None:
            return
        for key, value in results.items():
            if key != "global_step":
                self._writer.add_scalar(key, value, run.global_step)
        log.info("%s at step %d: accuracy = %.4f, loss = %.4f", self.name, run.global_step,
                 results["accuracy"], results["loss"])


class ProgressHook(Hook):
    """``train: step 2,000/20,000 (10%), loss 0.23, accuracy 0.94, images/s 6,120 ... ETA`` as a bar
    on a terminal, or as a plain line every 30 s elsewhere (see ``progress.Progress``).

    Loss and batch accuracy are summed on the device every step, so no step waits on them; the
    sums are read (and shown as means since the last refresh) at most every ``refresh_s``.
    In a distributed run images/s counts every rank's images; the accuracy is rank 0's part's.
    """

    chief_only = True

    def __init__(self, bar: bool | None = None, refresh_s: float = 0.5):
        self.bar, self.refresh_s = bar, refresh_s

    def begin(self, run):
        self.progress = Progress("train", total=run.max_steps, initial=run.global_step, bar=self.bar)
        self._started, self._run_images, self._device = time.perf_counter(), 0, run.device
        self._reset(self._started)

    def after_step(self, run):
        self._loss_sum += run.loss.detach().float()
        self._correct += (run.predictions["classes"] == run.labels).sum()
        self._examples += len(run.labels)
        self._images += len(run.labels) if run.batch_size is None else run.batch_size
        self._steps += 1
        now = time.perf_counter()
        if now - self._since >= self.refresh_s:
            self._refresh(run, now)

    def end(self, run):
        now = time.perf_counter()
        if self._steps:
            self._refresh(run, now)
        # The last line's speed is the whole run's (validation pauses included), not the last moment's.
        self.progress.close(**{"images/s": self._run_images / max(now - self._started, 1e-9)})

    def _refresh(self, run, now):
        self.progress.update(run.global_step, loss=self._loss_sum.item() / self._steps,  # sync
                             accuracy=self._correct.item() / self._examples,
                             **{"images/s": self._images / (now - self._since)})
        self._run_images += self._images
        self._reset(now)

    def _reset(self, now):
        self._loss_sum = torch.zeros((), device=self._device)
        self._correct = torch.zeros((), dtype=torch.long, device=self._device)
        self._examples, self._images, self._steps, self._since = 0, 0, 0, now
