"""Configuration dataclasses: the tutorial preset, overrides, and early, clear rejection of bad values."""

import pytest

from cnn_mnist.errors import ConfigError
from cnn_mnist.model.config import PRESETS, ModelParams, RunConfig, TrainConfig, preset


def test_tutorial_preset_is_the_tutorial_exactly():
    config = preset("tutorial")
    assert (config.steps, config.batch_size, config.log_probabilities_every) == (20_000, 100, 50)
    assert config.params == ModelParams(optimizer="sgd", learning_rate=0.001, dropout=0.4)
    assert (config.run.save_checkpoints_secs, config.run.keep_checkpoint_max) == (600, 5)
    assert (config.run.log_step_count_steps, config.run.save_summary_steps) == (100, 100)
    assert not config.train_on_all
    # bf16 only where the CPU runs it natively (precision.resolve_precision); the recipe is unchanged
    assert config.run.precision == "auto"
    assert not config.augment  # no augmentation of any kind, the robustness ingredients included


def test_fast_and_best_train_on_the_same_damage_in_different_doses():
    """The robustness ingredients (docs/performance.md's ablations): the same for both presets,
    `fast` leaving three quarters clean and its first epoch undamaged so it crosses 99% as before."""
    fast, best = preset("fast").augment, preset("best").augment
    damage = ("brightness", "contrast", "noise", "erase", "outline")
    doses = [0.5, 0.5, 0.2, 0.3, 0.2]
    assert [getattr(fast, name) for name in damage] == [getattr(best, name) for name in damage] == doses
    assert (fast.clean_share, fast.damage_from_epoch) == (0.75, 1.0)
    assert (best.clean_share, best.damage_from_epoch) == (0.5, 0.0)
    assert (best.rotation, best.scale, best.shear, best.shift) == (10, 0.1, 10, 2) and not fast.rotation


def test_overrides_reach_nested_fields_and_leave_the_preset_alone():
    config = PRESETS["tutorial"].with_overrides(learning_rate=0.01, steps=5, seed=3, save_checkpoints_steps=2)
    assert (config.params.learning_rate, config.steps, config.run.seed) == (0.01, 5, 3)
    assert config.run.save_checkpoints_steps == 2 and config.run.save_checkpoints_secs is None
    assert PRESETS["tutorial"].params.learning_rate == 0.001
    back_to_time = config.with_overrides(save_checkpoints_secs=30)
    assert (back_to_time.run.save_checkpoints_secs, back_to_time.run.save_checkpoints_steps) == (30, None)


def test_round_trip_through_a_dict():
    config = TrainConfig(steps=7, params=ModelParams(optimizer="adam"), run=RunConfig(save_checkpoints_steps=3))
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(steps=-5), "steps must be a positive number"),
    (lambda: TrainConfig(batch_size=0), "batch size must be a positive number"),
    (lambda: TrainConfig(log_probabilities_every=-1), "0 \\(off\\) or positive"),
    (lambda: ModelParams(optimizer="rmsprop"), "optimizer must be one of sgd, momentum, adam"),
    (lambda: ModelParams(learning_rate=0), "learning rate must be positive"),
    (lambda: ModelParams(dropout=1.0), "dropout must be in"),
    (lambda: ModelParams(ema_decay=1.0), "ema_decay must be in"),
    (lambda: TrainConfig(eval_every=-1), "eval-every must be 0"),
    (lambda: TrainConfig(eval_every=10, train_on_all=True), "eval-every needs the validation split"),
    (lambda: RunConfig(keep_checkpoint_max=0), "keep_checkpoint_max must be positive"),
    (lambda: RunConfig(save_checkpoints_steps=0), "save_checkpoints_steps must be positive"),
    (lambda: preset("nope"), "unknown preset 'nope'"),
    (lambda: ModelParams(consistency=-1), "consistency must be a finite number >= 0"),
    (lambda: TrainConfig().with_overrides(consistency=1, augment_rotation=10), "it needs a damage ingredient"),
    (lambda: TrainConfig().with_overrides(colour="red"), "unknown setting 'colour'"),
])
def test_bad_values_fail_with_a_clear_message(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
