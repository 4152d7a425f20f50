"""The HTML report of a trained model: training curves, test-set confusion matrix and per-class
scores, the most confident mistakes, calibration, robustness and first-layer filters, on one
self-contained page (every figure embedded) with the PNGs and a ``metrics.json`` beside it.

Three steps: ``measure`` returns one value (ReportData: the evaluation and everything computed
from it), ``plot`` turns it into figures, and the page is the Jinja2 template
``templates/report.html.j2`` with its CSS in ``templates/report.css``.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_mnist.version import __version__
from cnn_mnist.errors import CnnMnistError
from cnn_mnist.model.network import NUM_CLASSES
from cnn_mnist.progress import format_duration
from cnn_mnist.training import checkpoints
from cnn_mnist.files import prepare_output_dir, write_atomically

log = logging.getLogger(__name__)

REPORT_NAME, METRICS_NAME = "report.html", "metrics.json"
VALIDATION_DIR = "eval_validation"  # where ValidationHook writes (--eval-every)
CALIBRATION_BINS = 15
MISTAKES_SHOWN = 25  # a 5x5 grid
DPI = 110  # sharp on a laptop screen, and the page stays well under 1 MB

# Okabe-Ito: distinguishable with every common colour-vision deficiency, and in greyscale print
# (the line styles differ too).
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#999999"


# -- what the report measures ----------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    steps: np.ndarray  # (K,) int64, increasing
    values: np.ndarray  # (K,) float64


@dataclass(frozen=True)
class TrainingCurves:
    """TensorBoard scalars by tag: ``train`` from the model directory, ``validation`` from
    ``eval_validation/``; each empty where there are no event files."""

    train: dict[str, Curve]
    validation: dict[str, Curve]


@dataclass(frozen=True)
class TestEvaluation:
    """A checkpoint on the test set, as ``cnn-mnist evaluate`` measures it, with each image's prediction."""

    accuracy: float
    loss: float
    global_step: int
    classes: np.ndarray  # (N,) int64, predicted
    probabilities: np.ndarray  # (N, 10) float32
    labels: np.ndarray  # (N,) int64
    images: np.ndarray  # (N, 28, 28) uint8
    conv1_weight: np.ndarray  # (32, 1, 5, 5) of the weights evaluated
    checkpoint_path: Path
    uses_weight_average: bool
    training_seconds: float | None  # None: a checkpoint from before it was recorded


@dataclass(frozen=True)
class Calibration:
    """Equal-width confidence bins; bin b holds edges[b] < confidence <= edges[b + 1] (the first also 0)."""

    edges: np.ndarray  # (B + 1,)
    counts: np.ndarray  # (B,) int64
    accuracy: np.ndarray  # (B,) fraction correct per bin, NaN where empty
    confidence: np.ndarray  # (B,) mean confidence per bin, NaN where empty
    ece: float  # sum over bins of |accuracy - confidence| * count / N


