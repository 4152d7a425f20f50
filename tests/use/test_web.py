"""`cnn-mnist export --format web`: the static site's files, its model against prepare_image and
the network in Python, and its one-line errors. The page itself runs in Chromium in
test_web_site.py. ONNX Runtime Web comes from the npm registry once per machine (the cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_MODEL_STEPS
from helpers import draw_digit, encode, md5_check_skipped, one_line_error
from PIL import Image

from cnn_mnist.cli import main
from cnn_mnist.data.images import prepare_image
from cnn_mnist.use import web, web_runtime
from cnn_mnist.use.predictor import Predictor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Strokes on the pad (fractions of its side), as app.js draws them: dark ink on light paper.
STROKES = {
    "seven": [[(0.28, 0.22), (0.72, 0.22), (0.44, 0.80)]],
    "one": [[(0.52, 0.18), (0.50, 0.82)]],
    "zero": [[(0.50, 0.18), (0.70, 0.35), (0.68, 0.70), (0.48, 0.82), (0.30, 0.66), (0.32, 0.30), (0.50, 0.18)]],
    "small four, off centre": [[(0.10, 0.10), (0.10, 0.25), (0.22, 0.25)], [(0.20, 0.08), (0.20, 0.35)]],
}


def pad(strokes, width=0.065) -> np.ndarray:
    """A drawing as the page hands it to the model: (280, 280, 4) uint8 RGBA, opaque; the pen
    ``width`` a fraction of the pad's side."""
    side = web.CANVAS_SIZE
    image = draw_digit(strokes, size=side, width=round(width * side), ink=(0x15, 0x18, 0x1E, 255),
                       paper=(0xFC, 0xF9, 0xF0, 255), mode="RGBA")
    return np.asarray(image).copy()


@pytest.fixture(scope="module")
def site(small_model, tiny_mnist_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("site") / "digits"
    with md5_check_skipped():
        status = main(["export", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir), "--output",
                       str(folder), "--json"])
    assert status == 0
    return folder


def test_the_site_holds_the_page_the_model_and_the_runtime(site):
    names = sorted(str(path.relative_to(site)) for path in site.rglob("*") if path.is_file())
    assert names == ["index.html", "model.json", "model.onnx", "ort/ort-wasm-simd-threaded.mjs",
                     "ort/ort-wasm-simd-threaded.wasm", "ort/ort.wasm.min.js", "static/app.css", "static/app.js",
                     "static/onnx-model.js"]
    page = (site / "index.html").read_text()
    assert 'data-backend="onnx"' in page and f"ONNX Runtime Web {web_runtime.VERSION}" in page
    assert "Content-Security-Policy" in page and "openapi.json" not in page  # no server to link to
    about = json.loads((site / "model.json").read_text())
    assert about["global_step"] == SMALL_MODEL_STEPS and about["canvas_size"] == 280
    assert np.asarray(about["filters"]["values"]).shape == (32, 5, 5)


def test_the_network_weights_are_float16_and_the_preparation_stays_float32(site):
    model = onnx.load(site / "model.onnx")
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    assert types["network.dense.weight.float16"] == onnx.TensorProto.FLOAT16
    assert types["network.conv1.bias"] == onnx.TensorProto.FLOAT
    others = [name for name, kind in types.items() if not name.startswith("network.")]
    assert others and all(types[name] != onnx.TensorProto.FLOAT16 for name in others)
    assert [output.name for output in model.graph.output] == list(web.OUTPUTS)


@pytest.mark.parametrize("name", STROKES)
def test_the_site_model_prepares_and_answers_as_python_does(site, small_model, name):
    drawing = pad(STROKES[name])
    session = ort.InferenceSession(str(site / "model.onnx"), providers=["CPUExecutionProvider"])
    prepared, no_digit, probabilities, conv1, *_ = session.run(None, {"drawing": drawing})
    expected = prepare_image(encode(Image.fromarray(drawing, "RGBA")))  # what the CLI and the service make of it
    assert np.abs(prepared.astype(int) - expected.astype(int)).max() <= 1
    assert not no_digit and conv1.shape == (32, 28, 28)
    answer = Predictor(small_model, device="cpu").predict(expected[None])
    assert int(probabilities.argmax()) == int(answer.classes[0])
    assert np.abs(probabilities - answer.probabilities[0]).max() < 1e-3  # float16 weights


def test_a_blank_pad_is_no_digit(site):
    session = ort.InferenceSession(str(site / "model.onnx"), providers=["CPUExecutionProvider"])
    prepared, no_digit, probabilities = session.run(["prepared", "no_digit", "probabilities"],
                                                    {"drawing": pad([])})
    assert bool(no_digit) and np.isfinite(probabilities).all()


def test_bad_outputs_model_dirs_and_runtimes_are_one_line_errors(small_model, tiny_mnist_dir, no_verify, tmp_path,
                                                                 capsys):
    base = ["export", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir)]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    one_line_error(capsys, [*base, "--format", "web", "--output", str(tmp_path / "full")],
                   "exists and is not empty; the web site needs a new or empty folder")
    assert [path.name for path in (tmp_path / "full").iterdir()] == ["notes.txt"]
    one_line_error(capsys, [*base, "--format", "web", "--output", str(tmp_path / "site.onnx")],
                   "--format web writes a folder, but --output")
    one_line_error(capsys, [*base, "--format", "onnx", "--output", str(tmp_path / "site")],
                   "--format onnx writes one file, but --output")
    (tmp_path / "empty_model").mkdir()
    one_line_error(capsys, ["export", "--model-dir", str(tmp_path / "empty_model"), "--output", str(tmp_path / "s")],
                   "no checkpoint")
    broken = tmp_path / "onnxruntime-web.tgz"
    broken.write_bytes(b"not the tarball")
    one_line_error(capsys, [*base, "--output", str(tmp_path / "s"), "--web-runtime", str(broken)],
                   "is not onnxruntime-web-1.31.1.tgz as the npm registry publishes it")
    one_line_error(capsys, [*base, "--output", str(tmp_path / "s"), "--web-runtime", str(tmp_path / "missing.tgz")],
                   "cannot read it")
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))  # nothing half-written
