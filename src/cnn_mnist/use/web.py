"""Export a trained model as a static web site: the draw-a-digit page, running the model in the
browser on ONNX Runtime Web, with nothing sent anywhere and no server process of its own.

The model file is one ONNX graph from the drawing to every answer the page shows: the pad's
pixels (RGBA, 280x280) go in; the prepared 28x28 digit, whether there is one, the probabilities
and each stage's maps come out. The preparation inside it is ``data.preparation``, traced: the
same steps Python runs in ``prepare_image``, so the page and the CLI see the same pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnn_mnist.data import preparation
from cnn_mnist.errors import ExportError
from cnn_mnist.model.network import STAGE_LABELS, ConvNet
from cnn_mnist.use import onnx_tracing, web_runtime
from cnn_mnist.use.display import draw_page
from cnn_mnist.use.explain import filters_json
from cnn_mnist.use.predictor import Predictor

CANVAS_SIZE = 280  # the drawing the page hands the model: the pad rendered at 280x280 (app.js's EXPORT_SIZE)
MAPS = tuple(name for name in STAGE_LABELS if name != "logits")  # the stages the page draws; logits -> probabilities
OUTPUTS = ("prepared", "no_digit", "probabilities", *MAPS)
# Weights stored as float16 and widened to float32 as the graph loads: the file halves (13.1 ->
# 6.6 MB) and no class changed on MNIST's 10,000 test digits (benchmarks/web_weights.py).
HALF_PRECISION_MIN_ELEMENTS = 1024  # the network's tensors this large are stored as float16; biases stay float32
PARITY_DRAWINGS = 100  # test digits drawn on a pad: the site's answers are checked against PyTorch's


class DrawingModel(nn.Module):
    """What the site's ``model.onnx`` computes, from the pad's RGBA pixels to every answer."""

    def __init__(self, network: nn.Module):
        super().__init__()
        # A plain fp32 copy: the caller's network (channels-last, maybe shared) is left alone.
        self.network = ConvNet()
        self.network.load_state_dict({name: value.float() for name, value in network.state_dict().items()})
        self.network.eval().requires_grad_(False)
        preparation.paper_matrices(CANVAS_SIZE, CANVAS_SIZE)  # made now, so the export holds them as constants

    def forward(self, drawing: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prepared = preparation.prepare(preparation.grey_of_rgba(drawing))
        x = (prepared.pixels / 255.0)[None, None]  # as Predictor reads uint8 pixels
        stages = {stage.name: stage.output for stage in self.network.stages(x)}
        probabilities = torch.softmax(stages["logits"], dim=1)
        return (prepared.pixels.to(torch.uint8), prepared.no_digit, probabilities[0],
                *(stages[name][0] for name in MAPS))


@dataclass(frozen=True)
class WrittenSite:
    """What ``export_site`` wrote, and how the site's answers compared with PyTorch's."""

    path: Path
    size_bytes: int  # the whole folder
    model_bytes: int
    runtime_bytes: int
    drawings_checked: int
    max_abs_diff: float  # largest |probability difference| from PyTorch's fp32, on those drawings


def check_site_folder(path: str | os.PathLike) -> Path:
    """The site's folder, absolute: new or empty (an export never mixes with other files)."""
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"--output {folder} is a file; the web format writes a folder: give a new folder's name")
    if folder.is_dir() and any(folder.iterdir()):
        raise ExportError(f"--output {folder} exists and is not empty; the web site needs a new or empty folder (for "
                          "one file, end the name in .onnx or .safetensors)")
    return folder


