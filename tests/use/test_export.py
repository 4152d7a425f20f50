"""Export: ONNX and safetensors round trips from a small trained model, metadata, parity, and one-line errors."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL_STEPS as STEPS
from helpers import md5_check_skipped, one_line_error

from cnn_mnist.cli import main
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import ExportError, install_hint
from cnn_mnist.model.network import ConvNet
from cnn_mnist.use import export
from cnn_mnist.use.predictor import Predictor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def mnist(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False)


@pytest.fixture(scope="module")
def trained(small_model, tmp_path_factory):
    """The session's small model (its checkpoint carries a weight average, as the fast preset's
    does), copied: export writes into the model directory."""
    return shutil.copytree(small_model, tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained)


@pytest.fixture(scope="module")
def exported(trained, tiny_mnist_dir):
    with md5_check_skipped():
        return export.export_model(trained, "onnx", data_dir=tiny_mnist_dir, parity_images=250)


def float_pixels(images: torch.Tensor) -> np.ndarray:
    return images.numpy().astype(np.float32)[:, None] / np.float32(255)  # (N, 1, 28, 28) in [0, 1]


def test_onnx_file_matches_pytorch_for_any_batch_size(exported, trained, predictor, mnist):
    assert exported.path == trained / "export" / "model.onnx" and exported.format == "onnx"
    assert exported.global_step == STEPS and exported.weights == "weight average"
    assert exported.parity.images == 250 and exported.parity.max_abs_diff <= 1e-5
    assert str(exported.parity).startswith("parity on 250 test images: max |dp| = ")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (images,) = session.get_inputs()
    assert (images.name, images.type, images.shape[1:]) == ("images", "tensor(float)", [1, 28, 28])
    assert isinstance(images.shape[0], str)  # a dynamic batch dimension
    assert [(o.name, o.type) for o in session.get_outputs()] == [("probabilities", "tensor(float)"),
                                                                ("classes", "tensor(int64)")]
    for batch in (1, 37):
        pixels = float_pixels(mnist.test.images[100:100 + batch])
        probabilities, classes = session.run(None, {"images": pixels})
        expected = predictor.predict(pixels)
        assert probabilities.shape == (batch, 10) and classes.shape == (batch,)
        np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(classes, expected.classes)


def test_onnx_file_is_self_contained_and_carries_its_metadata(exported):
    assert sorted(p.name for p in exported.path.parent.iterdir()) == ["model.onnx"]  # no external data file
    model = onnx.load(str(exported.path), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert {init.name for init in model.graph.initializer} >= set(ConvNet().state_dict())
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert meta["global_step"] == str(STEPS) and meta["checkpoint"] == f"model.ckpt-{STEPS}.pt"
    assert meta["weights"] == "weight average" and meta["cnn_mnist_version"] == export.__version__
    assert json.loads(meta["class_names"]) == [str(digit) for digit in range(10)]
    assert "centre of mass" in meta["input_preparation"] and "divide by 255" in meta["input_preparation"]


def test_onnx_graph_holds_only_standard_ops(exported):
    """fast_linear's oneDNN autograd Function must fall back to F.linear under export."""
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    assert [opset.domain for opset in model.opset_import] == [""] and not model.functions
    ops = {(node.domain, node.op_type) for node in model.graph.node}
    assert all(domain == "" and onnx.defs.has(op_type) for domain, op_type in ops), ops
    assert {"Conv", "MaxPool", "Softmax", "ArgMax"} <= {op for _, op in ops}
    assert not any("mkldnn" in op.lower() or "onednn" in op.lower() for _, op in ops)


def test_safetensors_load_back_with_the_documented_one_liner(trained, predictor, mnist):
    from safetensors import safe_open
    from safetensors.torch import load_file

    result = export.export_model(trained, "safetensors")
    assert result.path == trained / "export" / "model.safetensors" and result.parity is None
    net = ConvNet().eval()
    net.load_state_dict(load_file(result.path))  # docs/export.md's one-liner
    with torch.inference_mode():
        probabilities = torch.softmax(net(mnist.test.images), dim=1).numpy()
    expected = predictor.predict(mnist.test.images.numpy())
    np.testing.assert_array_equal(probabilities.argmax(1), expected.classes)
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=1e-6)
    with safe_open(result.path, "pt") as file:
        assert file.metadata()["global_step"] == str(STEPS) and set(file.keys()) == set(net.state_dict())


def test_an_onnx_model_that_disagrees_is_never_written(exported, predictor, mnist, monkeypatch, tmp_path):
    def tampered(network, metadata):  # the good graph with one class's bias raised
        model = onnx.load(str(exported.path))
        (bias,) = [init for init in model.graph.initializer if init.name == "logits.bias"]
        values = onnx.numpy_helper.to_array(bias).copy()
        values[3] += 1.0
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        return model

    monkeypatch.setattr(export, "build_onnx_model", tampered)
    output = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"disagrees with PyTorch on 40 test images: max \|dp\| = .*classes differ"):
        export.export_onnx(predictor, output, mnist.test.images[:40])
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary
    output.write_bytes(b"an older export")
    with pytest.raises(ExportError):
        export.export_onnx(predictor, output, mnist.test.images[:40])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and output.read_bytes() == b"an older export"


def test_a_corrupt_onnx_file_fails_the_parity_check(predictor, mnist, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(ExportError, match="onnxruntime cannot load the exported model"):
        export.check_parity(tmp_path / "junk.onnx", predictor, mnist.test.images[:5])


def test_cli_exports_both_formats(trained, tiny_mnist_dir, no_verify, tmp_path, capsys):
    status = main(["export", "--model-dir", str(trained), "--data-dir", str(tiny_mnist_dir), "--format", "onnx",
                   "--output", str(tmp_path / "out" / "digits.onnx")])
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and (tmp_path / "out" / "digits.onnx").is_file()
    assert out[0].startswith(f"exported model.ckpt-{STEPS}.pt (global step {STEPS}, weight average) to ")
    assert out[1].startswith("parity on 300 test images: max |dp| = ") and out[1].endswith(", classes identical")
    status = main(["export", "--model-dir", str(trained), "--format", "safetensors", "--output",
                   str(tmp_path / "w.safetensors")])
    assert status == 0 and (tmp_path / "w.safetensors").is_file() and "MB" in capsys.readouterr().out


def test_cli_help_names_the_default_paths(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--format {onnx,safetensors,web}" in help_text and "<model-dir>/export/model.onnx" in help_text
    assert "--web-runtime FILE" in help_text


def test_bad_model_dirs_and_output_paths_are_one_line_errors(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("a file")
    base = ["export", "--format", "safetensors"]
    one_line_error(capsys, [*base, "--model-dir", str(tmp_path / "nope")],
                   "does not exist; check the path, or train first")
    one_line_error(capsys, [*base, "--model-dir", str(tmp_path / "empty")], "no checkpoint in")
    one_line_error(capsys, [*base, "--model-dir", str(trained), "--output", str(tmp_path)], "is a directory")
    one_line_error(capsys, [*base, "--model-dir", str(trained), "--output", str(tmp_path / "file" / "m.st")],
                   f"cannot be written: {tmp_path / 'file'} is a file")
    with pytest.raises(ExportError, match="unknown export format 'pickle'"):
        export.export_model(trained, "pickle")


def test_onnx_export_without_onnxruntime_says_what_to_install(trained, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    one_line_error(capsys, ["export", "--model-dir", str(trained), "--format", "onnx"],
                   f"ONNX export needs onnxruntime, which is not installed; {install_hint('export')}")
