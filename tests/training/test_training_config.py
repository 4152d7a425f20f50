"""How training runs: overrides reach nested fields, a config survives a dict, bad values fail early."""

import pytest

from cnn_mnist.errors import ConfigError
from cnn_mnist.model.config import ModelParams
from cnn_mnist.training.config import RunConfig, TrainConfig
from cnn_mnist.training.presets import PRESETS


def test_overrides_reach_nested_fields_and_leave_the_preset_alone():
    config = PRESETS["tutorial"].with_overrides(learning_rate=0.01, steps=5, seed=3, save_checkpoints_steps=2)
    assert (config.params.learning_rate, config.steps, config.run.seed) == (0.01, 5, 3)
    assert config.run.save_checkpoints_steps == 2 and config.run.save_checkpoints_secs is None
    assert PRESETS["tutorial"].params.learning_rate == 0.001
    back_to_time = config.with_overrides(save_checkpoints_secs=30)
    assert (back_to_time.run.save_checkpoints_secs, back_to_time.run.save_checkpoints_steps) == (30, None)


def test_training_on_all_images_turns_the_presets_validation_off_unless_it_is_asked_for():
    assert PRESETS["tutorial"].eval_every > 0
    assert PRESETS["tutorial"].with_overrides(train_on_all=True).eval_every == 0
    assert PRESETS["tutorial"].with_overrides(train_on_all=True, eval_every=0).eval_every == 0
    assert PRESETS["tutorial"].with_overrides(train_on_all=False).eval_every == PRESETS["tutorial"].eval_every
    with pytest.raises(ConfigError, match="eval-every needs the validation split"):
        PRESETS["tutorial"].with_overrides(train_on_all=True, eval_every=10)


def test_round_trip_through_a_dict():
    config = TrainConfig(steps=7, params=ModelParams(optimizer="adam"), run=RunConfig(save_checkpoints_steps=3))
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(steps=-5), "steps must be a positive number"),
    (lambda: TrainConfig(batch_size=0), "batch size must be a positive number"),
    (lambda: TrainConfig(log_probabilities_every=-1), "0 \\(off\\) or positive"),
    (lambda: TrainConfig(eval_every=-1), "eval-every must be 0"),
    (lambda: TrainConfig(eval_every=10, train_on_all=True), "eval-every needs the validation split"),
    (lambda: RunConfig(keep_checkpoint_max=0), "keep_checkpoint_max must be positive"),
    (lambda: RunConfig(save_checkpoints_steps=0), "save_checkpoints_steps must be positive"),
    (lambda: TrainConfig().with_overrides(consistency=1, augment_rotation=10), "it needs a damage ingredient"),
    (lambda: TrainConfig().with_overrides(colour="red"), "unknown setting 'colour'"),
])
def test_bad_values_fail_with_a_clear_message(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
