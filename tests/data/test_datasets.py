"""MNIST splits as the tutorial's loader made them."""

import pytest
import torch
from conftest import TINY_TEST, TINY_TRAIN, make_digits, write_mnist_dir

from cnn_mnist.data import idx
from cnn_mnist.data.datasets import FILES, VALIDATION_SIZE, load_mnist
from cnn_mnist.errors import DataError


def test_validation_is_the_first_5000_training_images(tiny_mnist_dir):
    mnist = load_mnist(tiny_mnist_dir, download=False)
    images, labels = make_digits(TINY_TRAIN, seed=1)
    assert len(mnist.validation) == VALIDATION_SIZE == 5_000
    assert torch.equal(mnist.validation.images, torch.from_numpy(images[:VALIDATION_SIZE]))
    assert torch.equal(mnist.train.images, torch.from_numpy(images[VALIDATION_SIZE:]))
    assert torch.equal(mnist.train.labels, torch.from_numpy(labels[VALIDATION_SIZE:]).long())
    assert len(mnist.test) == TINY_TEST


def test_data_stays_uint8_with_integer_labels(tiny_mnist_dir):
    mnist = load_mnist(tiny_mnist_dir, download=False)
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.images.shape[1:] == (28, 28)
    assert mnist.train.labels.dtype == torch.int64


def test_train_on_all_keeps_every_training_image(tiny_mnist_dir):
    mnist = load_mnist(tiny_mnist_dir, download=False, train_on_all=True)
    assert len(mnist.train) == TINY_TRAIN and len(mnist.validation) == VALIDATION_SIZE


def test_split_by_name(tiny_mnist_dir):
    mnist = load_mnist(tiny_mnist_dir, download=False)
    assert mnist.split("validation") is mnist.validation
    with pytest.raises(DataError, match="unknown split"):
        mnist.split("dev")


def test_images_and_labels_that_disagree_are_an_error(tmp_path):
    directory = write_mnist_dir(tmp_path, train=5_100, test=10)
    idx.write_labels(directory / FILES["test"][1], make_digits(9, 2)[1])
    with pytest.raises(DataError, match="holds 10 images but t10k-labels-idx1-ubyte holds 9 labels"):
        load_mnist(directory, download=False)


def test_truncated_file_names_the_file(tmp_path):
    directory = write_mnist_dir(tmp_path, train=5_100, test=10)
    path = directory / FILES["test"][0]
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: byte length"):
        load_mnist(directory, download=False)
