"""The main job: it trains then evaluates, and records the run's configuration inside the lock."""

import pytest

from cnn_mnist.errors import ModelDirLockedError
from cnn_mnist.experiment import train_and_evaluate
from cnn_mnist.training.config import TrainConfig
from cnn_mnist.training.lock import ModelDirLock
from cnn_mnist.training.run_record import read_run_config, write_run_config


def test_train_and_evaluate_reaches_the_target_step(model_dir, tiny_mnist_dir, no_verify):
    config = TrainConfig(steps=10, log_probabilities_every=0).with_overrides(optimizer="adam")
    results = train_and_evaluate(config, model_dir, tiny_mnist_dir)
    assert results["global_step"] == 10 and set(results) == {"accuracy", "loss", "global_step"}
    assert (model_dir / "config.json").is_file() and (model_dir / "model.ckpt-10.pt").is_file()


def test_a_train_refused_by_the_lock_leaves_the_running_ones_config(model_dir, tiny_mnist_dir, no_verify):
    write_run_config(model_dir, TrainConfig(steps=99), preset="tutorial")
    with ModelDirLock(model_dir), pytest.raises(ModelDirLockedError):
        train_and_evaluate(TrainConfig(steps=5), model_dir, tiny_mnist_dir)
    assert read_run_config(model_dir).steps == 99


def test_the_configured_augmentation_reaches_the_training_batches_only(model_dir, tiny_mnist_dir, no_verify,
                                                                       monkeypatch):
    import cnn_mnist.data.inputs

    seen = []
    real_augment = cnn_mnist.data.inputs.augment
    monkeypatch.setattr(cnn_mnist.data.inputs, "augment", lambda images, augmentation, generator, damage=True: (
        seen.append((len(images), augmentation)) or real_augment(images, augmentation, generator, damage)))
    config = TrainConfig(steps=3, batch_size=16, log_probabilities_every=0, eval_every=0).with_overrides(
        augment_rotation=10, augment_shift=2, label_smoothing=0.1)
    train_and_evaluate(config, model_dir, tiny_mnist_dir)
    assert seen == [(16, config.augment)] * 3  # three training batches; evaluation is never augmented
    assert read_run_config(model_dir) == config  # the augmentation and smoothing are recorded


def test_a_consistency_run_trains_on_both_views_of_every_image(model_dir, tiny_mnist_dir, no_verify, monkeypatch):
    import cnn_mnist.data.inputs

    seen = []
    real_views = cnn_mnist.data.inputs.augment_views
    monkeypatch.setattr(cnn_mnist.data.inputs, "augment_views", lambda images, augmentation, generator: (
        seen.append(len(images)) or real_views(images, augmentation, generator)))
    config = TrainConfig(steps=3, batch_size=16, log_probabilities_every=0, eval_every=0).with_overrides(
        augment_brightness=0.5, consistency=1.0)
    result = train_and_evaluate(config, model_dir, tiny_mnist_dir)
    assert seen == [16] * 3 and result["global_step"] == 3
    assert read_run_config(model_dir).params.consistency == 1.0
