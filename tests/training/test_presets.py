"""The recipes: the tutorial preset is the tutorial exactly, fast and best as measured; an unknown
name is refused."""

import pytest

from cnn_mnist.errors import ConfigError
from cnn_mnist.model.config import ModelParams
from cnn_mnist.training.presets import preset


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


def test_an_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of tutorial, fast, best"):
        preset("nope")
