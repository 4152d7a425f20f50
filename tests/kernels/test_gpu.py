"""On a GPU: everything resident on the device, no host sync in a plain training step, bf16 or fp16
chosen by the chip, deterministic runs and exact resume under --deterministic, and checkpoints that
move between the GPU and the CPU. Skipped without CUDA (CNN_MNIST_GPU_TEST_DEVICE=cpu runs the
device-neutral ones on the CPU, to check the tests themselves)."""

import logging

import numpy as np
import pytest
import torch
from conftest import gpu_test_device

from cnn_mnist import Estimator, ModelParams, RunConfig, load_mnist, numpy_input_fn
from cnn_mnist.data.augment import Augmentation
from cnn_mnist.kernels import devices
from cnn_mnist.training import checkpoints
from cnn_mnist.training.hooks import Hook
from cnn_mnist.use.predictor import Predictor

pytestmark = pytest.mark.gpu
DEVICE = gpu_test_device()
cuda_only = pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="checks CUDA itself")
QUIET = {"log_step_count_steps": 10_000, "save_summary_steps": 10_000, "save_checkpoints_steps": 10_000}


@pytest.fixture(scope="module")
def mnist(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False)


def train_input(mnist, batch_size=50, augmentation=None):
    return numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=batch_size, num_epochs=None,
                          augmentation=augmentation)


AVERAGED_ADAM = ModelParams(optimizer="adam", ema_decay=0.9)


def estimator(model_dir, params=AVERAGED_ADAM, **run):
    return Estimator(model_dir=model_dir, params=params, config=RunConfig(**{"device": DEVICE, **QUIET, **run}))


class Inspect(Hook):
    """Records where the step's tensors live, and (on CUDA) turns any host sync into an error for
    the steps between ``first`` and ``last``, where no built-in hook fires."""

    def __init__(self, first=3, last=40):
        self.first, self.last, self.devices = first, last, set()

    def before_step(self, run):
        if run.global_step == self.first and run.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")

    def after_step(self, run):
        self.devices |= {run.images.device.type, run.labels.device.type, run.loss.device.type}
        if run.global_step == self.last and run.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def test_network_optimizer_average_and_data_live_on_the_device(mnist, tmp_path):
    # The eager step, steps 3-40; a replayed graph's steps are checked with the graph tests below
    # (the capture itself, once, at step 4, copies the learning rate to the device: a sync).
    trained = estimator(tmp_path / "m", cuda_graphs=False)
    hook = Inspect()
    try:
        trained.train(train_input(mnist, augmentation=Augmentation(rotation=10, shift=2)), max_steps=45, hooks=[hook])
    finally:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
    kind = torch.device(DEVICE).type
    assert hook.devices == {kind}
    assert {p.device.type for p in trained.network.parameters()} == {kind}
    assert {p.device.type for p in trained.average.network.parameters()} == {kind}
    assert {t.device.type for s in trained.optimizer.state.values() for t in s.values()} == {kind}
    saved = checkpoints.load_checkpoint(trained.latest_checkpoint())
    assert all(t.device.type == "cpu" for t in saved["network"].values())  # device-neutral on disk


@cuda_only
def test_the_first_line_names_the_gpu_and_the_precision_auto_picks(mnist, tmp_path, caplog):
    trained = estimator(tmp_path / "m", precision="auto")
    with caplog.at_level(logging.INFO, logger="cnn_mnist"):
        trained.train(train_input(mnist), steps=2)
    name = torch.cuda.get_device_name(trained.device)
    fast_bf16 = torch.cuda.get_device_capability(trained.device) >= (8, 0)
    expected = "bf16 autocast" if fast_bf16 else "fp16 autocast with a gradient scaler"
    assert caplog.records[0].getMessage() == f"Training on {trained.device} ({name}), {expected}"
    assert (trained.scaler is None) == fast_bf16


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_deterministic_runs_are_identical_and_resume_exactly(mnist, tmp_path, precision):
    if precision == "bf16" and DEVICE.startswith("cuda") and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("this GPU has no bf16 tensor cores")
    def run(name, stops):
        for stop in stops:  # each stop a new process would make: a fresh Estimator restoring the last checkpoint
            trained = estimator(tmp_path / name, precision=precision, deterministic=True)
            trained.train(train_input(mnist, augmentation=Augmentation(rotation=10, shift=2)), max_steps=stop)
        return {k: v.float().cpu() for k, v in trained.network.state_dict().items()}

    first, second, resumed = run("a", [30]), run("b", [30]), run("c", [12, 30])
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert torch.equal(first[key], resumed[key]), key


class StopAt(Hook):
    """Stops the run after step ``step`` (it saves a checkpoint there), as a kill would."""

    def __init__(self, step):
        self.step = step

    def after_step(self, run):
        if run.global_step == self.step:
            run.request_stop()


SCHEDULED_ADAM = ModelParams(optimizer="adam", ema_decay=0.9, lr_schedule="one_cycle", warmup_fraction=0.2)


