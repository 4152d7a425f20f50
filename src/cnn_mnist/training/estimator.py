"""The Estimator: a model bound to a model directory, which every train, evaluate and predict
restores from and train saves into, as ``tf.estimator.Estimator`` did.

It computes on the device ``RunConfig.device`` names (by default a GPU where there is one): the
network, the optimizer's state and the weight average live there, and so do the arrays of an
input function's stream (see ``inputs``). Checkpoints hold CPU tensors, so a model trained on one
device evaluates, predicts and resumes on any other.

Under torchrun (see ``distributed``) the same calls train data-parallel: every process draws the
same global batch and trains on its part, gradients are summed over processes, and rank 0 alone
touches the model directory. Call train, evaluate and predict on every process.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from cnn_mnist import notebook
from cnn_mnist.data.inputs import ArrayStream, numpy_input_fn
from cnn_mnist.errors import ConfigError, TrainingInterrupted
from cnn_mnist.kernels import devices
from cnn_mnist.kernels.cuda_graphs import GraphedStep, can_capture_on
from cnn_mnist.kernels.precision import DESCRIPTIONS, autocast, gradient_scaler, resolve_precision
from cnn_mnist.model.config import ModelParams
from cnn_mnist.training.config import RunConfig
from cnn_mnist.model.model_fn import EstimatorSpec, Mode, build_optimizer, cnn_model_fn, learning_rate_at
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training import checkpoints, distributed, evaluation
from cnn_mnist.training.averaging import WeightAverage
from cnn_mnist.training.hooks import (CheckpointSaverHook, Hook, LoggingHook, NanGuardHook, SummaryHook, TrainingRun,
                                      end_hooks)
from cnn_mnist.training.interrupt import StopOnCtrlC
from cnn_mnist.training.lock import ModelDirLock

log = logging.getLogger(__name__)

ModelFn = Callable[[torch.nn.Module, torch.Tensor, "torch.Tensor | None", Mode], EstimatorSpec]


class Estimator:
    """Trains, evaluates and predicts with ``model_fn`` on a network whose state lives in ``model_dir``."""

    def __init__(self, model_fn: ModelFn = cnn_model_fn, model_dir: str | os.PathLike = "runs/mnist_convnet_model",
                 params: ModelParams | None = None, config: RunConfig | None = None):
        self.model_fn = model_fn
        # As TensorFlow's Estimator did, params go to a model function that names them.
        self._model_fn_takes_params = "params" in inspect.signature(model_fn).parameters
        self.model_dir = Path(model_dir)
        self.params = params or ModelParams()
        self.config = config or RunConfig()
        self.global_step = 0
        # In an NCCL torchrun, this process's GPU; else the device the config names (a clear
        # error if the machine has none such).
        self.device = distributed.gpu_of_this_process() or devices.resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self._initialize()

    def describe(self) -> str:
        """Where and how this Estimator computes: ``cuda:0 (NVIDIA H200), bf16 autocast``."""
        return f"{devices.describe(self.device)}, {DESCRIPTIONS[self.precision]}"

    def __repr__(self) -> str:
        return f"Estimator(model_dir={str(self.model_dir)!r}, global_step={self.global_step}, on {self.describe()})"

    def input_fn_for(self, split) -> Callable[[], Iterable]:
        """One pass over a split (its ``images`` and ``labels``), in order, at this device's
        inference batch size: what evaluate, the validation hook and the report read. Any batch
        size gives the same figures; the size only decides the speed."""
        return numpy_input_fn(split.images, split.labels, batch_size=devices.inference_batch_size(self.device),
                              num_epochs=1, shuffle=False)

    # -- train ---------------------------------------------------------------------------------

    def train(self, input_fn: Callable[[], Iterable], steps: int | None = None, max_steps: int | None = None,
              hooks: Iterable[Hook] = ()) -> Estimator:
        """Train from the newest checkpoint: ``steps`` more steps, or up to global step ``max_steps``.

        Stops early if the input runs out. Ctrl-C (a notebook's interrupt) stops after the
        current step, saves a checkpoint and raises TrainingInterrupted, a KeyboardInterrupt;
        in IPython that shows as one line saying how to resume, not as a traceback.
        """
        if (steps is None) == (max_steps is None):
            raise ConfigError("give exactly one of steps (to add) and max_steps (an absolute target)")
        for name, value in (("steps", steps), ("max_steps", max_steps)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value}")
        again = "run the cell again" if notebook.in_kernel() else "run it again"
        notebook.say_interrupts_in_one_line(TrainingInterrupted, lambda stop: stop.sentence(again))
        log.info("Training on %s", self.describe())
        log.info("Watch training in TensorBoard: tensorboard --logdir %s", self.model_dir)
        with contextlib.ExitStack() as held:
            held.enter_context(devices.training_settings(self.device, self.config.deterministic))
            held.enter_context(devices.precision_settings(self.precision))
            def open_model_dir() -> dict | None:  # rank 0 alone: the others may not even see the directory
                held.enter_context(ModelDirLock(self.model_dir))
                checkpoints.remove_stale_temporaries(self.model_dir)
                return self._read_checkpoint()  # None where there is none

            saved = self._received_state(distributed.from_chief(open_model_dir))
            if saved is None:
                self._start_fresh()
            else:
                self._resume(saved)
            target = self.global_step + steps if steps is not None else max_steps
            if self.global_step >= target:
                log.info("Already at global step %d, at or past max_steps %d: nothing to train.",
                         self.global_step, target)
                return self
            stream = _on_device(input_fn(), self.device)
            if saved is not None:
                saved.restore_input(stream)
            self._run_steps(iter(stream), stream, target, list(hooks))
        return self

    def _run_steps(self, batches: Iterator, stream, target: int, user_hooks: list[Hook]) -> None:
        run = TrainingRun(model_dir=self.model_dir, start_step=self.global_step, max_steps=target,
                          global_step=self.global_step, optimizer=self.optimizer,
                          save_checkpoint=lambda: self._save(stream), evaluate=self._metrics,
                          network=self.network, device=self.device)
        hooks = self._hooks(user_hooks)
        log.info("Using config: model_dir=%s, %s, %s", self.model_dir, self.params, self.config)
        log.info("Training from global step %d to %d.", self.global_step, target)
        self._run_started = time.perf_counter()
        train_step = self._step_function()
        with StopOnCtrlC(lambda: run.global_step) as ctrl_c:
            for hook in hooks:
                hook.begin(run)
            try:
                # sync: in a distributed run the stop vote is a small all-reduce each step, so a
                # Ctrl-C or a hook's stop request on any rank stops every rank at the same step.
                while run.global_step < target and not distributed.any_rank(run.stop_requested or ctrl_c.pressed):
                    self._set_learning_rate(run.global_step, target)
                    for hook in hooks:
                        hook.before_step(run)
                    try:
                        images, labels = next(batches)
                    except StopIteration:
                        log.info("Input exhausted at global step %d.", run.global_step)
                        break
                    run.batch_size = len(images)
                    images, labels, share = self._this_process_part(images, labels)
                    spec, loss = train_step(images, labels, share)
                    self.global_step = run.global_step = run.global_step + 1
                    # The loss is the global batch's; predictions, images and labels this rank's part.
                    run.loss, run.predictions, run.images, run.labels = loss, spec.predictions, images, labels
                    for hook in hooks:
                        hook.after_step(run)
            except BaseException:
                run.failed = True
                end_hooks(hooks, run, raise_errors=False)  # writers close; savers see run.failed
                raise
            end_hooks(hooks, run, raise_errors=True)
        if ctrl_c.pressed:
            log.warning("Interrupted at global step %d; checkpoint saved.", run.global_step)
            raise TrainingInterrupted(run.global_step, saved=True)

    def _hooks(self, user_hooks: list[Hook]) -> list[Hook]:
        """The built-in hooks around the user's, in the order they run; the saver last."""
        config = self.config
        hooks = [NanGuardHook(config.log_step_count_steps), LoggingHook(config.log_step_count_steps),
                 SummaryHook(config.save_summary_steps, 10 * config.save_summary_steps), *user_hooks,
                 CheckpointSaverHook(config.save_checkpoints_secs, config.save_checkpoints_steps)]
        # Rank 0 alone logs, writes summaries and saves. The hooks every rank runs (the NaN guard,
        # validation) act on step numbers only, so their collectives line up across ranks.
        return [hook for hook in hooks if distributed.is_chief() or not hook.chief_only]

    def _set_learning_rate(self, step: int, target: int) -> None:
        if self.params.lr_schedule != "constant":
            learning_rate = learning_rate_at(step, target, self.params)
            for group in self.optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):  # a graphed step reads it from the device
                    group["lr"].fill_(learning_rate)
                else:
                    group["lr"] = learning_rate

    def _step_function(self) -> Callable[[torch.Tensor, torch.Tensor, float], tuple[EstimatorSpec, torch.Tensor]]:
        """``_train_step``, or on a GPU with ``cuda_graphs`` the same step captured as a CUDA graph
        (see ``kernels.cuda_graphs``) where nothing in it needs the host: one process, a fused
        optimizer (sgd, adam), no fp16 gradient scaler, and this package's model function (one of
        the user's may read values on the host, which a capture cannot)."""
        if not (self.config.cuda_graphs and can_capture_on(self.device) and distributed.world_size() == 1
                and self.scaler is None and self.params.optimizer in ("sgd", "adam")
                and self.model_fn is cnn_model_fn):  # a model function of one's own may read the host
            return self._train_step
        def step(images, labels):
            spec, loss = self._train_step(images, labels, 1.0, autocast_cache=False)
            predictions = {name: value.detach() for name, value in spec.predictions.items()}
            return EstimatorSpec(spec.mode, predictions, spec.loss.detach()), loss.detach()

        graphed = GraphedStep(step, prepare=self._make_optimizer_capturable)
        return lambda images, labels, share: graphed(images, labels)

    def _make_optimizer_capturable(self) -> None:
        """What a captured optimizer step needs: its learning rate in device memory (a schedule
        then writes it there; a float would be frozen into the graph) and, for Adam, capturable."""
        for group in self.optimizer.param_groups:
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(group["lr"], dtype=torch.float32, device=self.device)
            if "capturable" in group:
                group["capturable"] = True

    def _this_process_part(self, images: torch.Tensor,
                           labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This process's contiguous part of the global batch every rank drew (augmented, if at all,
        as a whole), on the device, and its share of the batch (1 in a single process)."""
        count = len(images)
        part = distributed.shard(count)
        if part.start == part.stop:
            raise ConfigError(f"a batch of {count} examples cannot be shared among "
                              f"{distributed.world_size()} processes")
        # Already there for an ArrayStream (moved once); a user's input may yield CPU tensors.
        images = images[part].to(self.device, non_blocking=True)
        labels = labels[part].to(self.device, non_blocking=True)
        return images, labels, (part.stop - part.start) / count
    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, share: float,
                    autocast_cache: bool = True) -> tuple[EstimatorSpec, torch.Tensor]:
        """Forward, backward and update on this process's part of a batch; returns the spec and
        the whole batch's loss (a device tensor: nothing here waits for the device)."""
        with autocast(self.precision, self.device.type, cache=autocast_cache):
            spec = self._model(self.network, images, labels, Mode.TRAIN)
        self.optimizer.zero_grad(set_to_none=True)
        # In a distributed run, each rank's mean loss weighted by its share of the batch, gradients
        # added over ranks: the global batch's mean gradient, as one process would compute it, so
        # the learning rate means what it means there.
        weighted = spec.loss * share if distributed.world_size() > 1 else spec.loss
        # fp16 scales the loss so small gradients survive; the fused optimizers unscale it, and
        # skip a step whose gradients overflowed, on the device.
        (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()
        loss = spec.loss
        if distributed.world_size() > 1:
            loss = distributed.sum_gradients(self.network.parameters(), spec.loss.detach() * share)  # sync: all-reduce
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.average is not None:
            self.average.update()
        return spec, loss

    # -- evaluate and predict -------------------------------------------------------------------

    def evaluate(self, input_fn: Callable[[], Iterable], name: str | None = None,
                 checkpoint_path: str | os.PathLike | None = None, progress: bool = False,
                 write_summaries: bool = True, precision: str | None = None) -> dict[str, float | int]:
        """Accuracy and mean loss over every example the input yields, once, in order.

        ``precision`` (fp32, bf16, fp16, auto) evaluates in another precision than the one this
        Estimator trains in: ``cnn-mnist train`` ends with an fp32 evaluation, as ``cnn-mnist
        evaluate`` runs, so both print the same figures for one checkpoint.

        Results are also written as TensorBoard scalars under ``model_dir/eval`` (or
        ``eval_<name>``) unless ``write_summaries`` is False (a report only reads the directory).
        ``progress`` shows a bar on a terminal (plain lines elsewhere).
        In a distributed run every rank evaluates part of each batch and the sums are added up,
        so the figures are one process's on the same checkpoint.
        """
        path = self._restore(checkpoint_path).path
        results = self._metrics(input_fn, progress=progress, precision=precision)
        log.info("%s for global step %d: %s (checkpoint %s)",
                 "Saving dict" if write_summaries else "Evaluated", self.global_step,  # TensorFlow's words
                 ", ".join(f"{k} = {v:.6g}" for k, v in sorted(results.items())), Path(path).name)
        if write_summaries and distributed.is_chief():
            self._write_eval_summaries(results, name)
        return results

    def _metrics(self, input_fn: Callable[[], Iterable], progress: bool = False,
                 precision: str | None = None) -> dict[str, float | int]:
        """Accuracy and mean loss of the network as it is now (no restore); in a distributed run,
        a collective (each rank takes its part of every batch; the sums are added over ranks)."""
        precision = self.precision if precision is None else resolve_precision(precision, self.device)
        results = evaluation.measure(self._model, self.evaluation_network, _on_device(input_fn(), self.device),
                                     self.device, precision, progress=progress)
        results["global_step"] = self.global_step
        return results

    def predict(self, input_fn: Callable[[], Iterable],
                checkpoint_path: str | os.PathLike | None = None) -> Iterator[dict]:
        """One ``{"classes": int, "probabilities": (10,) float32 array}`` per example, in order.

        The checkpoint is restored now, so a missing one is an error here rather than at the
        first ``next()``.
        """
        self._restore(checkpoint_path)
        return self._predictions(input_fn)

    def _predictions(self, input_fn) -> Iterator[dict]:
        for batch in _on_device(input_fn(), self.device):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            # the settings held per batch alone: a generator's caller runs between its batches
            with (torch.inference_mode(), devices.precision_settings(self.precision),
                  autocast(self.precision, self.device.type)):
                spec = self._model(self.evaluation_network, images.to(self.device), None, Mode.PREDICT)
            classes = spec.predictions["classes"].cpu().numpy()  # sync: one per batch
            probabilities = spec.predictions["probabilities"].cpu().numpy()
            for i in range(len(classes)):
                yield {"classes": int(classes[i]), "probabilities": probabilities[i]}

    # -- state ----------------------------------------------------------------------------------

    def _model(self, network, images, labels, mode: Mode) -> EstimatorSpec:
        if self._model_fn_takes_params:
            return self.model_fn(network, images, labels, mode, params=self.params)
        return self.model_fn(network, images, labels, mode)

    @property
    def evaluation_network(self) -> torch.nn.Module:
        """The weights evaluate and predict use: the moving average where there is one."""
        return self.average.network if self.average is not None else self.network

    def latest_checkpoint(self) -> Path | None:
        return checkpoints.latest_checkpoint(self.model_dir)

    def _initialize(self) -> None:
        """Fresh weights and optimizer, determined by the seed alone."""
        generator = torch.Generator().manual_seed(self.config.seed)
        network = ConvNet(dropout_rate=self.params.dropout, generator=generator, initializer=self.params.initializer,
                          num_classes=len(self.params.classes))
        # Channels-last lets oneDNN run the convolutions and their backward without layout
        # conversions; with pooling before ReLU it makes a training step ~1.35x faster here.
        self.network = network.to(self.device, memory_format=torch.channels_last)
        self._start_training_objects()
        self.global_step = 0
        self.training_seconds = 0.0

    def _start_training_objects(self) -> None:
        """A fresh optimizer, gradient scaler (fp16) and weight average (``ema_decay``) for the network as it is."""
        self.optimizer = build_optimizer(self.network.parameters(), self.params)
        self.scaler = gradient_scaler(self.precision, self.device)
        self.average = WeightAverage(self.network, self.params.ema_decay) if self.params.ema_decay else None

    def _restore(self, checkpoint_path: str | os.PathLike | None = None) -> checkpoints.TrainingState:
        """The weights evaluate and predict use, from the newest (or the given) checkpoint; an error
        if there is none. In a distributed run rank 0 reads the file and every rank restores it."""
        state = self._received_state(distributed.from_chief(lambda: self._read_checkpoint(checkpoint_path)))
        if state is None:
            raise checkpoints.no_checkpoint_error(self.model_dir)
        self.average = state.restore_weights(self.network, self.average, self.params.ema_decay)
        self.global_step, self.training_seconds = state.global_step, state.training_seconds or 0.0
        return state

    def _read_checkpoint(self, checkpoint_path: str | os.PathLike | None = None) -> dict | None:
        """The given checkpoint or the newest good one, as ``from_chief`` can send it; None if none."""
        state = checkpoints.find_state(self.model_dir, checkpoint_path)
        return None if state is None else {"path": str(state.path), "state": state.to_dict()}

    @staticmethod
    def _received_state(found: dict | None) -> checkpoints.TrainingState | None:
        return None if found is None else checkpoints.TrainingState.from_dict(found["state"], found["path"])

    def _start_fresh(self) -> None:
        self._initialize()
        # Dropout's random stream: the run's seed on rank 0 (and in a single process), and a
        # stream of its own on every other rank, so ranks do not share masks.
        torch.manual_seed(self.config.seed + distributed.rank())

    def _resume(self, state: checkpoints.TrainingState) -> None:
        """This run's fresh optimizer, scaler and average, then everything the checkpoint holds for
        them and the network (see ``TrainingState.restore_training``)."""
        self._start_training_objects()
        self.global_step, self.training_seconds = state.global_step, state.training_seconds or 0.0
        state.restore_training(self.network, self.average, self.optimizer, self.scaler, self.params, self.device,
                               stream_seed=self._resumed_stream_seed())

    def _resumed_stream_seed(self) -> int:
        """A seed for a random stream the checkpoint does not hold: fixed by the run, rank and step."""
        return self.config.seed + distributed.rank() + self.global_step * distributed.world_size()

    def _save(self, stream) -> Path:
        training_seconds = self.training_seconds + time.perf_counter() - self._run_started
        state = checkpoints.capture(self.global_step, self.network, self.average, self.optimizer, self.scaler,
                                    self.params, self.device, training_seconds, stream)
        return state.save(self.model_dir, self.config.keep_checkpoint_max)

    def _write_eval_summaries(self, results: dict, name: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: ~1 s, so only here

        with SummaryWriter(log_dir=str(self.model_dir / ("eval" if not name else f"eval_{name}"))) as writer:
            for key, value in results.items():
                if key != "global_step":
                    writer.add_scalar(key, value, self.global_step)


def _on_device(stream, device: torch.device):
    """An ArrayStream moved to ``device`` once (its arrays stay resident there); any other input as it is."""
    return stream.to(device) if isinstance(stream, ArrayStream) else stream
