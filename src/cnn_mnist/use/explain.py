"""What the network makes of one digit, stage by stage, and which pixels decided it.

``explain(predictor, pixels)`` runs the network's stages (``ConvNet.stages``) once and keeps what
each computed, as the tutorial describes them:

    input [batch, 28, 28, 1] -> conv1 + ReLU [batch, 28, 28, 32] -> pool1 [batch, 14, 14, 32]
    -> conv2 + ReLU [batch, 14, 14, 64] -> pool2 [batch, 7, 7, 64] -> dense + ReLU [batch, 1024]
    -> logits [batch, 10] -> softmax

The attribution is Captum's integrated gradients of (predicted logit - runner-up logit) from a
blank image: positive where ink pushed the answer towards the predicted class, negative where it
pushed towards the runner-up. By completeness its values add up to that logit difference (less
the blank image's), to within ``ATTRIBUTION_TOLERANCE`` with ``IG_STEPS`` Gauss-Legendre steps.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cnn_mnist.kernels import devices
from cnn_mnist.model.network import IMAGE_SIZE, STAGE_LABELS
from cnn_mnist.use.predictor import Predictor

IG_STEPS = 32  # one batch of 32 forward and backward passes
ATTRIBUTION_TOLERANCE = 0.01  # |sum of attributions - logit difference|, relative to that difference (tested)
TILE_COLUMNS = 8  # maps per row of a stage's tile sheet
SHOWN_STAGES = tuple(name for name in STAGE_LABELS if name != "logits")  # the logits show as probabilities


@dataclass(frozen=True)
class Stage:
    """One stage's output for the digit: ``maps`` (C, H, W) for the convolutional stages, (N,) for the
    dense one, as the network computed them (fp32)."""

    name: str
    label: str  # the tutorial's name and shape: "conv1 + ReLU [batch, 28, 28, 32]"
    maps: np.ndarray


@dataclass(frozen=True)
class Explanation:
    pixels: np.ndarray  # (28, 28) float32 in [0, 1]: the network's input
    stages: list[Stage]
    logits: np.ndarray  # (10,)
    probabilities: np.ndarray  # (10,)
    predicted: int
    runner_up: int
    attribution: np.ndarray  # (28, 28): towards `predicted` (+) or `runner_up` (-)
    attribution_delta: float  # sum(attribution) - (logit difference at the digit - at a blank image)
    filters: np.ndarray  # (32, 5, 5): conv1's kernels, the ones slid over the image

    @property
    def logit_difference(self) -> float:
        return float(self.logits[self.predicted] - self.logits[self.runner_up])

    def __repr__(self) -> str:
        return (f"Explanation(read as {self.predicted} with probability {self.probabilities[self.predicted]:.3f}, "
                f"runner-up {self.runner_up}; stages {', '.join(stage.name for stage in self.stages)}; "
                "attribution and conv1's filters)")

    def _repr_png_(self) -> bytes:
        """In a notebook: the figure ``cnn-mnist explain`` writes (every stage, the attribution,
        conv1's filters and the probabilities)."""
        return figure_png(self, f"read as {self.predicted}")


def explain(predictor: Predictor, pixels: np.ndarray) -> Explanation:
    """The stages, probabilities and attribution for one (28, 28) digit (uint8 0-255 or float 0-1)."""
    array = np.asarray(pixels)
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"explain takes one 28x28 digit, got shape {array.shape}")
    image = array.astype(np.float32) / np.float32(255.0) if array.dtype == np.uint8 else array.astype(np.float32)
    x = torch.from_numpy(image).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(predictor.device)
    with devices.precision_settings(predictor.precision):  # an fp32 Predictor's explanation is exact fp32 too
        return _explain(predictor.network, x, image)


