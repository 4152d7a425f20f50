"""Device selection: auto picks CUDA, then MPS, then the CPU; a device the machine lacks is a one-line
error naming what there is; training's process-wide settings are restored afterwards."""

import logging
import os
import threading

import pytest
import torch
from helpers import one_line_error, tf32_allowed, tf32_flags

from cnn_mnist import Estimator, RunConfig
from cnn_mnist.cli import main
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels import devices

requires_no_gpu = pytest.mark.skipif(torch.cuda.is_available() or devices._mps_available(),
                                     reason="this machine has a GPU: auto resolves to it")


@requires_no_gpu
def test_auto_is_the_cpu_on_a_machine_without_a_gpu():
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.available() == ["cpu"]


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    # set before anything runs on the GPU: torch reads it once, and --deterministic needs it
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\) \(there is: cpu, "
                                          r"cuda:0, cuda:1, mps\)"):
        devices.resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("mps")


@requires_no_gpu
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_a_device_that_is_not_there_is_a_one_line_error_saying_what_is(name):
    with pytest.raises(ConfigError) as error:
        devices.resolve_device(name)
    message = str(error.value)
    assert message.startswith(f"--device {name}: ") and "(there is: cpu)" in message and "\n" not in message
    if name.startswith("cuda") and torch.version.cuda is None:
        assert "CPU-only build" in message and "https://pytorch.org/get-started/locally/" in message


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "", "cuda:0 "])
def test_a_malformed_device_name_is_refused(name):
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        RunConfig(device=name)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "report", "export", "serve"])
def test_every_command_takes_device_and_refuses_a_malformed_one(command, capsys):
    extra = ["0"] if command == "predict" else []
    with pytest.raises(SystemExit) as exit_:
        main([command, "--device", "gpu", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err  # train's --device is RunConfig.device's flag, checked by RunConfig
    assert err.startswith(f"cnn-mnist: error: {command}: argument --device: ")
    assert "must be auto, cpu, cuda, cuda:N or mps, got 'gpu'" in err


@requires_no_gpu
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "report"])
def test_an_absent_device_is_one_line_on_stderr_before_any_work(command, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    extra = ["0"] if command == "predict" else []
    err = one_line_error(capsys, [command, "--device", "cuda", "--model-dir", str(tmp_path / "model"), *extra],
                         "--device cuda: ")
    assert err.startswith("cnn-mnist: error: --device cuda: ")


@requires_no_gpu
def test_train_refuses_an_absent_device_before_loading_mnist(tmp_path, capsys):
    missing_data = tmp_path / "no-data-here"
    assert main(["train", "--device", "cuda", "--model-dir", str(tmp_path / "m"), "--data-dir", str(missing_data)]) == 1
    assert capsys.readouterr().err.startswith("cnn-mnist: error: --device cuda: ")
    assert not missing_data.exists()


def test_the_first_training_line_says_where_and_in_what_precision(tiny_mnist_dir, tmp_path, caplog):
    from cnn_mnist import load_mnist, numpy_input_fn

    mnist = load_mnist(tiny_mnist_dir, download=False)
    estimator = Estimator(model_dir=tmp_path / "m", config=RunConfig(device="cpu", precision="bf16"))
    # What building it said is not training's: a CPU without native bf16 warns there that bf16 is emulated.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnn_mnist"):
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=10, num_epochs=None),
                        steps=1)
    first = caplog.records[0].getMessage()
    assert first == f"Training on cpu ({devices.cpu_name()}, {torch.get_num_threads()} threads), bf16 autocast"


def test_training_settings_are_restored_afterwards():
    before = torch.are_deterministic_algorithms_enabled()
    with devices.training_settings(torch.device("cpu"), deterministic=True):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_fp32_turns_tf32_off_while_held_and_then_puts_the_users_flags_back():
    with tf32_allowed() as users:
        with devices.precision_settings("bf16"):
            assert tf32_flags() == users  # autocast decides there
        with devices.precision_settings("fp32"):
            exact = tf32_flags()
            assert exact != users and set(exact.values()) <= {"ieee", False}
            with devices.precision_settings("fp32"):  # evaluate inside a training run
                assert tf32_flags() == exact
            assert tf32_flags() == exact
        assert tf32_flags() == users


def test_threads_sharing_the_settings_compute_exact_until_the_last_is_done():
    """The service's threads share one Predictor: one finishing must not turn TF32 back on under another."""
    first_in, first_out = threading.Event(), threading.Event()
    seen = {}

    def first():
        with devices.precision_settings("fp32"):
            first_in.set()
            first_out.wait(10)

    with tf32_allowed() as users:
        thread = threading.Thread(target=first)
        thread.start()
        first_in.wait(10)
        with devices.precision_settings("fp32"):
            exact = tf32_flags()
            first_out.set()
            thread.join(10)
            seen["after the first left"] = tf32_flags()
        assert seen["after the first left"] == exact != users
        assert tf32_flags() == users


def test_a_deterministic_cpu_run_gives_the_same_weights_as_a_plain_one(tiny_mnist_dir, tmp_path):
    """On the CPU every op this network uses is deterministic already: the flag changes no weight."""
    from cnn_mnist import ModelParams, load_mnist, numpy_input_fn

    mnist = load_mnist(tiny_mnist_dir, download=False)
    weights = []
    for deterministic in (False, True):
        estimator = Estimator(model_dir=tmp_path / str(deterministic), params=ModelParams(optimizer="adam"),
                              config=RunConfig(device="cpu", deterministic=deterministic))
        estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=10, num_epochs=None,
                                       augmentation=None), steps=5)
        weights.append(estimator.network.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_cpu_has_no_stream_of_its_own_to_save_and_no_graphs():
    """On the CPU, dropout draws from torch's global stream, which the Estimator saves itself; the
    CUDA side of both (a GPU's stream saved and put back, the step captured) runs in test_gpu.py."""
    from cnn_mnist.kernels.cuda_graphs import can_capture_on

    cpu = torch.device("cpu")
    before = torch.get_rng_state()
    assert devices.rng_state(cpu) == {}
    devices.restore_rng_state(cpu, {}, seed=123)  # nothing to restore, and the global stream untouched
    assert torch.equal(torch.get_rng_state(), before) and not can_capture_on(cpu)
