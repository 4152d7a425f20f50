"""The preparation's torch steps: Pillow's resampling reproduced, and one graph for every runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_mnist.data import preparation


def pillow_resize(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    shrink = rows < array.shape[0] or cols < array.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array, "F").resize((cols, rows), resample))


# (41, 20) and (280, 48) put box edges exactly on pixel centres, where rounding decides.
@pytest.mark.parametrize(("size", "new"), [(41, 20), (35, 17), (280, 48), (48, 280), (7, 20), (100, 20)])
def test_whole_axis_weights_are_pillows(size, new):
    array = np.random.default_rng(size).random((size, size), dtype=np.float32)
    weights = preparation._resize_matrix(size, new)
    ours = (weights @ torch.from_numpy(array) @ weights.T).numpy()
    assert np.abs(ours - pillow_resize(array, new, new)).max() < 2e-6


@pytest.mark.parametrize(("start", "count", "new"), [(60, 140, 20), (5, 41, 20), (30, 9, 20), (12, 3, 1)])
def test_crop_and_scale_weights_are_pillows_on_the_crop(start, count, new):
    array = np.random.default_rng(count).random((120, 200), dtype=np.float32).T.copy()  # (200, 120)
    crop = array[start:start + count, :]
    along = preparation._pillow_weights(200, torch.tensor(float(start), dtype=torch.float64),
                                        torch.tensor(float(count), dtype=torch.float64),
                                        torch.tensor(float(new), dtype=torch.float64), torch.tensor(new < count),
                                        outputs=preparation.IMAGE_SIZE)
    ours = (along @ torch.from_numpy(array)).numpy()
    expected = pillow_resize(crop, new, crop.shape[1])
    assert np.abs(ours[:new] - expected).max() < 2e-6
    assert not ours[new:].any()  # rows past the digit stay empty


def test_the_traced_graph_computes_what_python_does():
    """The same steps exported to ONNX (as the web site's model holds them) give the same field."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    class Prepare(torch.nn.Module):
        def forward(self, grey):
            prepared = preparation.prepare(grey)
            return prepared.pixels, prepared.no_digit

    grey = np.full((96, 80), 0.9, dtype=np.float32)
    grey[20:76, 36:44] = 0.1  # a "1"
    grey[20:28, 28:44] = 0.1
    preparation.paper_matrices(96, 80)
    program = torch.onnx.export(Prepare().eval(), (torch.from_numpy(grey),), None, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    for image in (grey, np.flipud(grey).copy(), np.full_like(grey, 0.9)):
        pixels, no_digit = session.run(None, {session.get_inputs()[0].name: image})
        with torch.inference_mode():
            expected = preparation.prepare(torch.from_numpy(image))
        assert np.array_equal(pixels, expected.pixels.numpy()) and bool(no_digit) == bool(expected.no_digit)