def read_scalars(directory: str | os.PathLike) -> dict[str, Curve]:
    """Every scalar tag in the event files directly in ``directory``; {} if there are none.

    A resumed run writes a new event file, and may log a step an earlier (killed) run logged
    too: the value written last wins, as it belongs to the weights the run carried on with.
    """
    directory = Path(directory)
    if not any(directory.glob("events.out.tfevents.*")):
        return {}
    # TensorBoard's reader costs ~1 s to import, so only here.
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    # size_guidance 0 keeps every point (the default samples 10,000 per tag); the duplicates are
    # resolved below by wall time rather than by TensorBoard's file-order purge.
    events = EventAccumulator(str(directory), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
    reader_log = logging.getLogger("tensorboard")
    level = reader_log.level
    reader_log.setLevel(logging.WARNING)  # it logs an INFO line per file read ("No path found after ...")
    try:
        events.Reload()
    finally:
        reader_log.setLevel(level)
    curves = {}
    for tag in events.Tags()[SCALARS]:
        latest: dict[int, tuple[float, float]] = {}
        for event in events.Scalars(tag):
            if event.step not in latest or event.wall_time >= latest[event.step][0]:
                latest[event.step] = (event.wall_time, event.value)
        steps = sorted(latest)
        curves[tag] = Curve(np.array(steps, dtype=np.int64), np.array([latest[s][1] for s in steps], dtype=float))
    return curves


def read_training_curves(model_dir: str | os.PathLike) -> TrainingCurves:
    model_dir = Path(model_dir)
    return TrainingCurves(train=read_scalars(model_dir), validation=read_scalars(model_dir / VALIDATION_DIR))


def evaluate_test_set(model_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                      device: str = "auto") -> TestEvaluation:
    """The newest good checkpoint on the test set, through the Estimator exactly as ``cnn-mnist
    evaluate`` runs it (default RunConfig, same batches), so the figures are the ones it prints."""
    from cnn_mnist.data.datasets import load_mnist
    from cnn_mnist.training.config import RunConfig
    from cnn_mnist.training.estimator import Estimator

    # The checkpoint is chosen once and named to both passes below, so a training run saving
    # meanwhile cannot give them different weights; its state says what the Estimator does not.
    state = checkpoints.newest_state(model_dir)
    if state is None:
        raise checkpoints.no_checkpoint_error(model_dir)
    path = state.path
    test = load_mnist(data_dir).test
    classifier = Estimator(model_dir=model_dir, config=RunConfig(device=device))
    input_fn = classifier.input_fn_for(test)

    results = classifier.evaluate(input_fn, checkpoint_path=path, write_summaries=False)
    predictions = list(classifier.predict(input_fn, checkpoint_path=path))
    return TestEvaluation(
        accuracy=results["accuracy"], loss=results["loss"], global_step=results["global_step"],
        classes=np.array([p["classes"] for p in predictions], dtype=np.int64),
        probabilities=np.stack([p["probabilities"] for p in predictions]).astype(np.float32),
        labels=test.labels.numpy().astype(np.int64), images=test.images.numpy(),
        conv1_weight=classifier.evaluation_network.conv1.weight.detach().float().cpu().numpy().copy(),
        checkpoint_path=path, uses_weight_average=state.uses_weight_average, training_seconds=state.training_seconds,
    )


def confusion_matrix(labels: np.ndarray, classes: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    labels, classes = np.asarray(labels, dtype=np.int64), np.asarray(classes, dtype=np.int64)
    return np.bincount(labels * num_classes + classes, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(confusion: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of each class; a score whose denominator is 0 is 0
    (scikit-learn's ``zero_division=0``), so the figures stay valid JSON."""
    correct = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    scores = []
    for c in range(len(confusion)):
        precision = correct[c] / predicted[c] if predicted[c] else 0.0
        recall = correct[c] / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"class": c, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                       "support": int(support[c])})
    return scores


def measure_calibration(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = CALIBRATION_BINS,
                        classes: np.ndarray | None = None) -> Calibration:
    """Reliability bins and expected calibration error, with confidence = the highest probability.

    ``classes`` defaults to the argmax of ``probabilities``; pass the model's own to count a
    prediction correct exactly when the accuracy does.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) if classes is None else np.asarray(classes)) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # side="left" makes each bin right-closed, (lo, hi], as Guo et al. (2017) define them.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins are NaN, not an error
        accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / counts
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
    filled = counts > 0
    ece = float(np.sum(np.abs(accuracy[filled] - mean_confidence[filled]) * counts[filled]) / max(len(labels), 1))
    return Calibration(edges=edges, counts=counts, accuracy=accuracy, confidence=mean_confidence, ece=ece)


def most_confident_mistakes(probabilities: np.ndarray, classes: np.ndarray, labels: np.ndarray,
                            count: int = MISTAKES_SHOWN) -> np.ndarray:
    """Indices of up to ``count`` wrong predictions, the most confident first (ties: lower index first)."""
    confidence = np.asarray(probabilities).max(axis=1)
    wrong = np.flatnonzero(np.asarray(classes) != np.asarray(labels))
    order = np.argsort(-confidence[wrong], kind="stable")
    return wrong[order[:count]]


# -- figures -------------------------------------------------------------------------------------------


def new_figure(width_in: float, height_in: float):
    """A Figure drawn by Agg, made without pyplot: no global backend, no display, no figure registry."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def plot_training_curves(curves: TrainingCurves):
    """Loss (log scale) and accuracy against global step; train solid blue, validation dashed vermillion."""
    figure = new_figure(10, 3.8)
    axes = figure.subplots(1, 2)
    for ax, tag, title in ((axes[0], "loss", "Loss (cross-entropy)"), (axes[1], "accuracy", "Accuracy")):
        for curves_by_tag, label, style in (
                (curves.train, "train (one batch)", dict(color=BLUE, linestyle="-", marker="o", markersize=3)),
                (curves.validation, "validation (5,000 images)",
                 dict(color=VERMILLION, linestyle="--", marker="s", markersize=4))):
            if tag in curves_by_tag:
                curve = curves_by_tag[tag]
                ax.plot(curve.steps, curve.values, label=label, linewidth=1.6, **style)
        if tag == "loss":
            _use_log_scale_if_wide(ax, [c[tag].values for c in (curves.train, curves.validation) if tag in c])
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("global step")
        ax.grid(True, color="#dddddd", linewidth=0.7)
        ax.set_axisbelow(True)
        if ax.has_data():
            ax.legend(fontsize=9, frameon=False)
    return figure


def _use_log_scale_if_wide(ax, values: list[np.ndarray]) -> None:
    """A log y axis, labelled 1, 0.1, 0.01, where the values span more than a factor of 5 (a
    loss falling from 2.3 to 0.02); over a narrower span it would only show a few odd ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = np.concatenate(values) if values else np.array([])
    if len(values) and (values > 0).all() and values.max() / values.min() > 5:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_confusion_matrix(confusion: np.ndarray):
    """Counts as a 'Blues' heat map, each cell annotated; zeros faint so the errors stand out."""
    n = len(confusion)
    figure = new_figure(6.2, 5.4)
    ax = figure.subplots()
    image = ax.imshow(confusion, cmap="Blues", vmin=0, vmax=max(int(confusion.max()), 1))
    threshold = 0.55 * max(int(confusion.max()), 1)
    fontsize = 9 if confusion.max() >= 1000 else 10  # four digits must fit a cell
    for true in range(n):
        for predicted in range(n):
            value = int(confusion[true, predicted])
            color = "white" if value > threshold else ("#bbbbbb" if value == 0 else "black")
            ax.text(predicted, true, str(value), ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    figure.colorbar(image, ax=ax, shrink=0.85, label="test images")
    return figure


def plot_mistakes(images: np.ndarray, labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray,
                  indices: np.ndarray):
    """The given test images in a 5-wide grid, dark ink on white, each titled true/predicted/probability."""
    columns = 5
    rows = max(1, -(-len(indices) // columns))
    figure = new_figure(7.5, 1.75 * rows + 0.2)
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, indices, strict=False):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"#{i}: true {labels[i]}, pred {classes[i]}\np = {probabilities[i, classes[i]]:.3f}",
                     fontsize=8.5)
    return figure


def plot_reliability(calibration: Calibration):
    """Accuracy per confidence bin against the diagonal, over a log-scale count histogram."""
    figure = new_figure(6.2, 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    edges, width = calibration.edges, np.diff(calibration.edges)
    filled = calibration.counts > 0
    top.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1.2, label="perfect calibration")
    top.bar(edges[:-1][filled], calibration.accuracy[filled], width=width[filled], align="edge",
            color=BLUE, edgecolor="white", linewidth=0.8, label="accuracy in bin")
    top.plot(calibration.confidence[filled], calibration.confidence[filled], linestyle="none", marker="D",
             markersize=4, color=VERMILLION, label="mean confidence in bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_aspect("auto")
    top.grid(True, color="#dddddd", linewidth=0.7)
    top.set_axisbelow(True)
    # Title and legend sit above the axes: inside, any corner can hold a bar.
    top.set_title(f"Expected calibration error (ECE) = {calibration.ece:.4f}", fontsize=12, pad=30)
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8.5, frameon=False,
               handlelength=1.5, columnspacing=1.2)
    bottom.bar(edges[:-1], calibration.counts, width=width, align="edge", color=GREY, edgecolor="white",
               linewidth=0.8)
    if calibration.counts.max(initial=0) > 0:
        bottom.set_yscale("log")  # one bin near 1.0 holds almost every image of a good model
    bottom.set_xlabel(f"confidence (highest probability), {len(calibration.counts)} bins")
    bottom.set_ylabel("images")
    bottom.grid(True, axis="y", color="#dddddd", linewidth=0.7)
    bottom.set_axisbelow(True)
    return figure


def plot_filters(weight: np.ndarray, columns: int = 8):
    """conv1's kernels (N, 1, k, k) in a grid, one symmetric 'PuOr' scale around 0 for all."""
    kernels = np.asarray(weight)[:, 0]
    rows = -(-len(kernels) // columns)
    limit = float(np.abs(kernels).max()) or 1.0
    figure = new_figure(8, 0.86 * rows + 0.2)  # square cells with the colour bar beside them
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    image = None
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(kernels):
            image = ax.imshow(kernels[i], cmap="PuOr", vmin=-limit, vmax=limit, interpolation="nearest")
    figure.colorbar(image, ax=axes.tolist(), shrink=0.9, label="weight")
    return figure


ROBUSTNESS_IMAGES = 1_000  # ~20 s of corrupting and predicting here


def measure_robustness(model_dir: Path, evaluation: TestEvaluation, device: str,
                       images: int = ROBUSTNESS_IMAGES) -> dict | None:
    """The checkpoint the report evaluates, under MNIST-C's 15 corruptions on the first ``images``
    test digits, with the first digit under each as an example; None without scikit-image."""
    from cnn_mnist.data.corruptions import CORRUPTIONS, available, corrupt

    if not available():
        return None
    from cnn_mnist.use.predictor import Predictor
    from cnn_mnist.use.robustness import evaluate_corruptions

    predictor = Predictor(model_dir, checkpoint_path=evaluation.checkpoint_path, device=device)
    count = min(images, len(evaluation.labels))
    results = evaluate_corruptions(predictor, evaluation.images[:count], evaluation.labels[:count])
    results["examples"] = {name: corrupt(evaluation.images[:1], name)[0] for name in CORRUPTIONS}
    return results


def plot_robustness(results: dict):
    """One bar per corruption (accuracy, the clean accuracy as a line) beside an example of each."""
    names = list(results["corruptions"])
    figure = new_figure(8.5, 0.36 * len(names) + 1.2)
    bars, examples = figure.subplots(1, 2, width_ratios=[8, 1])
    values = [results["corruptions"][name] for name in names]
    bars.barh(range(len(names)), values, color=["#b91c1c" if v < 0.6 else "#1d4ed8" for v in values])
    bars.axvline(results["clean"], color="#15181e", linestyle="--", linewidth=1, label=f"clean {results['clean']:.3f}")
    bars.axvline(results["mean"], color="#9a3412", linewidth=1, label=f"mean of 15 {results['mean']:.3f}")
    for y, value in enumerate(values):  # inside the bar's end, or just past a short one
        inside = value > 0.15
        bars.text(value - 0.01 if inside else value + 0.01, y, f"{value:.3f}", va="center", fontsize=8,
                  ha="right" if inside else "left", color="white" if inside else "#15181e")
    bars.set_yticks(range(len(names)), [name.replace("_", " ") for name in names])
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("accuracy")
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)
    strip = np.concatenate([results["examples"][name] for name in names], axis=0)  # (15*28, 28)
    examples.imshow(strip, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    examples.set_axis_off()
    examples.set_title("examples", fontsize=9)
    return figure


# -- the report: measured once, then drawn, then written -------------------------------------------


@dataclass(frozen=True)
class ReportData:
    """Everything the report measures: what the figures draw, the page states and metrics.json holds."""

    model_dir: Path
    evaluation: TestEvaluation
    curves: TrainingCurves
    confusion: np.ndarray  # (10, 10) int64: rows true, columns predicted
    scores: list[dict]  # per class: precision, recall, f1, support
    calibration: Calibration
    mistakes: np.ndarray  # test indices of the most confident mistakes, most confident first
    robustness: dict | None  # evaluate_corruptions' figures and an example of each; None without scikit-image
    run_config: dict | str | None  # config.json; None if absent, a sentence if unreadable

    def metrics(self) -> dict:
        """metrics.json: the figures, as numbers."""
        evaluation, calibration = self.evaluation, self.calibration
        return {
            "accuracy": evaluation.accuracy, "loss": evaluation.loss, "global_step": evaluation.global_step,
            "num_examples": len(evaluation.labels), "ece": calibration.ece, "per_class": self.scores,
            "confusion": self.confusion.tolist(), "checkpoint": evaluation.checkpoint_path.name,
            "weights": checkpoints.weights_label(evaluation.uses_weight_average),
            "training_seconds": evaluation.training_seconds,
            "calibration": {"edges": calibration.edges.tolist(), "counts": calibration.counts.tolist(),
                            "accuracy": _nan_to_none(calibration.accuracy),
                            "confidence": _nan_to_none(calibration.confidence)},
            "most_confident_mistakes": self.mistakes.tolist(),
            "robustness": None if self.robustness is None else
            {key: value for key, value in self.robustness.items() if key != "examples"},
        }


def measure(model_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
            device: str = "auto") -> ReportData:
    """Evaluate the newest checkpoint on the test set and read the training curves and config."""
    model_dir = Path(model_dir)
    evaluation = evaluate_test_set(model_dir, data_dir, device)
    confusion = confusion_matrix(evaluation.labels, evaluation.classes)
    return ReportData(
        model_dir=model_dir, evaluation=evaluation, curves=read_training_curves(model_dir), confusion=confusion,
        scores=per_class_scores(confusion),
        calibration=measure_calibration(evaluation.probabilities, evaluation.labels, classes=evaluation.classes),
        mistakes=most_confident_mistakes(evaluation.probabilities, evaluation.classes, evaluation.labels),
        robustness=measure_robustness(model_dir, evaluation, device), run_config=_read_config_json(model_dir))


def plot(data: ReportData) -> dict[str, bytes | None]:
    """Each figure as PNG bytes by file name; None where there is nothing to draw."""
    evaluation, curves = data.evaluation, data.curves
    figures = {
        "confusion_matrix.png": plot_confusion_matrix(data.confusion),
        "mistakes.png": plot_mistakes(evaluation.images, evaluation.labels, evaluation.classes,
                                      evaluation.probabilities, data.mistakes) if len(data.mistakes) else None,
        "reliability.png": plot_reliability(data.calibration),
        "filters.png": plot_filters(evaluation.conv1_weight),
        "training_curves.png": plot_training_curves(curves) if curves.train or curves.validation else None,
        "robustness.png": plot_robustness(data.robustness) if data.robustness is not None else None,
    }
    return {name: None if figure is None else png_bytes(figure) for name, figure in figures.items()}


class ReportPage(type(Path())):  # PosixPath or WindowsPath: Path itself cannot be subclassed before 3.12
    """report.html's path; in a notebook, the page itself, in a frame that keeps its styles apart
    from the notebook's."""

    def _repr_html_(self) -> str:
        import html

        page = self.read_text(encoding="utf-8")
        return (f'<iframe srcdoc="{html.escape(page)}" title="cnn-mnist report" '
                'style="width: 100%; height: 900px; border: 1px solid #d0d4dc"></iframe>')


def write_report(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, device: str = "auto") -> ReportPage:
    """Evaluate the newest checkpoint on the test set and write report.html, its PNGs and
    metrics.json to ``out_dir`` (default ``<model_dir>/report``); returns report.html's path (which
    a notebook shows as the page).
    Each file is written whole or not at all (a reader never sees half a page)."""
    model_dir = Path(model_dir)
    # An empty directory, then the output: neither problem should cost a test-set evaluation.
    checkpoints.require_checkpoint(model_dir)
    out_dir = prepare_output_dir(out_dir if out_dir is not None else model_dir / "report",
                                 "--output" if out_dir is not None else "the default report folder")
    data = measure(model_dir, data_dir, device)
    pngs = plot(data)
    files = {**pngs, METRICS_NAME: (json.dumps(data.metrics(), indent=2) + "\n").encode(),
             REPORT_NAME: render_html(data, pngs).encode("utf-8")}
    try:
        for name, content in files.items():
            if content is None:
                (out_dir / name).unlink(missing_ok=True)  # not left over from an earlier report
            else:
                write_atomically(out_dir / name, lambda temp, content=content: temp.write_bytes(content))
    except OSError as err:
        raise CnnMnistError(f"cannot write the report to {out_dir}: {err.strerror or err}") from None
    return ReportPage(out_dir / REPORT_NAME)


def render_html(data: ReportData, pngs: dict[str, bytes | None]) -> str:
    """The page, from the template ``templates/report.html.j2`` (autoescaped: a path or a config
    value is text, never markup)."""
    from cnn_mnist.use import display

    return display.render("report.html.j2", _page(data, pngs))


def _page(data: ReportData, pngs: dict[str, bytes | None]) -> dict:
    """What the template reads beyond ReportData's fields: the figures as base64, and the sums
    and sentences worked out here rather than in the template."""
    evaluation, n = data.evaluation, len(data.evaluation.labels)
    wrong = int((evaluation.classes != evaluation.labels).sum())
    seconds, speed = evaluation.training_seconds, data.curves.train.get("global_step/sec")
    run_config = data.run_config
    if isinstance(run_config, dict):
        run_config = [(key, _format_value(value)) for key, value in _flatten(run_config)]
    return {
        "model_dir": data.model_dir, "evaluation": evaluation, "curves": data.curves, "n": n, "wrong": wrong,
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items() if png is not None},
        "scores": data.scores,
        "macro": {key: float(np.mean([s[key] for s in data.scores])) for key in ("precision", "recall", "f1")},
        "mistakes": len(data.mistakes), "calibration": data.calibration,
        "filled_bins": int((data.calibration.counts > 0).sum()), "robustness": data.robustness,
        "summary": [("test accuracy", f"{evaluation.accuracy * 100:.2f}%"), ("test loss", f"{evaluation.loss:.4f}"),
                    ("global step", f"{evaluation.global_step:,}"), ("ECE", f"{data.calibration.ece:.4f}"),
                    ("mistakes", f"{wrong:,} of {n:,}")],
        "training_time": "unknown (checkpoint from before it was recorded)" if seconds is None
        else f"{format_duration(seconds)} (over every resumed run)",
        "steps_per_second": float(np.median(speed.values)) if speed is not None and len(speed.values) else None,
        "run_config": run_config,
        "made": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "version": __version__,
    }


def _nan_to_none(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


def _read_config_json(model_dir: Path) -> dict | str | None:
    """config.json as a dict; None if absent; a sentence if it cannot be read (the report still is)."""
    from cnn_mnist.training.run_record import CONFIG_NAME

    path = model_dir / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{path.name} could not be read ({err})"
    return record if isinstance(record, dict) else f"{path.name} does not hold a JSON object"


def _flatten(record: dict, prefix: str = "") -> list[tuple[str, object]]:
    """{"params": {"optimizer": "adam"}} -> [("params.optimizer", "adam")]."""
    flat = []
    for key, value in record.items():
        if isinstance(value, dict):
            flat.extend(_flatten(value, f"{prefix}{key}."))
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def _format_value(value) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, (list, bool)) else str(value)
