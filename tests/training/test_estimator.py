"""The Estimator: steps and max_steps, checkpoints, exact resume, Ctrl-C, NaN, evaluation and prediction."""

import logging
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tf32_allowed, tf32_flags

from cnn_mnist import Estimator, Hook, ModelParams, RunConfig, numpy_input_fn
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import CheckpointError, ConfigError, ModelDirLockedError, NanLossError, TrainingInterrupted
from cnn_mnist.training.checkpoints import list_checkpoints, load_checkpoint
from cnn_mnist.training.lock import ModelDirLock


@pytest.fixture(scope="module")
def mnist(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False)


def train_input(mnist, batch_size=20, seed=0):
    return numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=batch_size, num_epochs=None,
                          shuffle=True, seed=seed)


def eval_input(mnist, batch_size=64):
    return numpy_input_fn(mnist.test.images, mnist.test.labels, batch_size=batch_size, num_epochs=1, shuffle=False)


def make_estimator(model_dir, optimizer="sgd", learning_rate=0.05, **run):
    run.setdefault("save_checkpoints_steps", 1000)
    return Estimator(model_dir=model_dir, params=ModelParams(optimizer=optimizer, learning_rate=learning_rate),
                     config=RunConfig(**run))


def test_steps_adds_and_max_steps_is_absolute(model_dir, mnist, caplog):
    caplog.set_level(logging.INFO)
    estimator = make_estimator(model_dir)
    estimator.train(train_input(mnist), steps=3)
    estimator.train(train_input(mnist), steps=2)
    assert estimator.global_step == 5
    estimator.train(train_input(mnist), max_steps=4)
    assert estimator.global_step == 5 and "nothing to train" in caplog.text
    estimator.train(train_input(mnist), max_steps=7)
    assert Estimator(model_dir=model_dir).latest_checkpoint().name == "model.ckpt-7.pt"


def test_train_needs_exactly_one_positive_step_count(model_dir, mnist):
    estimator = make_estimator(model_dir)
    for kwargs in ({}, {"steps": 1, "max_steps": 2}, {"steps": -5}, {"max_steps": 0}):
        with pytest.raises(ConfigError):
            estimator.train(train_input(mnist), **kwargs)


def test_checkpoints_at_first_step_every_n_and_end_keeping_the_newest(model_dir, mnist):
    estimator = make_estimator(model_dir, save_checkpoints_steps=4, keep_checkpoint_max=3)
    estimator.train(train_input(mnist), max_steps=18)
    assert [step for step, _ in list_checkpoints(model_dir)] == [12, 16, 18]
    make_estimator(model_dir, save_checkpoints_steps=4, keep_checkpoint_max=10).train(train_input(mnist), steps=1)
    assert [step for step, _ in list_checkpoints(model_dir)] == [12, 16, 18, 19]


def test_resumed_training_gives_identical_weights(tmp_path, mnist):
    # 300 steps in one run, against 150 steps and a resumed run (a fresh Estimator) to 300. Momentum
    # and dropout make the optimizer state and the RNG state matter, not just the weights.
    def run(model_dir, stops):
        for stop in stops:
            make_estimator(model_dir, optimizer="momentum", learning_rate=0.01).train(
                train_input(mnist, batch_size=10), max_steps=stop)
        return load_checkpoint(list_checkpoints(model_dir)[-1][1])

    torch.manual_seed(1234)  # what the global RNG held before must not matter
    straight = run(tmp_path / "straight", [300])
    torch.manual_seed(999)
    resumed = run(tmp_path / "resumed", [150, 300])
    assert straight["global_step"] == resumed["global_step"] == 300
    for name, weights in straight["network"].items():
        assert torch.equal(weights, resumed["network"][name]), name
    assert straight["input"] == resumed["input"]