def _explain(network: torch.nn.Module, x: torch.Tensor, image: np.ndarray) -> Explanation:
    with torch.inference_mode():  # the network is shared (the service's threads); stages() writes nothing to it
        outputs = {stage.name: stage for stage in network.stages(x)}
    stages = [Stage(name, outputs[name].label, outputs[name].output[0].float().cpu().numpy())
              for name in SHOWN_STAGES]
    logits = outputs["logits"].output[0].float().cpu()
    ranked = torch.argsort(logits, descending=True)
    predicted, runner_up = int(ranked[0]), int(ranked[1])
    attribution, delta = integrated_gradients(network, x, predicted, runner_up)
    return Explanation(pixels=image, stages=stages, logits=logits.numpy(),
                       probabilities=torch.softmax(logits, 0).numpy(), predicted=predicted, runner_up=runner_up,
                       attribution=attribution, attribution_delta=delta,
                       filters=network.conv1.weight.detach()[:, 0].float().cpu().numpy())


def integrated_gradients(network: torch.nn.Module, x: torch.Tensor, towards: int, against: int,
                         steps: int = IG_STEPS) -> tuple[np.ndarray, float]:
    """Captum's integrated gradients of logit[towards] - logit[against] from a blank image:
    (28, 28) attributions and the completeness gap (their sum less the difference they explain)."""
    from captum.attr import IntegratedGradients  # imports ~0.3 s of Captum: only when explaining

    def margin(images: torch.Tensor) -> torch.Tensor:
        logits = network(images).float()
        return logits[:, towards] - logits[:, against]

    with torch.enable_grad():
        attribution, delta = IntegratedGradients(margin).attribute(
            x.clone().requires_grad_(True), baselines=torch.zeros_like(x), n_steps=steps,
            method="gausslegendre", return_convergence_delta=True)
    return attribution[0, 0].detach().float().cpu().numpy(), float(delta[0])


# -- an explanation's JSON shape: /v1/explain's answers and the static site's page --------------------
# Written once, as plain dataclasses (pydantic comes only with the serve extra): ``to_json`` fills
# them, the service sends them as its response model (and checks every one it sends), and the static
# site's page builds the same object in the browser, which its test checks against their JSON schema.


def _json_name(field: str) -> str:
    """A field's JSON key: its name, less the underscore that keeps ``class_`` off the keyword."""
    return field.removesuffix("_")


# What pydantic makes of these dataclasses where the service or a test reads them; nothing else reads it.
JSON_SHAPE = {
    "alias_generator": _json_name,
    "populate_by_name": True,  # an instance is revalidated by its fields' own names
    "extra": "forbid",  # a key the shape does not name is a mismatch, not something to ignore
    "revalidate_instances": "always",  # the service checks each explanation it built, not only the ones it read
    "use_attribute_docstrings": True,  # each field's docstring describes it in /openapi.json
}


@dataclass(frozen=True)
class ExplainStage:
    """One stage's maps as a greyscale PNG tile sheet: 0-255 spans the stage's min..max, one scale for
    all its maps."""

    __pydantic_config__ = JSON_SHAPE

    name: str
    """conv1, pool1, conv2, pool2 or dense"""
    label: str
    """the tutorial's name and shape, e.g. 'conv1 + ReLU [batch, 28, 28, 32]'"""
    shape: list[int]
    """(channels, height, width), or (units,) for dense"""
    columns: int
    """maps per row of the tile sheet (dense: one 16x64 strip)"""
    tile: str
    """the maps as one greyscale PNG tile sheet, a data: URL"""
    min: float
    """the value drawn as 0"""
    max: float
    """the value drawn as 255"""
    top_units: list[int] | None = None
    """dense only: the most active units, most first"""


@dataclass(frozen=True)
class ExplainAttribution:
    """Integrated gradients from a blank image, per pixel."""

    __pydantic_config__ = JSON_SHAPE

    towards: int
    """the predicted digit: positive values pushed towards it"""
    against: int
    """the runner-up: negative values pushed towards it"""
    values: list[list[float]]
    """28x28 integrated gradients of logit[towards] - logit[against]"""
    max_abs: float
    """the largest absolute value"""
    logit_difference: float
    """logit[towards] - logit[against] at this digit"""
    completeness_gap: float
    """sum(values) minus that difference less a blank image's"""


