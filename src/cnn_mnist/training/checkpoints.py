"""Checkpoints: one file per saved step, written atomically, the newest few kept, and the mapping
between a run's live objects and what the file holds.

``model.ckpt-<step>.pt`` holds a ``TrainingState``: the network, the weight average, the
optimizer, the global step, every RNG state and the input position. That type is the one place
the file's keys are named, and ``capture`` and the ``restore_*`` methods the one place live
objects (network, average, optimizer, scaler, random streams, input) are turned into them and
back, each object by its ``state_dict`` and ``load_state_dict``, as ignite's ``Checkpoint`` does;
the Estimator, the Predictor and the report read and write through them.
It is written to a hidden temporary file in the same directory and renamed over the final name,
so a crash at any moment leaves either the old set of files or the new one, never a
half-written checkpoint under a real name. Each file carries a SHA-256
of its contents, so a file damaged later (a disk error, a half-finished copy) is detected on
load; the Estimator then warns and falls back to the previous checkpoint. Loading never
unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from cnn_mnist.data.inputs import ArrayStream
from cnn_mnist.data.datasets import DIGITS
from cnn_mnist.errors import CheckpointError, ConfigError, NanLossError
from cnn_mnist.files import write_atomically
from cnn_mnist.kernels import devices
from cnn_mnist.model.config import ModelParams
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training import distributed
from cnn_mnist.training.averaging import WeightAverage

FORMAT = "cnn_mnist.checkpoint/2"
# Format 1 flattened the last feature map channel-major (c, h, w) before the dense layer;
# format 2 flattens it (h, w, c), as TensorFlow did and as channels-last memory holds it.
_FORMAT_1 = "cnn_mnist.checkpoint/1"
_DENSE_SHAPE = (1024, 3136)
_NAME = re.compile(r"^model\.ckpt-(\d+)\.pt$")
_TEMP_PREFIX = ".model.ckpt-"

log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """What a checkpoint holds: everything a run needs to resume exactly, and what inference reads."""

    global_step: int
    network: dict  # the trained weights (a state_dict of CPU tensors)
    averaged_network: dict | None = None  # the weight average, where the run kept one (--ema-decay)
    optimizer: dict | None = None  # its state_dict, learning rate a number (see _portable)
    scaler: dict | None = None  # fp16's gradient scaler
    rng: dict = field(default_factory=dict)  # {"torch": CPU stream, "cuda": the GPU's, where it ran}
    params: dict = field(default_factory=dict)  # the ModelParams it was trained with, as a dict
    training_seconds: float | None = None  # training wall time of every run that led here (resumes add up)
    input: dict | None = None  # the input stream's position (ArrayStream.state_dict)
    path: Path | None = None  # the file it was read from; not saved

    @property
    def uses_weight_average(self) -> bool:
        return self.averaged_network is not None

    @property
    def weights(self) -> str:
        """Which weights inference runs on, in the words every command and export says it."""
        return weights_label(self.uses_weight_average)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names the network was trained on (MNIST's digits for checkpoints older than them)."""
        return tuple(self.params.get("classes", DIGITS))

    @property
    def inference_key(self) -> str:
        """The weights evaluate and predict use: the average where there is one."""
        return "averaged_network" if self.uses_weight_average else "network"

    def restore(self, network: nn.Module, key: str = "network") -> None:
        """Load ``key``'s weights into ``network``, first checking that they belong to its architecture."""
        restore_network(network, {key: getattr(self, key)}, self.path or "checkpoint", key=key)

    def restore_weights(self, network: nn.Module, average: WeightAverage | None,
                        decay: float) -> WeightAverage | None:
        """What evaluate and predict need: the trained weights into ``network`` and the checkpoint's
        average into ``average`` (a new one, taking ``decay``, where that is None). Returns the
        average, or None where the checkpoint has none."""
        self.restore(network)
        if self.uses_weight_average:
            average = average if average is not None else WeightAverage(network, decay)
            self.restore(average.network, key="averaged_network")
        log.info("Restoring parameters from %s", self.path)
        return average if self.uses_weight_average else None

    def restore_training(self, network: nn.Module, average: WeightAverage | None, optimizer: torch.optim.Optimizer,
                         scaler: torch.amp.GradScaler | None, params: ModelParams, device: torch.device,
                         stream_seed: int) -> None:
        """What resuming needs, into a run's fresh objects (those ``capture`` takes): the weights;
        the average where the run keeps one (the checkpoint's, or else started from the restored
        weights); the optimizer's state where it is of the same optimizer, with this run's learning
        rate; the gradient scaler's; the random streams. ``stream_seed`` seeds a stream the
        checkpoint does not hold (see ``devices.restore_rng_state``). A ConfigError, before anything
        is restored, where the checkpoint's classes are not this run's."""
        if self.classes != params.classes:
            raise ConfigError(f"{self.path.parent} was trained on the classes {', '.join(self.classes)}, not "
                              f"{', '.join(params.classes)}; train these in another --model-dir")
        self.restore(network)
        if average is not None:
            if self.uses_weight_average:
                self.restore(average.network, key="averaged_network")
            else:
                average.restart()
        log.info("Restoring parameters from %s", self.path)
        if self.optimizer is not None and self.params.get("optimizer") == params.optimizer:
            optimizer.load_state_dict(self.optimizer)
            for group in optimizer.param_groups:  # this run's learning rate, not the saved one
                group["lr"] = params.learning_rate
        else:
            log.warning("%s was trained with another optimizer; %s starts with fresh state", self.path.name,
                        params.optimizer)
        if scaler is not None and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        if self.rng:
            torch.set_rng_state(self.rng["torch"])
            # the GPU's dropout stream; from another device's checkpoint, a stream fixed by the step
            devices.restore_rng_state(device, self.rng, stream_seed)
        if distributed.rank() > 0:
            # A checkpoint holds rank 0's stream alone (rank 0 alone saves); every other rank starts
            # a new one, so a resumed distributed run with dropout is not bit-identical to an unbroken one.
            torch.manual_seed(stream_seed)

    def restore_input(self, stream) -> None:
        """The data order's position into an ArrayStream (any other input starts where it starts)."""
        if isinstance(stream, ArrayStream) and self.input is not None and not stream.load_state_dict(self.input):
            log.warning("the input differs from the checkpoint's (size or seed): its data order starts anew")

    def to_dict(self) -> dict:
        """The saved keys (the ones set), as ``save_checkpoint`` writes them."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "path" and getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, state: dict, path: str | os.PathLike | None = None) -> TrainingState:
        names = {f.name for f in fields(cls)} - {"path"}
        values = {key: value for key, value in state.items() if key in names}  # format, sha256 are the file's
        values["global_step"] = int(values["global_step"])
        if values.get("training_seconds") is not None:  # absent from the first checkpoints
            values["training_seconds"] = float(values["training_seconds"])
        return cls(**values, path=None if path is None else Path(path))

    def save(self, model_dir: str | os.PathLike, keep_checkpoint_max: int) -> Path:
        return save_checkpoint(model_dir, self.to_dict(), keep_checkpoint_max)


def weights_label(uses_weight_average: bool) -> str:
    """"weight average" where a checkpoint carries one (inference runs on it), else "trained weights"."""
    return "weight average" if uses_weight_average else "trained weights"


def capture(global_step: int, network: nn.Module, average: WeightAverage | None, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, params: ModelParams, device: torch.device, training_seconds: float,
            stream=None) -> TrainingState:
    """The state of a run's live objects, each under its key (the tensors still on the device;
    ``save`` moves them). A NanLossError where a weight is not finite: no checkpoint ever holds
    one, so the last one written stays good to resume from."""
    networks = [network] + ([average.network] if average is not None else [])
    for parameter in (p for each in networks for p in each.parameters()):
        if not torch.isfinite(parameter).all():
            raise NanLossError(
                f"NaN loss during training (weights not finite at step {global_step}); "
                "the last good checkpoint is kept: lower the learning rate and run again to resume from it"
            )
    return TrainingState(
        global_step=global_step,
        network=network.state_dict(),
        averaged_network=None if average is None else average.state_dict(),
        optimizer=_portable(optimizer.state_dict()),
        scaler=None if scaler is None else scaler.state_dict(),
        rng={"torch": torch.get_rng_state(), **devices.rng_state(device)},
        params=dataclasses.asdict(params),
        training_seconds=training_seconds,
        input=stream.state_dict() if isinstance(stream, ArrayStream) else None,
    )


def _portable(optimizer_state: dict) -> dict:
    """A graphed run's optimizer state as an eager one's: the learning rate a number (not a GPU
    tensor) and not capturable (which the CPU refuses), so the checkpoint resumes on any device."""
    for group in optimizer_state["param_groups"]:  # state_dict's groups are copies
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = group["lr"].item()  # sync: at a save only
        if group.get("capturable"):
            group["capturable"] = False
    return optimizer_state


def find_state(model_dir: str | os.PathLike, checkpoint_path: str | os.PathLike | None = None) -> TrainingState | None:
    """The checkpoint at ``checkpoint_path`` where one is given, else the newest good one in
    ``model_dir``; None if there is none."""
    return read_state(checkpoint_path) if checkpoint_path else newest_state(model_dir)


def restore_for_inference(model_dir: str | os.PathLike, checkpoint_path: str | os.PathLike | None = None,
                          device: torch.device | str = "cpu") -> tuple[nn.Module, TrainingState]:
    """A network on ``device`` holding the weights evaluate and predict use (the average where the
    checkpoint has one), in eval mode and frozen, and the state it was read from; from the given
    checkpoint or the newest good one. An error if there is none."""
    state = find_state(model_dir, checkpoint_path)
    if state is None:
        raise no_checkpoint_error(model_dir)
    network = ConvNet(num_classes=len(state.classes)).to(device, memory_format=torch.channels_last)
    state.restore(network, key=state.inference_key)  # CPU tensors, copied to the device
    return network.eval().requires_grad_(False), state


def read_state(path: str | os.PathLike) -> TrainingState:
    """The checkpoint at ``path``, checked (format, checksum) and read without executing anything."""
    return TrainingState.from_dict(load_checkpoint(path), path)


def newest_state(model_dir: str | os.PathLike) -> TrainingState | None:
    """The newest checkpoint that reads back intact (see ``load_newest_good``); None if there is none."""
    found = load_newest_good(model_dir)
    return None if found is None else TrainingState.from_dict(found[1], found[0])


def checkpoint_path(model_dir: str | os.PathLike, step: int) -> Path:
    return Path(model_dir) / f"model.ckpt-{step}.pt"


def list_checkpoints(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(global step, path) of every checkpoint in the directory, oldest first."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    found = [(int(m.group(1)), model_dir / m.group(0)) for m in map(_NAME.match, os.listdir(model_dir)) if m]
    return sorted(found)


def latest_checkpoint(model_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1][1] if checkpoints else None


def require_checkpoint(model_dir: str | os.PathLike) -> Path:
    """The newest checkpoint file's path (not read), or a CheckpointError saying to train first: the
    cheap check that lets a command refuse an empty directory before it prepares anything."""
    path = latest_checkpoint(model_dir)
    if path is None:
        raise no_checkpoint_error(model_dir)
    return path


def no_checkpoint_error(model_dir: str | os.PathLike) -> CheckpointError:
    """What every command says of a model directory without a checkpoint."""
    return CheckpointError(f"no checkpoint in {Path(model_dir).absolute()}; train first "
                           f"(cnn-mnist train --model-dir {model_dir})")


def load_newest_good(model_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads back intact, warning about each newer one that does not.

    None when there are no checkpoints; an error when there are some but none is readable
    (training must not silently start afresh over them).
    """
    errors = []
    for _, path in reversed(list_checkpoints(model_dir)):
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            errors.append(error)
            log.warning("%s; falling back to the previous checkpoint", error)
            continue
        return path, state
    if errors:
        raise CheckpointError(f"no readable checkpoint in {model_dir} ({errors[0]}); move the damaged files away "
                              "to start afresh") from None
    return None


