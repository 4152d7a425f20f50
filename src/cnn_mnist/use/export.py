"""Export a trained model for use without this package's training code: ONNX (network, softmax and
argmax in one self-contained file, checked against PyTorch in onnxruntime before it is kept),
safetensors (the weights alone, for ``ConvNet().load_state_dict``), or web (a static site: the
draw-a-digit page running the model in the browser; see ``web``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnn_mnist.version import __version__
from cnn_mnist.errors import ExportError
from cnn_mnist.model.network import IMAGE_SIZE, ConvNet
from cnn_mnist.training import checkpoints
from cnn_mnist.files import prepare_output_file, write_atomically
from cnn_mnist.use import onnx_tracing
from cnn_mnist.use.predictor import Predictor

FORMATS = ("onnx", "safetensors", "web")
FILE_NAMES = {"onnx": "model.onnx", "safetensors": "model.safetensors", "web": "web"}  # web: a folder
EXPORT_DIR = "export"  # inside the model directory
PARITY_IMAGES = 1_000  # the first test images; ~0.3 s of onnxruntime on 2 cores
PARITY_TOLERANCE = 1e-5  # largest allowed |probability difference| between PyTorch and onnxruntime
# With PyTorch on a GPU: cuDNN's fp32 convolution algorithms (FFT, Winograd) round differently
# from onnxruntime's CPU kernels, by more than the CPU's own differences.
PARITY_TOLERANCE_GPU = 1e-4
INPUT_PREPARATION = (
    "greyscale; invert a light background (MNIST is a white digit on black); crop to the ink; scale so the "
    "longer side is 20 px; place the centre of mass at the centre of a 28x28 image; divide by 255: "
    "float32 in [0, 1], shape (N, 1, 28, 28)"
)


@dataclass(frozen=True)
class Parity:
    """How the exported file's answers compare with PyTorch's on the same inputs."""

    images: int
    max_abs_diff: float  # largest |probability difference|
    drawn: bool = False  # the web site's check: test digits drawn on a pad, through the preparation too

    def to_dict(self) -> dict:
        return {"drawings" if self.drawn else "images": self.images, "max_abs_diff": self.max_abs_diff}

    def __str__(self) -> str:
        if self.drawn:
            return (f"parity on {self.images} drawn test digits: same pixels and classes as PyTorch, max |dp| = "
                    f"{self.max_abs_diff:.1e}")
        return f"parity on {self.images:,} test images: max |dp| = {self.max_abs_diff:.1e}, classes identical"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote, from which checkpoint, and how its answers compared with PyTorch's."""

    path: Path
    format: str
    size_bytes: int  # the file, or the web site's whole folder
    global_step: int
    checkpoint_path: Path
    weights: str  # "weight average" or "trained weights"
    seconds: float
    parity: Parity | None = None  # ONNX and web
    model_bytes: int | None = None  # web: its model.onnx
    runtime_bytes: int | None = None  # web: ONNX Runtime Web's files

    def to_dict(self) -> dict:
        """What ``cnn-mnist export --json`` prints."""
        sizes = {} if self.format != "web" else {"model_bytes": self.model_bytes, "runtime_bytes": self.runtime_bytes}
        return {"path": str(self.path), "format": self.format, "size_bytes": self.size_bytes, **sizes,
                "global_step": self.global_step, "checkpoint": self.checkpoint_path.name, "weights": self.weights,
                "seconds": round(self.seconds, 3), "parity": None if self.parity is None else self.parity.to_dict()}

    def __str__(self) -> str:
        exported = f"exported {self.checkpoint_path.name} (global step {self.global_step}, {self.weights})"
        if self.format == "web":
            return (f"{exported} as a static site in {self.path} ({self.size_bytes / 1e6:.1f} MB: model "
                    f"{self.model_bytes / 1e6:.1f} MB, ONNX Runtime Web {self.runtime_bytes / 1e6:.1f} MB; "
                    f"{self.seconds:.1f} s)\n{self.parity}\n"
                    f"serve it with any static file server, e.g.: python -m http.server --directory {self.path}")
        lines = [f"{exported} to {self.path} ({self.size_bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"]
        return "\n".join(lines + ([str(self.parity)] if self.parity is not None else []))


def default_output_path(model_dir: str | os.PathLike, fmt: str) -> Path:
    """``<model_dir>/export/model.onnx`` or ``.../model.safetensors``."""
    return Path(model_dir) / EXPORT_DIR / FILE_NAMES[fmt]


