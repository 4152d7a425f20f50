"""Precision: fp32 by default; bf16 or fp16 autocast on request; auto picks bf16 where the CPU or GPU runs
it natively and fp16 (with a gradient scaler, checkpointed) on GPUs without bf16."""

import pytest
import torch

from cnn_mnist import Estimator, ModelParams, RunConfig, numpy_input_fn
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.precision import autocast, bf16_supported, gradient_scaler, resolve_precision


def test_auto_is_bf16_exactly_where_the_cpu_supports_it(monkeypatch):
    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")
    monkeypatch.setattr("cnn_mnist.kernels.precision.bf16_supported", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # asked for explicitly: honoured, with a warning
    assert resolve_precision("fp32") == "fp32"


def test_auto_on_a_gpu_is_bf16_where_it_has_bf16_tensor_cores_else_fp16(monkeypatch):
    gpu = torch.device("cuda", 0)  # resolve_precision asks the GPU one question, answered here
    monkeypatch.setattr("cnn_mnist.kernels.precision.cuda_bf16_fast", lambda device: True)  # an A100, H100
    assert resolve_precision("auto", gpu) == "bf16"
    monkeypatch.setattr("cnn_mnist.kernels.precision.cuda_bf16_fast", lambda device: False)  # a T4, V100
    assert resolve_precision("auto", gpu) == "fp16"
    assert resolve_precision("fp32", gpu) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"  # untested there: nothing lower unasked


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, auto"):
        RunConfig(precision="fp8")


def test_only_fp16_gets_a_gradient_scaler():
    assert gradient_scaler("fp16", torch.device("cpu")) is not None
    assert gradient_scaler("bf16", torch.device("cpu")) is None
    assert gradient_scaler("fp32", torch.device("cpu")) is None


def test_bf16_autocast_computes_in_bf16_and_fp32_does_not():
    layer = torch.nn.Linear(4, 2)
    with autocast("bf16"):
        assert layer(torch.rand(3, 4)).dtype == torch.bfloat16
    with autocast("fp32"):
        assert layer(torch.rand(3, 4)).dtype == torch.float32
    with autocast("fp16"):
        assert layer(torch.rand(3, 4)).dtype == torch.float16


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


def test_fp16_training_scales_the_loss_checkpoints_the_scaler_and_resumes_exactly(tiny_mnist_dir, tmp_path):
    """fp16 runs the GPU's T4 path on the CPU (emulated): the scaler's state goes into every
    checkpoint, and a run stopped and resumed ends with the uninterrupted run's weights."""
    mnist = load_mnist(tiny_mnist_dir, download=False)

    def estimator(name):
        return Estimator(model_dir=tmp_path / name, params=ModelParams(optimizer="adam"),
                         config=RunConfig(precision="fp16", save_checkpoints_steps=1000, device="cpu"))

    def input_fn():
        return numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=20, num_epochs=None)()

    whole = estimator("whole").train(input_fn, max_steps=12)
    assert whole.scaler is not None and whole.scaler.get_scale() > 0
    estimator("parts").train(input_fn, max_steps=5)
    resumed = estimator("parts")
    resumed.train(input_fn, max_steps=12)
    saved = torch.load(tmp_path / "parts" / "model.ckpt-5.pt", weights_only=True)
    assert saved["scaler"]["_growth_tracker"] == 5  # steps since the scale last changed: a restart would count 7
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()
    for ours, theirs in zip(resumed.network.state_dict().values(), whole.network.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    assert all(p.dtype == torch.float32 for p in resumed.network.parameters())
