"""The evaluation loop: the metrics of every example once, whatever the batches, and clear refusals."""

import pytest
import torch
import torch.nn.functional as F

from cnn_mnist import cnn_model_fn, numpy_input_fn
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import ConfigError
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training.evaluation import measure

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def test_split(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False).test


@pytest.fixture(scope="module")
def network():
    return ConvNet(generator=torch.Generator().manual_seed(0))


def batches(split, batch_size):
    return numpy_input_fn(split.images, split.labels, batch_size=batch_size, num_epochs=1, shuffle=False)()


def test_the_metrics_are_those_of_every_example_once_whatever_the_batch_size(test_split, network):
    with torch.no_grad():
        network.eval()
        logits = network(test_split.images)
    expected_accuracy = (logits.argmax(1) == test_split.labels).double().mean().item()
    expected_loss = F.cross_entropy(logits, test_split.labels).item()
    for batch_size in (64, len(test_split.labels)):  # 300 = 4 full batches and one of 44, or one
        results = measure(cnn_model_fn, network, batches(test_split, batch_size), CPU, "fp32")
        assert set(results) == {"accuracy", "loss"}
        assert results["accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)
        assert results["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_images_without_labels_or_no_examples_are_refused(test_split, network):
    unlabelled = numpy_input_fn(test_split.images, batch_size=100, shuffle=False)()
    with pytest.raises(ConfigError, match="evaluate needs labels"):
        measure(cnn_model_fn, network, unlabelled, CPU, "fp32")
    with pytest.raises(ConfigError, match="evaluate got no examples"):
        measure(cnn_model_fn, network, [], CPU, "fp32")


def test_the_progress_bar_counts_every_image(test_split, network, caplog):
    caplog.set_level("INFO")
    measure(cnn_model_fn, network, batches(test_split, 100), CPU, "fp32", progress=True)
    assert f"{len(test_split.labels)}/{len(test_split.labels)}" in caplog.text