def export_model(model_dir: str | os.PathLike, fmt: str | None = None, output: str | os.PathLike | None = None, *,
                 data_dir: str | os.PathLike | None = None, parity_images: int = PARITY_IMAGES,
                 checkpoint_path: str | os.PathLike | None = None, device: str = "auto",
                 web_runtime: str | os.PathLike | None = None):
    """Export the newest checkpoint of ``model_dir`` (its weight average where it has one).

    ``fmt`` is "onnx", "safetensors" or "web"; None takes it from ``output``'s suffix (none: web,
    a folder), else ONNX. The output's folder is checked before any work; web's must be new or
    empty, and ``web_runtime`` may give ONNX Runtime Web's npm tarball (else it is downloaded
    once). ONNX (and web) also load MNIST's test set from ``data_dir`` for the parity check on its
    first ``parity_images`` images (web: 100, drawn on a pad); nothing is written unless it holds.
    The files are the same whatever the device: the graph is traced from a CPU copy of the weights;
    ``device`` is where PyTorch computes the parity check's reference answers.
    """
    fmt = resolve_format(fmt, output)
    if fmt in ("onnx", "web"):
        onnx_tracing.require_onnx()
    if checkpoint_path is None:
        checkpoints.require_checkpoint(model_dir)
    if fmt == "web":
        return _export_web(model_dir, output, data_dir, checkpoint_path, web_runtime)
    path = prepare_output_file(output if output is not None else default_output_path(model_dir, fmt),
                               "--output" if output is not None else "the default export file")
    started = time.perf_counter()
    predictor = Predictor(model_dir, checkpoint_path, device=device)
    parity = None
    if fmt == "onnx":
        from cnn_mnist.data.datasets import load_mnist

        images = load_mnist(data_dir).test.images[:parity_images]
        tolerance = PARITY_TOLERANCE if predictor.device.type == "cpu" else PARITY_TOLERANCE_GPU
        parity = export_onnx(predictor, path, images, tolerance)
    else:
        export_safetensors(predictor, path)
    return ExportResult(path=path, format=fmt, size_bytes=path.stat().st_size, global_step=predictor.global_step,
                        checkpoint_path=predictor.checkpoint_path, weights=predictor.weights,
                        seconds=time.perf_counter() - started, parity=parity)


def _export_web(model_dir, output, data_dir, checkpoint_path, runtime_tarball) -> ExportResult:
    """The static site (see ``web``), its folder checked before any work."""
    from cnn_mnist.data.datasets import load_mnist
    from cnn_mnist.use import web

    started = time.perf_counter()
    folder = web.check_site_folder(output if output is not None else default_output_path(model_dir, "web"))
    predictor = Predictor(model_dir, checkpoint_path, device="cpu")  # the site's answers are fp32 CPU ones
    images = load_mnist(data_dir).test.images[:web.PARITY_DRAWINGS]
    site = web.export_site(predictor, folder, images, runtime_tarball=runtime_tarball)
    return ExportResult(path=site.path, format="web", size_bytes=site.size_bytes, global_step=predictor.global_step,
                        checkpoint_path=predictor.checkpoint_path, weights=predictor.weights,
                        seconds=time.perf_counter() - started,
                        parity=Parity(site.drawings_checked, site.max_abs_diff, drawn=True),
                        model_bytes=site.model_bytes, runtime_bytes=site.runtime_bytes)


def resolve_format(fmt: str | None, output: str | os.PathLike | None) -> str:
    """The export format: ``fmt`` if given (it must agree with ``output``'s suffix), else the one
    ``output``'s suffix names (no suffix: web, which writes a folder), else ONNX."""
    suffix = Path(output).suffix.lower().lstrip(".") if output is not None else ""
    named = suffix if suffix in ("onnx", "safetensors") else None  # the formats that write one file
    if fmt is not None and fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if fmt is None and suffix and named is None:
        raise ExportError(f"cannot tell the format from --output {output} (.{suffix}); end it in .onnx or "
                          ".safetensors, give a folder name without a suffix for the web site, or give --format")
    if fmt == "web" and suffix:
        raise ExportError(f"--format web writes a folder, but --output {output} ends in .{suffix} like a file; give "
                          "a folder name without a suffix")
    if fmt in ("onnx", "safetensors") and output is not None and not suffix and not Path(output).is_dir():
        raise ExportError(f"--format {fmt} writes one file, but --output {output} has no suffix, like the web "
                          f"site's folder; end it in .{fmt}")
    if fmt is not None and named is not None and fmt != named:
        raise ExportError(f"--format {fmt} but --output {output} ends in .{named}; drop one of them, or make them "
                          "agree")
    return fmt or named or ("web" if output is not None else "onnx")


def export_metadata(predictor: Predictor) -> dict[str, str]:
    """What both formats carry besides the weights (strings: both formats store only strings)."""
    return {
        "global_step": str(predictor.global_step),
        "checkpoint": predictor.checkpoint_path.name,
        "weights": predictor.weights,
        "cnn_mnist_version": __version__,
        "input_preparation": INPUT_PREPARATION,
        "class_names": json.dumps(list(predictor.classes)),
    }