@cuda_only
@pytest.mark.parametrize("params", [ModelParams(), SCHEDULED_ADAM], ids=["tutorial-sgd", "adam-ema-one-cycle"])
def test_a_graphed_step_trains_the_weights_the_eager_step_does(mnist, tmp_path, params):
    def run(name, graphs, stop_at=None):
        for stop in ([stop_at] if stop_at else []) + [30]:
            trained = estimator(tmp_path / name, params=params, precision="fp32", deterministic=True,
                                cuda_graphs=graphs)
            hooks = [Inspect(first=6, last=stop), StopAt(stop)]  # past the capture (step 4): no sync
            try:
                trained.train(train_input(mnist), max_steps=30, hooks=hooks)  # one schedule, to step 30
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return trained, {k: v.float().cpu() for k, v in trained.network.state_dict().items()}

    _, eager = run("eager", False)
    graphed_estimator, graphed = run("graphed", True)
    _, resumed = run("resumed", True, stop_at=12)  # 3 eager steps again after the resume, then a new capture
    for key in eager:
        torch.testing.assert_close(graphed[key], eager[key], rtol=0, atol=1e-6, msg=key)
        assert torch.equal(graphed[key], resumed[key]), key
    # the checkpoint holds what an eager run on any device restores
    saved = checkpoints.load_checkpoint(graphed_estimator.latest_checkpoint())
    assert all(isinstance(g["lr"], float) and not g.get("capturable") for g in saved["optimizer"]["param_groups"])


@cuda_only
def test_only_the_packages_model_function_is_graphed(tmp_path):
    from cnn_mnist import cnn_model_fn

    def own_model_fn(network, images, labels, mode):  # a user's: may read the host, so eager
        return cnn_model_fn(network, images, labels, mode)

    ours = estimator(tmp_path / "a", params=ModelParams(), cuda_graphs=True)
    theirs = Estimator(model_fn=own_model_fn, model_dir=tmp_path / "b", params=ModelParams(),
                       config=RunConfig(device=DEVICE, cuda_graphs=True, **QUIET))
    assert ours._step_function() != ours._train_step
    assert theirs._step_function() == theirs._train_step


@cuda_only
def test_a_graphed_run_with_a_short_last_batch_takes_every_step(mnist, tmp_path):
    images, labels = mnist.train.images[:130], mnist.train.labels[:130]  # 4 epochs: ten batches of 50, one of 20
    trained = estimator(tmp_path / "m", params=ModelParams(), cuda_graphs=True)
    trained.train(numpy_input_fn(images, labels, batch_size=50, num_epochs=4, shuffle=False), max_steps=100)
    assert trained.global_step == 11  # the last one, of another shape than the captured, ran eagerly
    results = trained.evaluate(numpy_input_fn(mnist.test.images, mnist.test.labels, num_epochs=1, shuffle=False))
    assert np.isfinite(results["loss"])


def test_a_gpu_checkpoint_serves_predicts_and_resumes_on_the_cpu(mnist, tmp_path):
    trained = estimator(tmp_path / "m", params=ModelParams(optimizer="adam"))
    trained.train(train_input(mnist), max_steps=30)
    images = mnist.test.images[:200]
    here = Predictor(tmp_path / "m", device=DEVICE).predict(images)
    on_cpu = Predictor(tmp_path / "m", device="cpu").predict(images)
    np.testing.assert_allclose(here.probabilities, on_cpu.probabilities, atol=1e-4)
    assert (here.classes == on_cpu.classes).mean() >= 0.99
    results = Estimator(model_dir=tmp_path / "m", config=RunConfig(device="cpu")).evaluate(
        numpy_input_fn(mnist.test.images, mnist.test.labels, num_epochs=1, shuffle=False))
    assert results["global_step"] == 30
    resumed = Estimator(model_dir=tmp_path / "m", params=ModelParams(optimizer="adam"),
                        config=RunConfig(device="cpu", **QUIET))
    resumed.train(train_input(mnist), max_steps=40)
    assert resumed.global_step == 40 and resumed.device.type == "cpu"


def test_onnx_export_of_a_gpu_trained_model_passes_its_parity_check(mnist, tmp_path, no_verify, tiny_mnist_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from cnn_mnist.use.export import export_model

    estimator(tmp_path / "m").train(train_input(mnist), max_steps=20)
    result = export_model(tmp_path / "m", "onnx", tmp_path / "model.onnx", data_dir=tiny_mnist_dir, device=DEVICE)
    assert result.parity.max_abs_diff <= 1e-4 and (tmp_path / "model.onnx").stat().st_size > 13_000_000


def test_the_service_answers_from_the_device(mnist, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cnn_mnist.use.service import create_app

    estimator(tmp_path / "m").train(train_input(mnist), max_steps=20)
    app = create_app(tmp_path / "m", device=DEVICE)
    with TestClient(app) as client:
        response = client.post("/v1/predict", json={"pixels": mnist.test.images[0].tolist()})
    assert response.status_code == 200, response.text
    expected = Predictor(tmp_path / "m", device="cpu").predict(mnist.test.images[:1])
    assert response.json()["predictions"][0]["class"] == int(expected.classes[0])


@cuda_only
def test_evaluation_runs_in_batches_of_ten_thousand_on_the_gpu():
    assert devices.inference_batch_size(devices.resolve_device(DEVICE)) == 10_000
