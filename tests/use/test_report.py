"""The report: its figures are evaluate's, its page stands alone, and each of its parts says what
it should (training curves, confusion matrix, confident mistakes, calibration, filters)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import md5_check_skipped, one_line_error
from PIL import Image

from cnn_mnist.cli import main
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.training.checkpoints import load_checkpoint, save_checkpoint
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.report import (
    confusion_matrix,
    measure_calibration,
    most_confident_mistakes,
    per_class_scores,
    plot_filters,
    read_scalars,
    write_report,
)

# Ten plain-SGD steps leave the tiny model ~60% right: mistakes enough for a full 5x5 grid (the
# session's small model, which the other modules share, gets every test image right).
# --eval-every writes a validation curve: one point, at step 10, as each costs 5,000 images.
TRAIN = ["--steps", "10", "--optimizer", "sgd", "--learning-rate", "0.02", "--eval-every", "10",
         "--log-probabilities-every", "0"]
PNGS = ("training_curves.png", "confusion_matrix.png", "mistakes.png", "reliability.png", "filters.png",
        "robustness.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_mnist_dir) -> Path:
    """A model trained once for the whole module (the no_verify fixture is per test)."""
    model_dir = tmp_path_factory.mktemp("report") / "model"
    with md5_check_skipped(), torch.random.fork_rng():
        assert main(["train", "-q", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir), *TRAIN]) == 0
    return model_dir


@pytest.fixture(scope="module")
def report(trained, tiny_mnist_dir, tmp_path_factory) -> dict:
    """``cnn-mnist report --out DIR`` run once: its exit status, stdout and files."""
    out = tmp_path_factory.mktemp("report_out") / "out"
    with md5_check_skipped(), pytest.MonkeyPatch.context() as patch:
        stdout = io.StringIO()
        patch.setattr("sys.stdout", stdout)
        status = main(["report", "-q", "--model-dir", str(trained), "--data-dir", str(tiny_mnist_dir),
                       "--out", str(out)])
    return {"status": status, "stdout": stdout.getvalue(), "out": out,
            "html": (out / "report.html").read_text(encoding="utf-8"),
            "metrics": json.loads((out / "metrics.json").read_text())}


def test_the_cli_writes_to_out_and_prints_the_path(report, trained):
    assert report["status"] == 0
    assert report["stdout"] == f"Report written to {report['out'] / 'report.html'}\n"
    assert not (trained / "report").exists()  # --out replaced the default


def test_the_figures_are_the_ones_evaluate_prints(report, trained, tiny_mnist_dir, no_verify, capsys):
    assert main(["evaluate", "-q", "--json", "--model-dir", str(trained), "--data-dir", str(tiny_mnist_dir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    metrics = report["metrics"]
    assert metrics["accuracy"] == evaluated["accuracy"]
    assert metrics["loss"] == pytest.approx(evaluated["loss"], rel=1e-6)
    assert metrics["global_step"] == evaluated["global_step"] == 10
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == metrics["num_examples"] == len(load_mnist(tiny_mnist_dir).test)
    assert np.trace(confusion) / confusion.sum() == metrics["accuracy"]
    assert [row["support"] for row in metrics["per_class"]] == confusion.sum(axis=1).tolist()
    assert metrics["checkpoint"] == "model.ckpt-10.pt" and metrics["training_seconds"] > 0
    summary = re.sub(r"<[^>]+>", " ", report["html"])
    assert f"{metrics['accuracy'] * 100:.2f}%" in summary and f"{metrics['ece']:.4f}" in summary


def test_the_robustness_section_gives_what_evaluate_corruptions_prints(report, trained, tiny_mnist_dir, no_verify,
                                                                       capsys):
    pytest.importorskip("skimage")
    from cnn_mnist.data.corruptions import CORRUPTIONS

    robustness = report["metrics"]["robustness"]
    assert list(robustness["corruptions"]) == list(CORRUPTIONS)
    count = robustness["images"]
    assert main(["evaluate", "-q", "--json", "--corruptions", "--corruption-images", str(count), "--model-dir",
                 str(trained), "--data-dir", str(tiny_mnist_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == robustness
    section = report["html"].split('<section id="robustness">')[1].split("</section>")[0]
    assert f"{robustness['mean']:.4f}" in section and 'src="data:image/png;base64,' in section
    assert (report["out"] / "robustness.png").is_file()


def test_the_page_stands_alone(report):
    page, out = report["html"], report["out"]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(sources) == len(PNGS) == len(re.findall(r"<img\b", page))
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    for name in PNGS:
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            image.verify()
    assert len(page.encode()) < 2 * 1024 * 1024


def test_the_most_confident_mistakes_are_shown(report, trained, tiny_mnist_dir):
    test = load_mnist(tiny_mnist_dir, download=False).test
    probabilities = Predictor(trained).predict(test.images.numpy()).probabilities  # independently of the report
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    mistakes = np.flatnonzero(predicted != test.labels.numpy())
    assert len(mistakes) > 25, "the tiny model should make more mistakes than the grid shows"
    shown = np.array(report["metrics"]["most_confident_mistakes"])
    assert len(shown) == 25 and set(shown) <= set(mistakes)
    assert np.all(np.diff(confidence[shown]) <= 1e-6)  # most confident first
    not_shown = np.setdiff1d(mistakes, shown)
    assert confidence[shown].min() >= confidence[not_shown].max() - 1e-6


def test_training_curves_include_validation_when_trained_with_eval_every(report, trained):
    validation = read_scalars(trained / "eval_validation")
    assert validation["accuracy"].steps.tolist() == validation["loss"].steps.tolist() == [10]
    assert "loss" in read_scalars(trained) and "accuracy" in read_scalars(trained)
    assert "No validation curve" not in report["html"]


def test_without_validation_or_events_the_page_says_why(trained, tiny_mnist_dir, no_verify, tmp_path):
    no_validation = tmp_path / "no_validation"
    shutil.copytree(trained, no_validation, ignore=shutil.ignore_patterns("eval_validation"))
    path = write_report(no_validation, data_dir=tiny_mnist_dir)
    assert path == no_validation / "report" / "report.html"  # the default out dir
    assert type(path).__name__ == "ReportPage"  # a path that a notebook shows as the page
    page = path.read_text()
    assert "No validation curve" in page and "--eval-every N" in page
    assert (path.parent / "training_curves.png").is_file()

    # Only a checkpoint, and one from before checkpoints recorded their training time.
    state = load_checkpoint(trained / "model.ckpt-10.pt")
    del state["training_seconds"]
    save_checkpoint(tmp_path / "no_events", state, keep_checkpoint_max=1)
    page = write_report(tmp_path / "no_events", tmp_path / "out", data_dir=tiny_mnist_dir).read_text()
    assert "No TensorBoard event files" in page
    assert "No <code>config.json</code>" in page
    assert "<th>training time</th><td>unknown" in page
    assert not (tmp_path / "out" / "training_curves.png").exists()


def test_a_step_logged_twice_keeps_the_value_written_last(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    # A killed run logged step 200; its resumed run logged step 200 again, in a second file.
    with SummaryWriter(log_dir=str(tmp_path), filename_suffix=".1") as first:
        first.add_scalar("loss", 1.0, 100, walltime=1000.0)
        first.add_scalar("loss", 0.5, 200, walltime=1010.0)
    with SummaryWriter(log_dir=str(tmp_path), filename_suffix=".2") as resumed:
        resumed.add_scalar("loss", 0.4, 200, walltime=1100.0)
        resumed.add_scalar("loss", 0.3, 300, walltime=1110.0)
    loss = read_scalars(tmp_path)["loss"]
    assert loss.steps.tolist() == [100, 200, 300]
    assert loss.values.tolist() == pytest.approx([1.0, 0.4, 0.3])
    assert read_scalars(tmp_path / "missing") == {}


def confident(cls: int, confidence: float) -> np.ndarray:
    """A probability row: ``confidence`` on ``cls``, the rest spread evenly."""
    row = np.full(10, (1 - confidence) / 9)
    row[cls] = confidence
    return row


def test_ece_on_a_hand_made_example():
    # Bins are (k/15, (k+1)/15]: 0.95 and 1.0 fall in the last, (0.933, 1]; 0.55 in (0.533, 0.6].
    probabilities = np.stack([confident(3, 0.95), confident(3, 0.95), confident(7, 1.0), confident(1, 0.55)])
    labels = np.array([3, 4, 7, 1])  # the second is wrong
    calibration = measure_calibration(probabilities, labels)
    assert len(calibration.counts) == 15 and calibration.edges[[0, -1]].tolist() == [0, 1]
    assert calibration.counts[14] == 3 and calibration.counts[8] == 1 and calibration.counts.sum() == 4
    assert calibration.accuracy[14] == pytest.approx(2 / 3)
    assert calibration.confidence[14] == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert np.isnan(calibration.accuracy[0])  # empty bins have no accuracy
    # |2/3 - 0.9667| * 3/4 + |1 - 0.55| * 1/4
    assert calibration.ece == pytest.approx(0.3 * 3 / 4 + 0.45 / 4)


def test_a_calibrated_model_has_zero_ece():
    probabilities = np.stack([confident(c, 0.75) for c in range(4)])
    assert measure_calibration(probabilities, np.array([0, 1, 2, 9])).ece == pytest.approx(0, abs=1e-12)


def test_confusion_matrix_and_per_class_scores():
    labels, classes = np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 1])
    confusion = confusion_matrix(labels, classes, num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]  # rows true, columns predicted
    zero, one, two = per_class_scores(confusion)
    assert one == {"class": 1, "precision": 0.5, "recall": 2 / 3, "f1": pytest.approx(4 / 7), "support": 3}
    assert zero["precision"] == zero["recall"] == 0.5
    assert two == {"class": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted


def test_mistakes_are_ordered_by_confidence_then_index():
    probabilities = np.stack([confident(1, 0.6), confident(2, 0.9), confident(3, 0.99), confident(4, 0.9)])
    labels = np.array([0, 0, 3, 0])  # image 2 is right, however confident
    assert most_confident_mistakes(probabilities, probabilities.argmax(1), labels).tolist() == [1, 3, 0]
    assert most_confident_mistakes(probabilities, probabilities.argmax(1), labels, count=2).tolist() == [1, 3]


def test_filters_share_one_scale_symmetric_around_zero():
    weight = np.random.default_rng(0).normal(size=(32, 1, 5, 5))
    weight[5, 0, 2, 2] = -4.0  # the largest magnitude, negative
    images = [image for ax in plot_filters(weight).axes for image in ax.images]
    assert len(images) == 32
    assert {image.get_clim() for image in images} == {(-4.0, 4.0)}


def test_no_checkpoint_is_a_one_line_error(tmp_path, tiny_mnist_dir, no_verify, capsys):
    (tmp_path / "empty").mkdir()
    for model_dir, message in ((tmp_path / "empty", "no checkpoint in"), (tmp_path / "missing", "does not exist")):
        err = one_line_error(capsys, ["report", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir)],
                             message)
        assert err.startswith("cnn-mnist: error:"), err
    assert not (tmp_path / "empty" / "report").exists()


def test_the_template_escapes_what_it_is_given_and_says_why_a_config_is_unreadable(trained, tiny_mnist_dir,
                                                                                   no_verify, tmp_path):
    """Autoescaping: a folder name or a config value is text on the page, never markup."""
    odd = tmp_path / "<b>model</b>"
    shutil.copytree(trained, odd)
    record = json.loads((odd / "config.json").read_text())
    record["note"] = "<script>alert(1)</script>"
    (odd / "config.json").write_text(json.dumps(record))
    page = write_report(odd, tmp_path / "out", data_dir=tiny_mnist_dir).read_text()
    assert "<b>model</b>" not in page and "&lt;b&gt;model&lt;/b&gt;" in page
    assert "<script" not in page and "<th>note</th><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    (odd / "config.json").write_text("[1, 2]")
    page = write_report(odd, tmp_path / "out", data_dir=tiny_mnist_dir).read_text()
    assert '<p class="note">config.json does not hold a JSON object</p>' in page


def test_in_a_notebook_the_report_is_the_page_in_a_frame(report):
    from cnn_mnist.use.report import ReportPage

    path = ReportPage(report["out"] / "report.html")
    frame = path._repr_html_()
    assert frame.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;') and "<section" not in frame
    assert str(path) == str(report["out"] / "report.html") and path == report["out"] / "report.html"
