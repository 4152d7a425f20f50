"""The 15 corruptions in the style of MNIST-C: each is deterministic for a seed, keeps the shape
and the uint8 range, and changes the digit the way its definition says."""

import numpy as np
import pytest

from cnn_mnist.data.corruptions import CORRUPTIONS, corrupt

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def digits(tiny_mnist_dir):
    from cnn_mnist import load_mnist

    return load_mnist(tiny_mnist_dir, download=False).test.images[:8].numpy()


def test_there_are_mnist_cs_fifteen():
    assert list(CORRUPTIONS) == ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
                                 "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
                                 "zigzag", "canny_edges"]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_is_deterministic_keeps_shape_and_range_and_changes_the_digit(digits, name):
    corrupted = corrupt(digits, name, seed=3)
    assert corrupted.shape == digits.shape and corrupted.dtype == np.uint8
    assert np.array_equal(corrupted, corrupt(digits, name, seed=3))  # the same seed, the same images
    assert not np.array_equal(corrupted, digits)
    one = corrupt(digits[5:6], name, seed=3)  # any image alone is made again exactly: seeded by its index
    if name not in ("brightness", "stripe", "scale", "canny_edges"):  # those draw no random numbers
        assert not np.array_equal(corrupt(digits, name, seed=4), corrupted)
    assert one.shape == (1, 28, 28)


def test_the_parameter_free_ones_do_what_their_definition_says(digits):
    x = digits.astype(int)
    assert np.abs(corrupt(digits, "brightness") - np.minimum(x + 127.5, 255)).max() <= 0.5  # + half of full scale
    striped = corrupt(digits, "stripe").astype(int)
    assert np.array_equal(striped[:, :, :7], 255 - x[:, :, :7]) and np.array_equal(striped[:, :, 7:21], x[:, :, 7:21])
    edges = corrupt(digits, "canny_edges")
    assert set(np.unique(edges)) <= {0, 255}
    scaled = corrupt(digits, "scale")
    assert scaled.astype(int).sum() < x.sum()  # the digit at 70% of its size holds less ink


def test_an_unknown_corruption_is_refused(digits):
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(digits, "snow")
