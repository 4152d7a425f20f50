"""Checkpoints: atomic writes, retention, and loud refusal of anything that is not ours."""

import contextlib
import os
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_mnist import files
from cnn_mnist.errors import CheckpointError
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training import checkpoints


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