def content_digest(state: dict) -> str:
    """SHA-256 over everything in a checkpoint's state: tensor dtypes, shapes and bytes, and the
    other values' reprs, keys in sorted order. ~40 ms for a 50 MB state here."""
    digest = hashlib.sha256()

    def feed(value):
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed(state)
    return digest.hexdigest()


def save_checkpoint(model_dir: str | os.PathLike, state: dict, keep_checkpoint_max: int) -> Path:
    """Write ``state`` (which must hold ``global_step``) atomically and durably, then prune old checkpoints."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(model_dir, state["global_step"])
    contents = {**on_cpu(state), "format": FORMAT}

    def write(temp: Path) -> None:
        with open(temp, "wb") as file:
            torch.save({**contents, "sha256": content_digest(contents)}, file)

    try:
        write_atomically(path, write, durable=True, temp_prefix=_TEMP_PREFIX)
    except OSError as error:  # a full disk, no permission, a read-only mount
        reason = error.strerror or str(error)
        raise CheckpointError(
            f"could not write checkpoint {path.name} in {model_dir} ({reason}); the earlier checkpoints "
            "are intact: free space or fix permissions, then run the same command to resume") from error
    for _, old in list_checkpoints(model_dir)[:-keep_checkpoint_max]:
        old.unlink(missing_ok=True)
    return path


def on_cpu(value):
    """``value`` with every tensor in it on the CPU (those already there are not copied), so a
    checkpoint written by a GPU run reads back on any machine."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def remove_stale_temporaries(model_dir: str | os.PathLike) -> None:
    """Delete temporary files left by a save that was killed half-way."""
    model_dir = Path(model_dir)
    if model_dir.is_dir():
        for temp in model_dir.glob(_TEMP_PREFIX + "*.tmp"):
            log.info("removing %s, left by an interrupted save", temp.name)
            temp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The saved state, read without executing anything from the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as err:  # torch raises many types for damaged files
        reason = str(err).splitlines()[0].split(". ")[0] if str(err) else type(err).__name__  # torch adds advice
        raise CheckpointError(
            f"{path}: corrupt or unreadable checkpoint ({reason})"
        ) from None
    if isinstance(state, dict) and state.get("format") == _FORMAT_1:
        return _upgrade_from_format_1(state)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cnn-mnist checkpoint (format {FORMAT} expected)")
    expected = state.pop("sha256", None)
    if expected is not None and content_digest(state) != expected:
        raise CheckpointError(f"{path}: corrupt checkpoint (its contents do not match its checksum)")
    return state


