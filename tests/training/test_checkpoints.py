"""Checkpoints: the live objects mapped to their keys and back, atomic writes, retention, and loud
refusal of anything that is not ours."""

import contextlib
import dataclasses
import logging
import os
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_mnist import ModelParams, files, numpy_input_fn
from cnn_mnist.errors import CheckpointError, NanLossError
from cnn_mnist.model.model_fn import build_optimizer
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training import checkpoints
from cnn_mnist.training.averaging import WeightAverage

CPU = torch.device("cpu")
ADAM = ModelParams(optimizer="adam", learning_rate=0.002, ema_decay=0.9)


def state(step, network=None):
    return {"global_step": step, "network": (network or ConvNet()).state_dict()}


def test_save_and_load_round_trip(tmp_path):
    network = ConvNet()
    path = checkpoints.save_checkpoint(tmp_path, state(7, network), keep_checkpoint_max=5)
    assert path.name == "model.ckpt-7.pt"
    loaded = checkpoints.load_checkpoint(path)
    assert loaded["global_step"] == 7 and loaded["format"] == checkpoints.FORMAT
    other = ConvNet()
    checkpoints.restore_network(other, loaded, path)
    assert torch.equal(other.dense.weight, network.dense.weight)


def test_a_training_state_saves_and_reads_back_whole_and_names_the_weights_inference_uses(tmp_path):
    network, average = ConvNet(), ConvNet(generator=torch.Generator().manual_seed(1))
    saved = checkpoints.TrainingState(global_step=3, network=network.state_dict(), rng={"torch": torch.get_rng_state()},
                                      params={"optimizer": "sgd"}, training_seconds=1.5, input={"position": 300})
    path = saved.save(tmp_path, keep_checkpoint_max=5)
    plain = checkpoints.read_state(path)
    assert (plain.path, plain.global_step, plain.training_seconds, plain.input) == (path, 3, 1.5, {"position": 300})
    assert plain.averaged_network is None and plain.optimizer is None and plain.inference_key == "network"
    assert set(checkpoints.load_checkpoint(path)) == {"global_step", "network", "rng", "params", "training_seconds",
                                                      "input", "format"}  # what is unset is not written

    averaged = checkpoints.TrainingState(global_step=4, network=network.state_dict(),
                                         averaged_network=average.state_dict())
    averaged.save(tmp_path, keep_checkpoint_max=5)
    newest = checkpoints.newest_state(tmp_path)
    assert newest.global_step == 4 and newest.uses_weight_average and newest.training_seconds is None
    into = ConvNet()
    newest.restore(into, key=newest.inference_key)
    assert torch.equal(into.dense.weight, average.dense.weight)
    assert checkpoints.newest_state(tmp_path / "empty") is None


@dataclasses.dataclass
class Run:
    """A run's live objects, as the Estimator holds them, and its input stream."""

    network: torch.nn.Module
    average: WeightAverage | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    stream: object

    @classmethod
    def fresh(cls, params=ADAM, seed=0, scaler=True):
        network = ConvNet(generator=torch.Generator().manual_seed(seed))
        images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        return cls(network, WeightAverage(network, params.ema_decay) if params.ema_decay else None,
                   build_optimizer(network.parameters(), params), torch.amp.GradScaler("cpu") if scaler else None,
                   numpy_input_fn(images, torch.arange(40) % 10, batch_size=8, num_epochs=None)())

    def step(self):
        """One training step on the next batch (dropout drawing from the global stream), through
        the gradient scaler, then the average: what the Estimator's step does with them."""
        images, labels = next(self.stream)
        loss = torch.nn.functional.cross_entropy(self.network.train()(images.float().div(255)), labels)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.average.update()

    def capture(self, step=3, params=ADAM):
        return checkpoints.capture(step, self.network, self.average, self.optimizer, self.scaler, params, CPU,
                                   training_seconds=2.5, stream=self.stream)


def assert_same_state(ours, theirs):
    assert type(ours) is type(theirs)
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert_same_state(ours[key], theirs[key])
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            assert_same_state(mine, other)
    elif isinstance(ours, torch.Tensor):
        assert torch.equal(ours, theirs)
    else:
        assert ours == theirs


