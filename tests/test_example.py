"""examples/cnn_mnist.py, the tutorial line by line, computes what the package computes and runs."""

import importlib.util
from pathlib import Path

import pytest
import torch

from cnn_mnist import Mode, cnn_model_fn
from cnn_mnist.model.network import ConvNet

EXAMPLE = Path(__file__).parent.parent / "examples" / "cnn_mnist.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("tutorial_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", [Mode.EVAL, Mode.PREDICT])
def test_the_examples_model_function_is_the_packages(example, mode):
    network = ConvNet()
    images, labels = torch.rand(5, 784), torch.randint(0, 10, (5,))
    ours = example.cnn_model_fn(network, images, labels, mode)
    package = cnn_model_fn(network, images, labels, mode)
    torch.testing.assert_close(ours.predictions["probabilities"], package.predictions["probabilities"])
    if mode == Mode.EVAL:
        torch.testing.assert_close(ours.loss, package.loss)
        assert torch.equal(ours.eval_metrics["accuracy"], package.eval_metrics["accuracy"])


def test_the_example_trains_evaluates_and_prints(example, tiny_mnist_dir, no_verify, model_dir, capsys):
    results = example.main(steps=15, model_dir=model_dir, data_dir=tiny_mnist_dir)
    assert results["global_step"] == 15 and 0 <= results["accuracy"] <= 1
    assert "'global_step': 15" in capsys.readouterr().out
