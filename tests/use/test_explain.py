"""Explanations: each stage is the network's own output for the digit (checked against the layers
computed by hand, and after quantisation to the tile format), and the integrated-gradients
attribution adds up to the logit difference from a blank image."""

import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnn_mnist import load_mnist
from cnn_mnist.use.explain import ATTRIBUTION_TOLERANCE, explain, quantize, to_json
from cnn_mnist.use.predictor import Predictor

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def predictor(small_model):
    return Predictor(small_model)


@pytest.fixture(scope="module")
def digit(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False).test.images[3].numpy()


def by_hand(network, image: np.ndarray) -> dict[str, np.ndarray]:
    """The tutorial's layers written out with torch.nn.functional and the network's weights."""
    x = torch.from_numpy(image.astype(np.float32) / 255).reshape(1, 1, 28, 28)
    with torch.no_grad():
        conv1 = torch.relu(F.conv2d(x, network.conv1.weight.contiguous(), network.conv1.bias, padding=2))
        pool1 = F.max_pool2d(conv1, 2)
        conv2 = torch.relu(F.conv2d(pool1, network.conv2.weight.contiguous(), network.conv2.bias, padding=2))
        pool2 = F.max_pool2d(conv2, 2)
        dense = torch.relu(pool2.permute(0, 2, 3, 1).reshape(1, -1) @ network.dense.weight.T + network.dense.bias)
        logits = dense @ network.logits.weight.T + network.logits.bias
    return {"conv1": conv1[0], "pool1": pool1[0], "conv2": conv2[0], "pool2": pool2[0], "dense": dense[0],
            "logits": logits[0]}


def test_every_stage_is_what_the_layers_compute(predictor, digit):
    explanation = explain(predictor, digit)
    expected = by_hand(predictor.network, digit)
    assert [s.name for s in explanation.stages] == ["conv1", "pool1", "conv2", "pool2", "dense"]
    assert [s.maps.shape for s in explanation.stages] == [(32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7),
                                                          (1024,)]
    for stage in explanation.stages:
        np.testing.assert_allclose(stage.maps, expected[stage.name].numpy(), rtol=1e-4, atol=1e-4, err_msg=stage.name)
    np.testing.assert_allclose(explanation.logits, expected["logits"].numpy(), rtol=1e-4, atol=1e-4)
    assert explanation.predicted == int(np.argmax(explanation.logits))
    assert explanation.runner_up == int(np.argsort(-explanation.logits)[1])
    np.testing.assert_allclose(explanation.probabilities, predictor.predict(digit).probabilities[0], atol=1e-6)


def test_the_tiles_hold_the_stages_quantised_to_their_range(predictor, digit):
    answer = to_json(explain(predictor, digit))
    expected = by_hand(predictor.network, digit)
    for stage in answer.stages:
        assert stage.tile.startswith("data:image/png;base64,")
        sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(stage.tile.split(",", 1)[1]))))
        maps = expected[stage.name].numpy()
        if maps.ndim == 1:
            maps = maps.reshape(1, 16, 64)
        count, height, width = maps.shape
        columns = stage.columns
        assert sheet.shape == (-(-count // columns) * height, columns * width)
        assert stage.min == pytest.approx(maps.min(), abs=1e-4)
        assert stage.max == pytest.approx(maps.max(), rel=1e-4)
        tiles = np.stack([sheet[(i // columns) * height:(i // columns + 1) * height,
                                (i % columns) * width:(i % columns + 1) * width] for i in range(count)])
        difference = np.abs(tiles.astype(int) - quantize(maps, stage.min, stage.max).astype(int))
        assert difference.max() <= 1, stage.name  # the last level of rounding, no more
    dense = next(s for s in answer.stages if s.name == "dense")
    assert dense.top_units[0] == int(np.argmax(expected["dense"].numpy()))
    assert all(s.top_units is None for s in answer.stages if s.name != "dense")


def test_the_json_shape_holds_the_explanation(predictor, digit):
    explanation = explain(predictor, digit)
    answer = to_json(explanation, "test[3]")
    assert (answer.input, answer.no_digit, answer.class_, answer.runner_up) == (
        "test[3]", False, explanation.predicted, explanation.runner_up)
    np.testing.assert_array_equal(answer.prepared, digit)  # uint8 in, the same uint8 out
    np.testing.assert_allclose(answer.probabilities, explanation.probabilities, atol=5e-7)
    np.testing.assert_allclose(answer.attribution.values, explanation.attribution, atol=5e-7)
    assert answer.attribution.logit_difference == pytest.approx(explanation.logit_difference, abs=1e-6)
    assert np.shape(answer.filters.values) == (32, 5, 5)
    assert answer.filters.max_abs == pytest.approx(np.abs(explanation.filters).max(), abs=1e-5)


def test_the_attribution_adds_up_to_the_logit_difference_from_a_blank_image(predictor, digit):
    explanation = explain(predictor, digit)
    blank = by_hand(predictor.network, np.zeros((28, 28), dtype=np.uint8))["logits"]
    towards, against = explanation.predicted, explanation.runner_up
    explained = explanation.logit_difference - float(blank[towards] - blank[against])
    total = float(explanation.attribution.sum())
    assert abs(total - explained) <= ATTRIBUTION_TOLERANCE * max(1.0, abs(explained)), (total, explained)
    assert abs(explanation.attribution_delta) <= ATTRIBUTION_TOLERANCE * max(1.0, abs(explained))
    assert explanation.attribution.shape == (28, 28)
    assert np.abs(explanation.attribution[digit == 0]).max() == 0  # a blank pixel moves nothing from a blank image


def test_a_digit_of_another_shape_is_refused(predictor):
    with pytest.raises(ValueError, match="one 28x28 digit"):
        explain(predictor, np.zeros((2, 28, 28), dtype=np.uint8))


def test_in_a_notebook_an_explanation_is_its_figure(predictor, digit):
    explanation = explain(predictor, digit)
    png = explanation._repr_png_()
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size[0] > 500
    assert repr(explanation).startswith(f"Explanation(read as {explanation.predicted} with probability ")