def test_evaluate_covers_every_example_once(model_dir, mnist):
    estimator = make_estimator(model_dir)
    estimator.train(train_input(mnist), steps=30)
    results = estimator.evaluate(eval_input(mnist, batch_size=64))  # 300 = 4 full batches and one of 44
    with torch.no_grad():
        estimator.network.eval()
        logits = estimator.network(mnist.test.images)
    assert set(results) == {"accuracy", "loss", "global_step"}
    assert results["global_step"] == 30
    expected_accuracy = (logits.argmax(1) == mnist.test.labels).double().mean().item()
    assert results["accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)
    assert results["loss"] == pytest.approx(F.cross_entropy(logits, mnist.test.labels).item(), rel=1e-5)
    whole = estimator.evaluate(eval_input(mnist, batch_size=300))
    assert whole["accuracy"] == results["accuracy"] and whole["loss"] == pytest.approx(results["loss"], rel=1e-6)


def test_short_training_learns_the_synthetic_digits(model_dir, mnist):
    estimator = make_estimator(model_dir, optimizer="adam", learning_rate=0.001)
    estimator.train(train_input(mnist), steps=40)
    assert estimator.evaluate(eval_input(mnist))["accuracy"] >= 0.9


def test_evaluate_and_predict_restore_the_newest_checkpoint(model_dir, mnist):
    make_estimator(model_dir).train(train_input(mnist), steps=20)
    fresh = Estimator(model_dir=model_dir)  # new weights in memory until something restores
    results = fresh.evaluate(eval_input(mnist))
    assert results["global_step"] == 20
    predictions = list(fresh.predict(numpy_input_fn(mnist.test.images[:7], batch_size=3, shuffle=False)))
    assert len(predictions) == 7
    for prediction in predictions:
        assert set(prediction) == {"classes", "probabilities"}
        assert prediction["probabilities"].shape == (10,)
        assert prediction["classes"] == int(np.argmax(prediction["probabilities"]))
        assert prediction["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)


def test_evaluate_or_predict_without_a_checkpoint_is_an_error(model_dir, mnist):
    estimator = Estimator(model_dir=model_dir)
    with pytest.raises(CheckpointError, match="no checkpoint in .*train first"):
        estimator.evaluate(eval_input(mnist))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        estimator.predict(eval_input(mnist))


def test_ctrl_c_stops_after_the_step_and_saves_a_checkpoint(model_dir, mnist):
    class PressCtrlC(Hook):
        def after_step(self, run):
            if run.global_step == 7:
                os.kill(os.getpid(), signal.SIGINT)

    estimator = make_estimator(model_dir)
    # Python's own handler, or SIG_IGN where the suite was started in the background by a
    # non-interactive shell: training must put back whichever it found.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        estimator.train(train_input(mnist), max_steps=50, hooks=[PressCtrlC()])
    assert (stop.value.global_step, stop.value.saved) == (7, True)
    assert [step for step, _ in list_checkpoints(model_dir)] == [0, 7]
    assert signal.getsignal(signal.SIGINT) is before
    make_estimator(model_dir).train(train_input(mnist), max_steps=10)  # and the run resumes from it
    assert list_checkpoints(model_dir)[-1][0] == 10


def test_a_second_ctrl_c_stops_at_once_without_saving(model_dir, mnist):
    class PressCtrlCTwice(Hook):
        def after_step(self, run):
            if run.global_step == 7:
                os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
                os.kill(os.getpid(), signal.SIGINT)  # the second: now

    estimator = make_estimator(model_dir)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        estimator.train(train_input(mnist), max_steps=50, hooks=[PressCtrlCTwice()])
    assert (stop.value.global_step, stop.value.saved) == (7, False)
    assert [step for step, _ in list_checkpoints(model_dir)] == [0]  # step 7 was not saved
    assert signal.getsignal(signal.SIGINT) is before


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(model_dir, mnist):
    make_estimator(model_dir).train(train_input(mnist), max_steps=10)
    diverging = make_estimator(model_dir, learning_rate=1e6, log_step_count_steps=5)
    with pytest.raises(NanLossError, match="NaN loss during training"):
        diverging.train(train_input(mnist), max_steps=100)
    last_step, last_path = list_checkpoints(model_dir)[-1]
    assert last_step == 10  # nothing of the diverged run was saved
    assert all(torch.isfinite(w).all() for w in load_checkpoint(last_path)["network"].values())
    sane = make_estimator(model_dir, learning_rate=0.05)
    sane.train(train_input(mnist), steps=5)
    assert sane.global_step == last_step + 5


def test_a_running_train_locks_the_model_dir(model_dir, mnist):
    with ModelDirLock(model_dir):
        with pytest.raises(ModelDirLockedError, match="in use by a running train"):
            make_estimator(model_dir).train(train_input(mnist), steps=1)


def test_checkpoint_of_another_architecture_is_refused(model_dir, mnist):
    model_dir.mkdir()
    torch.save({"format": "cnn_mnist.checkpoint/1", "global_step": 5, "network": torch.nn.Linear(784, 10).state_dict()},
               model_dir / "model.ckpt-5.pt")
    with pytest.raises(CheckpointError, match="model.ckpt-5.pt: checkpoint of another model"):
        Estimator(model_dir=model_dir).evaluate(eval_input(mnist))


def test_summaries_are_readable_by_tensorboard(model_dir, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    estimator = make_estimator(model_dir, save_summary_steps=10)
    estimator.train(train_input(mnist), max_steps=30)
    results = estimator.evaluate(eval_input(mnist))
    train_events = EventAccumulator(str(model_dir))
    train_events.Reload()
    assert {"loss", "accuracy", "learning_rate", "global_step/sec"} <= set(train_events.Tags()["scalars"])
    assert [e.step for e in train_events.Scalars("loss")] == [1, 10, 20, 30]
    assert train_events.Scalars("learning_rate")[0].value == pytest.approx(0.05)
    eval_events = EventAccumulator(str(model_dir / "eval"))
    eval_events.Reload()
    (accuracy,) = eval_events.Scalars("accuracy")
    assert (accuracy.step, accuracy.value) == (30, pytest.approx(results["accuracy"]))


def test_summaries_show_inputs_filters_and_validation_accuracy(model_dir, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnn_mnist.training.hooks import ValidationHook

    estimator = make_estimator(model_dir, save_summary_steps=10)
    validation = ValidationHook(10, eval_input(mnist), name="validation")
    estimator.train(train_input(mnist, batch_size=20), max_steps=25, hooks=[validation])
    train_events = EventAccumulator(str(model_dir), size_guidance={"images": 0})
    train_events.Reload()
    (inputs,) = train_events.Images("inputs")
    assert (inputs.step, inputs.width, inputs.height) == (1, 8 * 28, 28)  # 8 digits of the first batch
    filters = train_events.Images("conv1/filters")
    assert [f.step for f in filters] == [1, 25]  # first step and end (every 100 with summaries every 10)
    validation_events = EventAccumulator(str(model_dir / "eval_validation"))
    validation_events.Reload()
    assert set(validation_events.Tags()["scalars"]) == {"accuracy", "loss"}
    assert [(e.step, e.value) for e in validation_events.Scalars("accuracy")] == [
        (h["global_step"], pytest.approx(h["accuracy"])) for h in validation.history]


def test_checkpoints_carry_the_training_time_added_up_over_resumes(model_dir, mnist):
    estimator = make_estimator(model_dir)
    estimator.train(train_input(mnist), max_steps=5)
    first = load_checkpoint(list_checkpoints(model_dir)[-1][1])["training_seconds"]
    make_estimator(model_dir).train(train_input(mnist), max_steps=10)
    second = load_checkpoint(list_checkpoints(model_dir)[-1][1])["training_seconds"]
    assert 0 < first < second


def test_every_hook_ends_even_when_the_nan_guard_fails_at_the_end(model_dir, mnist):
    class Ends(Hook):
        def begin(self, run):
            self.ended_failed = None

        def end(self, run):
            self.ended_failed = run.failed

    make_estimator(model_dir).train(train_input(mnist), max_steps=3)
    ends = Ends()
    # Checked only every 1,000 steps, the NaN is found by the guard's end(), before the saver's.
    diverging = make_estimator(model_dir, learning_rate=1e9, log_step_count_steps=1000)
    with pytest.raises(NanLossError):
        diverging.train(train_input(mnist), max_steps=8, hooks=[ends])
    assert ends.ended_failed is True
    assert list_checkpoints(model_dir)[-1][0] == 3


def test_a_scheduled_learning_rate_is_applied_each_step_and_resumes_on_schedule(tmp_path, mnist):
    from cnn_mnist.model.model_fn import learning_rate_at

    params = ModelParams(optimizer="adam", learning_rate=0.002, lr_schedule="one_cycle")
    seen = []

    class RecordRate(Hook):
        def after_step(self, run):
            seen.append((run.global_step, run.learning_rate))

    def train_to(model_dir, stop):
        Estimator(model_dir=model_dir, params=params, config=RunConfig(save_checkpoints_steps=1000)).train(
            train_input(mnist), max_steps=stop, hooks=[RecordRate()])

    train_to(tmp_path / "a", 6)
    train_to(tmp_path / "a", 10)  # resumed: the schedule of a run to 10 from step 6 on
    assert [rate for _, rate in seen[6:]] == [learning_rate_at(step, 10, params) for step in range(6, 10)]
    assert [step for step, _ in seen] == list(range(1, 11))


def make_averaging_estimator(model_dir, ema_decay=0.9):
    return Estimator(model_dir=model_dir,
                     params=ModelParams(optimizer="adam", learning_rate=0.002, ema_decay=ema_decay),
                     config=RunConfig(save_checkpoints_steps=1000))


def test_weight_average_is_kept_saved_and_used_by_evaluate_and_predict(model_dir, mnist):
    estimator = make_averaging_estimator(model_dir)
    before = [p.detach().clone() for p in estimator.network.parameters()]
    estimator.train(train_input(mnist), steps=1)
    # after one step the average moved a tenth of the way: 0.9 * before + 0.1 * now
    pairs = zip(estimator.network.parameters(), estimator.average.network.parameters(), strict=True)
    for start, (now, average) in zip(before, pairs, strict=True):
        torch.testing.assert_close(average, torch.lerp(start, now.detach(), 0.1))
    estimator.train(train_input(mnist), steps=20)
    state = load_checkpoint(estimator.latest_checkpoint())
    assert set(state["averaged_network"]) == set(state["network"])
    assert not torch.equal(state["averaged_network"]["dense.weight"], state["network"]["dense.weight"])

    plain = make_estimator(model_dir)  # no averaging asked: the checkpoint's average still serves
    results = plain.evaluate(eval_input(mnist))
    with torch.no_grad():
        plain.average.network.eval()
        logits = plain.average.network(mnist.test.images)
    expected = (logits.argmax(1) == mnist.test.labels).double().mean().item()
    assert results["accuracy"] == pytest.approx(expected, abs=1e-12)
    predicted = [p["classes"] for p in plain.predict(numpy_input_fn(mnist.test.images, batch_size=64, shuffle=False))]
    assert predicted == logits.argmax(1).tolist()


def test_resumed_training_with_an_average_is_identical(tmp_path, mnist):
    def run(model_dir, stops):
        for stop in stops:
            make_averaging_estimator(model_dir).train(train_input(mnist, batch_size=10), max_steps=stop)
        return load_checkpoint(list_checkpoints(model_dir)[-1][1])

    straight, resumed = run(tmp_path / "straight", [40]), run(tmp_path / "resumed", [15, 40])
    for key in ("network", "averaged_network"):
        for name, weights in straight[key].items():
            assert torch.equal(weights, resumed[key][name]), (key, name)


def test_validation_hook_evaluates_current_weights_without_changing_training(tmp_path, mnist):
    from cnn_mnist.training.hooks import ValidationHook

    hook = ValidationHook(10, eval_input(mnist), name="validation")
    watched = make_estimator(tmp_path / "watched", optimizer="momentum", learning_rate=0.01)
    watched.train(train_input(mnist), max_steps=25, hooks=[hook])
    unwatched = make_estimator(tmp_path / "unwatched", optimizer="momentum", learning_rate=0.01)
    unwatched.train(train_input(mnist), max_steps=25)
    for mine, theirs in zip(watched.network.parameters(), unwatched.network.parameters(), strict=True):
        assert torch.equal(mine, theirs)  # evaluating draws no random numbers and leaves train mode as it was
    assert [h["global_step"] for h in hook.history] == [10, 20, 25]  # every 10 steps and at the end
    assert all(h["training_s"] > 0 for h in hook.history)
    assert hook.history[-1]["accuracy"] == watched.evaluate(eval_input(mnist))["accuracy"]
    assert (tmp_path / "watched" / "eval_validation").is_dir()


def test_a_format_1_checkpoint_is_read_with_the_new_flatten_order(model_dir, mnist):
    from cnn_mnist.training.checkpoints import save_checkpoint

    estimator = make_estimator(model_dir, optimizer="momentum", learning_rate=0.01)
    estimator.train(train_input(mnist), steps=5)
    expected = estimator.evaluate(eval_input(mnist))
    state = load_checkpoint(estimator.latest_checkpoint())

    def to_channel_major(weight):  # the (c, h, w) column order format 1 used
        return weight.reshape(1024, 7, 7, 64).permute(0, 3, 1, 2).reshape(1024, 3136)

    state["network"]["dense.weight"] = to_channel_major(state["network"]["dense.weight"])
    for values in state["optimizer"]["state"].values():
        values["momentum_buffer"] = (to_channel_major(values["momentum_buffer"])
                                     if values["momentum_buffer"].shape == (1024, 3136) else values["momentum_buffer"])
    path = save_checkpoint(model_dir, {**state, "global_step": 6}, keep_checkpoint_max=5)
    torch.save({**torch.load(path, weights_only=True), "format": "cnn_mnist.checkpoint/1"}, path)
    upgraded = load_checkpoint(path)
    again = make_estimator(model_dir).evaluate(eval_input(mnist))
    assert again["accuracy"] == expected["accuracy"] and again["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert torch.equal(upgraded["optimizer"]["state"][4]["momentum_buffer"],
                       load_checkpoint(list_checkpoints(model_dir)[-2][1])["optimizer"]["state"][4]["momentum_buffer"])


def test_a_damaged_newest_checkpoint_falls_back_for_evaluate_and_train(model_dir, mnist, caplog):
    caplog.set_level(logging.INFO)
    estimator = make_estimator(model_dir, save_checkpoints_steps=5)
    estimator.train(train_input(mnist), max_steps=10)
    newest = model_dir / "model.ckpt-10.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    results = make_estimator(model_dir).evaluate(eval_input(mnist))
    assert results["global_step"] == 5  # and the log says which file was skipped and which one was used
    assert "model.ckpt-10.pt: corrupt or unreadable checkpoint" in caplog.text
    assert "(checkpoint model.ckpt-5.pt)" in caplog.text
    resumed = make_estimator(model_dir, save_checkpoints_steps=5)
    resumed.train(train_input(mnist), max_steps=12)  # from step 5, over the damaged file
    assert resumed.global_step == 12
    assert load_checkpoint(model_dir / "model.ckpt-10.pt")["global_step"] == 10  # rewritten whole on the way


def test_params_reach_a_model_fn_that_names_them_as_in_tensorflow(tmp_path, mnist):
    from cnn_mnist import cnn_model_fn

    seen = []

    def with_params(network, images, labels, mode, params):
        seen.append(params)
        return cnn_model_fn(network, images, labels, mode, params=params)

    def without_params(network, images, labels, mode):  # the tutorial's signature
        return cnn_model_fn(network, images, labels, mode)

    params = ModelParams(label_smoothing=0.1)
    Estimator(with_params, tmp_path / "a", params=params).train(train_input(mnist), steps=2)
    assert seen == [params, params]
    Estimator(without_params, tmp_path / "b", params=params).train(train_input(mnist), steps=2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_estimator_computes_fp32_without_tf32_and_leaves_the_users_flags_as_found(tmp_path, mnist, precision):
    from cnn_mnist import cnn_model_fn

    seen = {}

    def model_fn(network, images, labels, mode):
        seen[mode.name] = tf32_flags()
        return cnn_model_fn(network, images, labels, mode)

    with tf32_allowed() as users:
        estimator = Estimator(model_fn, tmp_path, config=RunConfig(precision=precision, device="cpu"))
        assert tf32_flags() == users
        estimator.train(train_input(mnist), steps=2)
        assert tf32_flags() == users
        estimator.evaluate(eval_input(mnist), write_summaries=False)
        assert tf32_flags() == users
        next(estimator.predict(numpy_input_fn(mnist.test.images, batch_size=64, shuffle=False)))
        assert tf32_flags() == users  # between a generator's batches too
    assert set(seen) == {"TRAIN", "EVAL", "PREDICT"}
    for flags in seen.values():
        if precision == "bf16":
            assert flags == users  # autocast decides
        else:
            assert set(flags.values()) <= {"ieee", False}  # no TF32 anywhere