# -- ONNX ----------------------------------------------------------------------------------------


class _Classifier(ConvNet):
    """What the ONNX file computes: the tutorial's PREDICT outputs from float pixels. A subclass, so
    the file's weights keep ConvNet's names (``conv1.weight``, ...)."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(super().forward(images), dim=1)  # (N, 10)
        return probabilities, probabilities.argmax(dim=1)  # classes (N,), as Predictor picks them


def export_onnx(predictor: Predictor, path: str | os.PathLike, images: torch.Tensor,
                tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Write the ONNX file atomically once onnxruntime agrees with ``predictor`` on ``images`` (uint8)."""
    model = build_onnx_model(predictor.network, export_metadata(predictor))

    def write_and_check(temp: Path) -> Parity:
        import onnx

        onnx.save_model(model, temp)  # one file: 13 MB of weights is far below protobuf's 2 GB limit
        return check_parity(temp, predictor, images, tolerance)

    return _write_atomically(Path(path), write_and_check)


def build_onnx_model(network: nn.Module, metadata: dict[str, str]):
    """``network`` as an ``onnx.ModelProto``: input ``images`` float32 (N, 1, 28, 28), outputs
    ``probabilities`` (N, 10) float32 and ``classes`` (N,) int64, N dynamic; fp32, eval mode."""
    import onnx

    # A contiguous fp32 copy in eval mode: the caller's network (channels-last, maybe shared
    # with other threads) is left alone.
    classifier = _Classifier()
    classifier.load_state_dict({name: value.float() for name, value in network.state_dict().items()})
    classifier.eval().requires_grad_(False)
    # fast_linear falls back to F.linear while exporting (torch.onnx.is_in_onnx_export()), so the
    # graph holds a standard Gemm rather than the oneDNN autograd Function.
    model = onnx_tracing.trace(
        classifier, (torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE),), ["images"], ["probabilities", "classes"],
        "cnn_mnist ConvNet (TensorFlow's 'CNN with Estimators' MNIST network): images float32 (N, 1, 28, 28) in "
        "[0, 1] -> probabilities (N, 10), classes (N,) int64",
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def check_parity(onnx_path: str | os.PathLike, predictor: Predictor, images: torch.Tensor,
                 tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Run the file in onnxruntime and ``predictor`` in PyTorch on the same uint8 ``images`` (N, 28, 28)."""
    import onnxruntime

    if len(images) == 0:
        raise ExportError("no test images for the parity check")
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types
        raise ExportError(f"onnxruntime cannot load the exported model: {onnx_tracing.first_line(err)}") from None
    pixels = images.numpy().astype(np.float32)[:, None] / np.float32(255.0)  # (N, 1, 28, 28) in [0, 1]
    probabilities, classes = session.run(["probabilities", "classes"], {"images": pixels})
    expected = predictor.predict(pixels)
    max_abs_diff = float(np.abs(probabilities - expected.probabilities).max())
    differing = int((classes != expected.classes).sum())
    if not max_abs_diff <= tolerance or differing:  # `not <=` also catches NaN
        raise ExportError(f"the ONNX model disagrees with PyTorch on {len(images):,} test images: max |dp| = "
                          f"{max_abs_diff:.1e} (at most {tolerance:.0e} allowed), {differing} classes differ; "
                          "nothing was written")
    return Parity(images=len(images), max_abs_diff=max_abs_diff)


# -- safetensors ---------------------------------------------------------------------------------


def export_safetensors(predictor: Predictor, path: str | os.PathLike) -> None:
    """The network's state dict (contiguous fp32), with :func:`export_metadata`, written atomically.

    Load it back with ``net = ConvNet().eval(); net.load_state_dict(safetensors.torch.load_file(path))``.
    """
    from safetensors.torch import load_file, save_file

    # Predictor keeps the conv kernels channels-last; safetensors stores contiguous tensors only.
    tensors = {name: value.detach().float().cpu().contiguous()
               for name, value in predictor.network.state_dict().items()}

    def write_and_check(temp: Path) -> None:
        save_file(tensors, temp, metadata=export_metadata(predictor))
        loaded = load_file(temp)
        if loaded.keys() != tensors.keys() or not all(torch.equal(loaded[k], v) for k, v in tensors.items()):
            raise ExportError(f"{temp}: the written weights do not read back identically; nothing was written")

    _write_atomically(Path(path), write_and_check)


# -- files ---------------------------------------------------------------------------------------


def _write_atomically(path: Path, write: Callable[[Path], object]):
    """A failed or interrupted export leaves no partial file and any older export untouched."""
    try:
        return write_atomically(path, write)
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err.strerror or err}") from None
