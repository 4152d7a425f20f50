"""Precision: fp32 by default, bf16 autocast on request, auto only where the CPU runs bf16 natively."""

import pytest
import torch

from cnn_mnist import Estimator, ModelParams, RunConfig, numpy_input_fn
from cnn_mnist.datasets import load_mnist
from cnn_mnist.errors import ConfigError
from cnn_mnist.precision import autocast, bf16_supported, resolve_precision


def test_auto_is_bf16_exactly_where_the_cpu_supports_it(monkeypatch):
    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")
    monkeypatch.setattr("cnn_mnist.precision.bf16_supported", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # asked for explicitly: honoured, with a warning
    assert resolve_precision("fp32") == "fp32"


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, auto"):
        RunConfig(precision="fp16")


def test_bf16_autocast_computes_in_bf16_and_fp32_does_not():
    layer = torch.nn.Linear(4, 2)
    with autocast("bf16"):
        assert layer(torch.rand(3, 4)).dtype == torch.bfloat16
    with autocast("fp32"):
        assert layer(torch.rand(3, 4)).dtype == torch.float32


def test_bf16_training_keeps_fp32_weights_and_learns(tiny_mnist_dir, model_dir):
    mnist = load_mnist(tiny_mnist_dir, download=False)
    estimator = Estimator(model_dir=model_dir, params=ModelParams(optimizer="adam"),
                          config=RunConfig(precision="bf16", save_checkpoints_steps=1000))
    estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=20, num_epochs=None),
                    steps=40)
    assert all(p.dtype == torch.float32 for p in estimator.network.parameters())
    results = estimator.evaluate(numpy_input_fn(mnist.test.images, mnist.test.labels, num_epochs=1, shuffle=False))
    assert results["accuracy"] >= 0.9
    prediction = next(estimator.predict(numpy_input_fn(mnist.test.images[:1], shuffle=False)))
    assert prediction["probabilities"].dtype.name == "float32"