def test_capture_saves_each_live_object_under_its_key(tmp_path):
    run = Run.fresh()
    for _ in range(2):
        run.step()
    state = run.capture()
    assert_same_state(state.network, run.network.state_dict())
    assert_same_state(state.averaged_network, run.average.network.state_dict())
    assert_same_state(state.optimizer, run.optimizer.state_dict())
    assert_same_state(state.scaler, run.scaler.state_dict())
    assert_same_state(state.rng, {"torch": torch.get_rng_state()})  # the CPU has no stream of its own
    assert (state.global_step, state.params, state.training_seconds) == (3, dataclasses.asdict(ADAM), 2.5)
    assert state.input == run.stream.state_dict()
    saved = checkpoints.load_checkpoint(state.save(tmp_path, keep_checkpoint_max=5))
    assert set(saved) == {"format", "global_step", "network", "averaged_network", "optimizer", "scaler", "rng",
                          "params", "training_seconds", "input"}  # the layout every checkpoint has had


def test_a_captured_state_restores_into_a_fresh_run_whole(tmp_path):
    trained = Run.fresh()
    for _ in range(3):
        trained.step()
    path = trained.capture().save(tmp_path, keep_checkpoint_max=5)
    rng_then = torch.get_rng_state()
    torch.manual_seed(99)
    resumed = Run.fresh(seed=1)
    saved = checkpoints.read_state(path)
    saved.restore_training(resumed.network, resumed.average, resumed.optimizer, resumed.scaler,
                           dataclasses.replace(ADAM, learning_rate=0.01), CPU, stream_seed=5)
    saved.restore_input(resumed.stream)
    assert_same_state(resumed.network.state_dict(), trained.network.state_dict())
    assert_same_state(resumed.average.state_dict(), trained.average.state_dict())
    assert_same_state(resumed.optimizer.state_dict()["state"], trained.optimizer.state_dict()["state"])
    assert resumed.optimizer.param_groups[0]["lr"] == 0.01  # this run's learning rate, not the saved one
    assert_same_state(resumed.scaler.state_dict(), trained.scaler.state_dict())
    assert torch.equal(torch.get_rng_state(), rng_then)
    trained.optimizer.param_groups[0]["lr"] = 0.01
    trained.step()
    torch.set_rng_state(rng_then)
    resumed.step()  # the same step: the same batch, dropout masks and update
    assert_same_state(resumed.network.state_dict(), trained.network.state_dict())
    assert_same_state(resumed.average.state_dict(), trained.average.state_dict())


def test_a_graphed_runs_optimizer_is_saved_as_an_eager_ones():
    run = Run.fresh()
    group = run.optimizer.param_groups[0]
    group["lr"], group["capturable"] = torch.tensor(0.002), True  # as a captured step has them, on the device
    saved = run.capture().optimizer["param_groups"][0]
    assert (saved["lr"], saved["capturable"]) == (pytest.approx(0.002), False)
    assert isinstance(saved["lr"], float) and isinstance(group["lr"], torch.Tensor)  # the live one untouched


@pytest.mark.parametrize("where", ["network", "average"])
def test_weights_that_are_not_finite_are_never_captured(where):
    run = Run.fresh()
    with torch.no_grad():
        (run.network if where == "network" else run.average.network).dense.bias[3] = float("nan")
    with pytest.raises(NanLossError, match="weights not finite at step 3"):
        run.capture()


def test_another_optimizer_or_an_average_the_checkpoint_lacks_start_fresh(tmp_path, caplog):
    plain = Run.fresh(params=dataclasses.replace(ADAM, ema_decay=0.0), scaler=False)
    plain.capture(params=dataclasses.replace(ADAM, ema_decay=0.0)).save(tmp_path, keep_checkpoint_max=5)
    momentum = dataclasses.replace(ADAM, optimizer="momentum")
    resumed = Run.fresh(params=momentum, seed=1)
    checkpoints.newest_state(tmp_path).restore_training(resumed.network, resumed.average, resumed.optimizer,
                                                         resumed.scaler, momentum, CPU, stream_seed=5)
    assert "model.ckpt-3.pt was trained with another optimizer; momentum starts with fresh state" in caplog.text
    assert resumed.optimizer.state_dict()["state"] == {}
    assert_same_state(resumed.average.state_dict(), plain.network.state_dict())  # started from the restored weights