def export_site(predictor: Predictor, folder: str | os.PathLike, test_images: torch.Tensor, *,
                runtime_tarball: str | os.PathLike | None = None) -> WrittenSite:
    """Write the site into ``folder`` (new or empty), once the model file agrees with PyTorch on
    ``test_images`` (uint8, (N, 28, 28)) drawn on a pad; nothing is left there if anything fails."""
    folder = check_site_folder(folder)
    runtime = web_runtime.runtime_files(runtime_tarball)
    model = half_precision_weights(build_drawing_model(predictor.network))
    drawings = pad_drawings(test_images[:PARITY_DRAWINGS])
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        import onnx

        onnx.save_model(model, temp / "model.onnx")
        max_abs_diff = check_drawings(temp / "model.onnx", DrawingModel(predictor.network), drawings)
        _write_pages(temp, predictor)
        (temp / "ort").mkdir()
        for name, source in runtime.items():
            shutil.copyfile(source, temp / "ort" / name)
        for path in (temp, *temp.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp's 0700 would hide the site
        if folder.is_dir():
            folder.rmdir()  # empty: checked above
        os.replace(temp, folder)
    except OSError as err:
        raise ExportError(f"cannot write the site in {folder}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return WrittenSite(path=folder, size_bytes=size, model_bytes=(folder / "model.onnx").stat().st_size,
                       runtime_bytes=sum((folder / "ort" / name).stat().st_size for name in runtime),
                       drawings_checked=len(drawings), max_abs_diff=max_abs_diff)


def build_drawing_model(network: nn.Module):
    """:class:`DrawingModel` as an ``onnx.ModelProto`` (fp32), for a CANVAS_SIZE square pad."""
    example = torch.full((CANVAS_SIZE, CANVAS_SIZE, 4), 255, dtype=torch.uint8)
    example[100:180, 130:150, :3] = 0
    return onnx_tracing.trace(
        DrawingModel(network).eval(), (example,), ["drawing"], list(OUTPUTS),
        f"cnn_mnist draw-a-digit model: drawing uint8 ({CANVAS_SIZE}, {CANVAS_SIZE}, 4) RGBA -> prepared (28, 28) "
        "uint8, no_digit bool, probabilities (10,), and each stage's maps")


def half_precision_weights(model, min_elements: int = HALF_PRECISION_MIN_ELEMENTS, prefix: str = "network."):
    """``model`` with the network's large float32 weights (named ``prefix``...) stored as float16,
    each widened back by a Cast as the graph runs: computation stays float32, the file halves. The
    preparation's constants (its resampling weights) stay float32: rounded to float16 they move a
    digit's pixels."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    casts = []
    for index, tensor in enumerate(graph.initializer):
        if (not tensor.name.startswith(prefix) or tensor.data_type != onnx.TensorProto.FLOAT
                or np.prod(tensor.dims) < min_elements):
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{tensor.name}.float16")
        casts.append(onnx.helper.make_node("Cast", [half.name], [tensor.name], to=onnx.TensorProto.FLOAT))
        graph.initializer[index].CopyFrom(half)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def pad_drawings(images: torch.Tensor) -> np.ndarray:
    """MNIST digits (uint8 (N, 28, 28)) as the pad shows a drawing: dark ink on light paper, RGBA,
    CANVAS_SIZE square, the digit scaled 7x into the middle."""
    from PIL import Image

    count = len(images)
    pads = np.full((count, CANVAS_SIZE, CANVAS_SIZE, 4), 255, dtype=np.uint8)
    for index, digit in enumerate(images.numpy()):
        big = np.asarray(Image.fromarray(255 - digit).resize((196, 196), Image.Resampling.BILINEAR))
        pads[index, 42:238, 42:238, :3] = big[..., None]
    return pads


def check_drawings(onnx_path: Path, reference: DrawingModel, drawings: np.ndarray) -> float:
    """The ONNX file in onnxruntime against ``reference`` in PyTorch on each drawing: the same
    prepared pixels and the same class; returns the largest |probability difference|."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    largest = 0.0
    for index, drawing in enumerate(drawings):
        prepared, no_digit, probabilities = session.run(["prepared", "no_digit", "probabilities"],
                                                        {"drawing": drawing})
        with torch.inference_mode():
            expected = reference(torch.from_numpy(drawing))
        if np.abs(prepared.astype(int) - expected[0].numpy().astype(int)).max() > 1 or bool(no_digit) != bool(
                expected[1]) or int(probabilities.argmax()) != int(expected[2].argmax()):
            raise ExportError(f"the site's model disagrees with PyTorch on drawn test digit {index}; nothing was "
                              "written")
        largest = max(largest, float(np.abs(probabilities - expected[2].numpy()).max()))
    return largest


def _write_pages(folder: Path, predictor: Predictor) -> None:
    (folder / "index.html").write_text(draw_page(runtime_version=web_runtime.VERSION), encoding="utf-8")
    static = folder / "static"
    static.mkdir()
    for name in ("app.css", "app.js", "onnx-model.js"):
        (static / name).write_bytes(resources.files("cnn_mnist.use").joinpath("static", name).read_bytes())
    filters = filters_json(predictor.network.conv1.weight.detach()[:, 0].float().cpu().numpy())
    about = {"global_step": predictor.global_step, "checkpoint": predictor.checkpoint_path.name,
             "weights": predictor.weights,
             "canvas_size": CANVAS_SIZE, "onnxruntime_web": web_runtime.VERSION,
             "stages": [{"name": name, "label": STAGE_LABELS[name]} for name in MAPS],
             "filters": asdict(filters)}  # as /v1/explain sends them
    (folder / "model.json").write_text(json.dumps(about), encoding="utf-8")
