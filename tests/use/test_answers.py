"""use/answers.py: one path from inputs to answers, for the CLI and the service alike."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from helpers import SEVEN, draw_digit, draw_png

from cnn_mnist.cli import main
from cnn_mnist.data.images import prepare_image, prepare_pixels
from cnn_mnist.errors import DataError, ImageError, ImageTooLargeError
from cnn_mnist.use import answers
from cnn_mnist.use.predictor import Prediction


def test_the_cli_and_the_service_answer_a_picture_with_the_same_row(small_model, tmp_path, capsys):
    pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
    from fastapi.testclient import TestClient

    from cnn_mnist.use.service import create_app

    picture = tmp_path / "seven.png"
    picture.write_bytes(draw_png(SEVEN, size=(120, 160), width=12))
    blank = tmp_path / "blank.png"
    draw_digit([], size=50).save(blank)
    assert main(["predict", str(picture), str(blank), "--model-dir", str(small_model), "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)["predictions"]
    client = TestClient(create_app(small_model))
    by_service = [client.post("/v1/predict", content=path.read_bytes(),
                              headers={"content-type": "image/png"}).json()["predictions"][0]
                  for path in (picture, blank)]
    for cli_row, service_row in zip(by_cli, by_service, strict=True):
        assert list(cli_row) == list(service_row)  # one row shape, keys in one order
        assert {**cli_row, "input": "", "detail": ""} == {**service_row, "input": "", "detail": ""}
    assert by_cli[0]["class"] is not None and by_cli[1]["no_digit"] and by_service[1]["no_digit"]


def test_one_pixel_check_for_npy_files_arrays_and_json_pixels(tmp_path):
    out_of_range = np.full((28, 28), 1.5, dtype=np.float32)
    np.save(tmp_path / "range.npy", out_of_range)
    with pytest.raises(DataError, match=r"range.npy: pixels must lie in \[0, 1\] \(got 1.5..1.5\)"):
        answers.load_npy_images(tmp_path / "range.npy")
    with pytest.raises(ImageError, match=r"drawing: pixels must lie in \[0, 1\] \(got 1.5..1.5\)"):
        prepare_pixels(out_of_range, "drawing")
    pytest.importorskip("pydantic")
    from cnn_mnist.use.service import pixels_problem

    assert pixels_problem([0.0] * 783 + [300.0]).startswith("pixels must lie in [0, 255] (got 0..300)")
    # integers 0-255 in any integer type read as uint8 does
    grey = np.arange(784, dtype=np.int64).reshape(28, 28) % 256
    np.save(tmp_path / "int64.npy", grey)
    np.save(tmp_path / "uint8.npy", grey.astype(np.uint8))
    assert np.array_equal(answers.load_npy_images(tmp_path / "int64.npy"),
                          answers.load_npy_images(tmp_path / "uint8.npy"))


def test_predict_batches_by_the_devices_rule_and_keeps_the_order():
    class Recording:
        device = torch.device("cpu")
        classes = ("even", "odd") + tuple(str(i) for i in range(2, 10))
        batches: list[int] = []

        def predict(self, pixels):
            self.batches.append(len(pixels))
            classes = pixels.reshape(len(pixels), -1)[:, 0].round().astype(np.int64)  # the first pixel says
            return Prediction(classes, np.eye(10, dtype=np.float32)[classes])

    inputs = [answers.DigitInput(f"x{i}", np.full((28, 28), i % 2, dtype=np.float32)) for i in range(2001)]
    inputs.insert(3, answers.DigitInput("bad", error="bad: file not found"))
    model = Recording()
    rows = answers.predict(model, inputs, include_prepared=True)
    assert model.batches == [1000, 1000, 1]  # inference_batch_size on the CPU
    assert [row["input"] for row in rows] == [item.name for item in inputs]
    assert rows[3] == {"input": "bad", "class": None, "name": None, "probabilities": None, "no_digit": False,
                       "error": "bad: file not found", "prepared": None}
    assert [row["class"] for row in rows[:3]] == [0, 1, 0] and rows[4]["class"] == 1
    assert [row["name"] for row in rows[:3]] == ["even", "odd", "even"]  # each class's name beside its index


def test_file_names_one_rule():
    taken = set()
    names = [answers.file_name(name, taken) for name in
             ("photos/seven.png", "seven.JPG", "test[3]", "digits.npy[2]", "my digit é.png", "???")]
    assert names == ["seven.png", "seven-2.png", "test-3.png", "digits-2.png", "my-digit.png", "image.png"]


def test_an_image_too_large_is_its_own_error_type():
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))  # 400 megapixels claimed
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        prepare_image(png)
    with pytest.raises(ImageTooLargeError):
        prepare_pixels(np.zeros((8000, 8000), dtype=np.uint8))