def test_inference_restores_the_average_where_the_checkpoint_has_one(tmp_path):
    trained = Run.fresh()
    trained.step()
    trained.capture().save(tmp_path, keep_checkpoint_max=5)
    network = ConvNet()
    average = checkpoints.newest_state(tmp_path).restore_weights(network, None, decay=0.0)
    assert_same_state(network.state_dict(), trained.network.state_dict())
    assert_same_state(average.state_dict(), trained.average.state_dict())
    checkpoints.save_checkpoint(tmp_path, state(5), keep_checkpoint_max=5)
    assert checkpoints.newest_state(tmp_path).restore_weights(network, average, decay=0.0) is None


def test_the_predictors_network_holds_the_inference_weights(tmp_path):
    trained = Run.fresh()
    trained.step()
    path = trained.capture().save(tmp_path, keep_checkpoint_max=5)
    network, read = checkpoints.restore_for_inference(tmp_path)
    assert (read.path, read.global_step) == (path, 3)
    assert_same_state(network.state_dict(), trained.average.state_dict())
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    with pytest.raises(CheckpointError, match="no checkpoint in .*train first"):
        checkpoints.restore_for_inference(tmp_path / "empty")


def test_an_input_other_than_the_checkpoints_starts_its_order_anew(tmp_path, caplog):
    run = Run.fresh()
    next(run.stream)
    saved = run.capture()
    same = Run.fresh().stream
    saved.restore_input(same)
    assert same.state_dict() == run.stream.state_dict() and not caplog.records
    other = numpy_input_fn(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64),
                           batch_size=8, num_epochs=None)()
    with caplog.at_level(logging.WARNING):
        saved.restore_input(other)
    assert "the input differs from the checkpoint's (size or seed)" in caplog.text


def test_only_the_newest_are_kept_and_latest_is_the_highest_step(tmp_path):
    for step in (1, 5, 10, 100, 1000, 1001):
        checkpoints.save_checkpoint(tmp_path, {"global_step": step}, keep_checkpoint_max=3)
    assert [step for step, _ in checkpoints.list_checkpoints(tmp_path)] == [100, 1000, 1001]
    assert checkpoints.latest_checkpoint(tmp_path).name == "model.ckpt-1001.pt"
    assert checkpoints.latest_checkpoint(tmp_path / "missing") is None


def test_a_save_that_fails_midway_leaves_no_file_and_older_checkpoints_intact(tmp_path, monkeypatch):
    checkpoints.save_checkpoint(tmp_path, {"global_step": 1}, keep_checkpoint_max=5)

    def full_disk(obj, file):
        file.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint model\.ckpt-2\.pt .*No space left.*"
                                              r"earlier checkpoints are intact"):
        checkpoints.save_checkpoint(tmp_path, {"global_step": 2}, keep_checkpoint_max=5)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt-1.pt"]
    assert checkpoints.load_checkpoint(tmp_path / "model.ckpt-1.pt")["global_step"] == 1