@dataclass(frozen=True)
class ExplainFilters:
    """conv1's kernels, the ones slid over the input."""

    __pydantic_config__ = JSON_SHAPE

    values: list[list[list[float]]]
    """32 5x5 kernels"""
    max_abs: float
    """the largest absolute weight"""


@dataclass(frozen=True, kw_only=True)
class ImageExplanation:
    """What the network makes of one image with a digit in it. The static site's page computes it
    without ``logits`` (its graph ends in the softmax) or ``attribution`` (which needs gradients)."""

    __pydantic_config__ = JSON_SHAPE

    input: str
    """the image's name, as in /v1/predict ('drawing' on the static site's page)"""
    no_digit: Literal[False] = False
    """false: a blank image is answered as /v1/predict answers it"""
    class_: int
    """the predicted digit"""
    runner_up: int
    """the second most probable digit"""
    probabilities: list[float]
    """softmax probability of each digit 0-9"""
    logits: list[float] | None
    """the network's output for each digit 0-9, before the softmax"""
    stages: list[ExplainStage]
    """conv1, pool1, conv2, pool2 and dense, in the network's order"""
    attribution: ExplainAttribution | None
    """which pixels pushed the answer towards the predicted digit, and which towards the runner-up"""
    filters: ExplainFilters
    """conv1's 32 5x5 kernels"""
    prepared: list[list[int]]
    """the 28x28 uint8 input the network saw"""


def tile_sheet(maps: np.ndarray, columns: int = TILE_COLUMNS) -> tuple[bytes, float, float]:
    """(C, H, W) maps as one greyscale PNG, ``columns`` maps a row, each pixel 0-255 over the stage's
    own range (one scale for all its maps); returns the PNG and that range (low, high)."""
    from PIL import Image

    low, high = float(maps.min()), float(maps.max())
    sheet = _sheet(quantize(maps, low, high), columns).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(sheet, "L").save(buffer, format="PNG", compress_level=1)  # level 1: 3x faster, +10% bytes
    return buffer.getvalue(), low, high