def _upgrade_from_format_1(state: dict) -> dict:
    """Reorder the dense layer's input columns (and any optimizer state shaped like them) from
    (c, h, w) to (h, w, c): the same function, computed with today's flatten order."""

    def reorder(tensor):
        if isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == _DENSE_SHAPE:
            return tensor.reshape(1024, 64, 7, 7).permute(0, 2, 3, 1).reshape(_DENSE_SHAPE).contiguous()
        return tensor

    state = dict(state, format=FORMAT)
    for key in ("network", "averaged_network"):
        if isinstance(state.get(key), dict):
            state[key] = {name: reorder(value) for name, value in state[key].items()}
    optimizer = state.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict):
        state["optimizer"] = dict(optimizer, state={
            index: {name: reorder(value) for name, value in values.items()} if isinstance(values, dict) else values
            for index, values in optimizer["state"].items()})
    return state


def restore_network(network: nn.Module, state: dict, path: str | os.PathLike, key: str = "network") -> None:
    """Load saved weights (``state[key]``), first checking that they belong to this architecture."""
    saved, expected = state.get(key, {}), network.state_dict()
    mismatch = sorted(set(saved) ^ set(expected))
    if not mismatch:
        mismatch = [f"{k}: {tuple(saved[k].shape)} saved, {tuple(v.shape)} here"
                    for k, v in expected.items() if saved[k].shape != v.shape]
    if mismatch:
        raise CheckpointError(
            f"{path}: checkpoint of another model ({mismatch[0]}); use another --model-dir for this network"
        )
    network.load_state_dict(saved)