def test_no_permission_is_a_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    checkpoints.save_checkpoint(tmp_path, {"global_step": 1}, keep_checkpoint_max=5)

    def read_only_directory(**kwargs):  # what mkstemp meets in a directory it may not write (as non-root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only_directory)
    with pytest.raises(CheckpointError, match="could not write checkpoint model.ckpt-2.pt .*Permission denied"):
        checkpoints.save_checkpoint(tmp_path, {"global_step": 2}, keep_checkpoint_max=5)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt-1.pt"]
    assert checkpoints.load_checkpoint(tmp_path / "model.ckpt-1.pt")["global_step"] == 1


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".model.ckpt-abc.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.txt").write_text("keep me")
    checkpoints.remove_stale_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path, state(3), keep_checkpoint_max=5)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.ckpt-3\.pt: corrupt or unreadable checkpoint"):
        checkpoints.load_checkpoint(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    wide = torch.nn.Linear(784, 10)
    path = tmp_path / "model.ckpt-1.pt"
    torch.save({"format": checkpoints.FORMAT, "global_step": 1, "network": wide.state_dict()}, path)
    with pytest.raises(CheckpointError, match="model.ckpt-1.pt: checkpoint of another model"):
        checkpoints.restore_network(ConvNet(), checkpoints.load_checkpoint(path), path)


def test_same_keys_other_shapes_is_refused_with_the_shapes(tmp_path):
    network = ConvNet()
    saved = network.state_dict()
    saved["dense.weight"] = torch.zeros(512, 3136)
    with pytest.raises(CheckpointError, match=r"dense.weight: \(512, 3136\) saved, \(1024, 3136\) here"):
        checkpoints.restore_network(network, {"network": saved}, "x.pt")


def test_a_plain_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt-1.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a cnn-mnist checkpoint"):
        checkpoints.load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.ckpt-1.pt"
    path.write_bytes(pickle.dumps({"format": checkpoints.FORMAT, "global_step": _Exploit()}, protocol=2))
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        checkpoints.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_each_checkpoint_carries_a_checksum_of_its_contents(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path, state(3), keep_checkpoint_max=5)
    raw = torch.load(path, weights_only=True)
    assert raw["sha256"] == checkpoints.content_digest({k: v for k, v in raw.items() if k != "sha256"})
    assert "sha256" not in checkpoints.load_checkpoint(path)  # checked, then dropped
    raw["network"]["dense.bias"][0] += 1.0  # one changed number, written back with the old checksum
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"model\.ckpt-3\.pt: corrupt checkpoint \(its contents do not match"):
        checkpoints.load_checkpoint(path)


def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog):
    older = checkpoints.save_checkpoint(tmp_path, state(3), keep_checkpoint_max=5)
    newest = checkpoints.save_checkpoint(tmp_path, state(6), keep_checkpoint_max=5)
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy that stopped half-way
    path, loaded = checkpoints.load_newest_good(tmp_path)
    assert path == older and loaded["global_step"] == 3
    assert "model.ckpt-6.pt: corrupt or unreadable checkpoint" in caplog.text
    older.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint in"):
        checkpoints.load_newest_good(tmp_path)
    assert checkpoints.load_newest_good(tmp_path / "empty") is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_checkpoint_bytes_end_in_the_packages_error_or_a_valid_state(tmp_path, data):
    small = {"global_step": 4, "network": {"w": torch.arange(12.0)}}
    good = checkpoints.save_checkpoint(tmp_path, small, keep_checkpoint_max=5).read_bytes()
    damaged = bytearray(good[: data.draw(st.integers(0, len(good)))])
    for position in data.draw(st.lists(st.integers(0, max(len(damaged) - 1, 0)), max_size=4)):
        if damaged:
            damaged[position] ^= 0xFF
    path = tmp_path / "model.ckpt-9.pt"
    path.write_bytes(bytes(damaged))
    try:
        state = checkpoints.load_checkpoint(path)
    except CheckpointError:
        return
    assert state["global_step"] == 4 and torch.equal(state["network"]["w"], torch.arange(12.0))


@contextlib.contextmanager
def saved_as_if_on(location: str):
    """torch.save records each tensor's device; this makes it record ``location`` (e.g. cuda:0), so
    a CPU-only machine can write the file a GPU run would have written."""
    torch.serialization.register_package(-1, lambda storage: location, lambda storage, where: None)
    try:
        yield
    finally:
        del torch.serialization._package_registry[0]  # ours: the registry is kept sorted by priority


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_checkpoint_saved_from_a_gpu_loads_on_a_cpu_only_machine(tmp_path):
    network = ConvNet(generator=torch.Generator().manual_seed(0))
    path = tmp_path / "model.ckpt-3.pt"
    contents = {**state(3, network), "format": checkpoints.FORMAT}
    with saved_as_if_on("cuda:0"):
        torch.save({**contents, "sha256": checkpoints.content_digest(contents)}, path)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load says about such a file here
        torch.load(path, weights_only=True)
    loaded = checkpoints.load_checkpoint(path)  # map_location="cpu"
    restored = ConvNet()
    checkpoints.restore_network(restored, loaded, path)
    for ours, theirs in zip(restored.state_dict().values(), network.state_dict().values(), strict=True):
        assert ours.device.type == "cpu" and torch.equal(ours, theirs)