def quantize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` as uint8: ``low`` -> 0, ``high`` -> 255 (all 0 where the range is empty)."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)


def to_json(explanation: Explanation, name: str = "pixels", top_units: int = 8) -> ImageExplanation:
    """The explanation in its JSON shape, as /v1/explain sends it for the input called ``name``:
    each stage's maps as a base64 PNG tile sheet with its value range, the dense units as a strip
    (and the ``top_units`` most active), the attribution and conv1's filters as numbers."""
    attribution = explanation.attribution
    return ImageExplanation(
        input=name, class_=explanation.predicted, runner_up=explanation.runner_up,
        probabilities=[round(float(p), 6) for p in explanation.probabilities],
        logits=[round(float(v), 5) for v in explanation.logits],
        stages=[stage_json(stage, top_units) for stage in explanation.stages],
        attribution=ExplainAttribution(
            towards=explanation.predicted, against=explanation.runner_up,
            values=np.round(attribution, 6).tolist(), max_abs=round(float(np.abs(attribution).max()), 6),
            logit_difference=round(explanation.logit_difference, 6),
            completeness_gap=round(explanation.attribution_delta, 6)),
        filters=filters_json(explanation.filters),
        prepared=quantize(explanation.pixels, 0.0, 1.0).tolist())


def stage_json(stage: Stage, top_units: int = 8) -> ExplainStage:
    """A stage's maps as a tile sheet (1024 dense units as one 16x64 strip), and its most active
    ``top_units`` where it is the dense one."""
    dense = stage.maps.ndim == 1
    columns = 1 if dense else TILE_COLUMNS
    png, low, high = tile_sheet(stage.maps.reshape(1, 16, -1) if dense else stage.maps, columns=columns)
    return ExplainStage(name=stage.name, label=stage.label, shape=list(stage.maps.shape), columns=columns,
                        tile="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                        min=round(low, 6), max=round(high, 6),
                        top_units=np.argsort(-stage.maps)[:top_units].tolist() if dense else None)


def filters_json(filters: np.ndarray) -> ExplainFilters:
    """conv1's (32, 5, 5) kernels, rounded to 5 places: /v1/explain sends them, and the static site
    its model.json."""
    return ExplainFilters(values=np.round(filters, 5).tolist(), max_abs=round(float(np.abs(filters).max()), 5))


# -- one figure per digit, for `cnn-mnist explain` ---------------------------------------------------


def figure_png(explanation: Explanation, title: str) -> bytes:
    """The input, every stage's maps (each on its own scale, with a colour bar), the attribution and
    the probabilities, as one PNG."""
    from cnn_mnist.use.report import new_figure, png_bytes

    figure = new_figure(13, 14)
    grid = figure.add_gridspec(4, 6, height_ratios=[1.15, 1, 1.25, 0.95])
    figure.suptitle(f"{title}: read as {explanation.predicted} "
                    f"({explanation.probabilities[explanation.predicted]:.1%}; runner-up {explanation.runner_up})")

    def picture(ax, image, heading, cmap="gray", low=None, high=None, bar=True):
        shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(heading, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if bar:
            figure.colorbar(shown, ax=ax, shrink=0.8)

    picture(figure.add_subplot(grid[0, 0]), explanation.pixels, "input\n[batch, 28, 28, 1]", low=0, high=1)
    limit = float(np.abs(explanation.attribution).max()) or 1.0
    picture(figure.add_subplot(grid[0, 1:3]), explanation.attribution,
            f"integrated gradients: red towards {explanation.predicted}, blue towards {explanation.runner_up}",
            cmap="RdBu_r", low=-limit, high=limit)
    filters = explanation.filters
    sheet = _sheet(filters / max(float(np.abs(filters).max()), 1e-12), TILE_COLUMNS, gap=1, fill=np.nan)
    picture(figure.add_subplot(grid[0, 3:5]), sheet, "conv1's 32 filters (5x5), slid over the input",
            cmap="RdBu_r", low=-1, high=1)
    bars = figure.add_subplot(grid[0, 5])
    colours = ["#d62728" if d == explanation.predicted else "#7f7f7f" for d in range(10)]
    bars.barh(range(10), explanation.probabilities, color=colours)
    bars.set_yticks(range(10))
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_title("softmax probabilities", fontsize=9)
    places = {"conv1": grid[1, 0:3], "pool1": grid[1, 3:6], "conv2": grid[2, 0:3], "pool2": grid[2, 3:6],
              "dense": grid[3, :]}
    for stage in explanation.stages:
        maps = stage.maps if stage.maps.ndim == 3 else stage.maps.reshape(1, 16, 64)
        columns = TILE_COLUMNS if stage.maps.ndim == 3 else 1
        picture(figure.add_subplot(places[stage.name]), _sheet(maps, columns, gap=1, fill=np.nan), stage.label,
                cmap="magma", low=0, high=float(stage.maps.max()) or 1.0)
    return png_bytes(figure)


def _sheet(maps: np.ndarray, columns: int, gap: int = 0, fill: float = 0.0) -> np.ndarray:
    """(C, H, W) -> one (rows*(H+gap)-gap, columns*(W+gap)-gap) image, ``gap`` pixels of ``fill`` between maps."""
    count, height, width = maps.shape
    rows = -(-count // columns)
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), fill, dtype=np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        sheet[row * (height + gap):row * (height + gap) + height,
              column * (width + gap):column * (width + gap) + width] = maps[index]
    return sheet
