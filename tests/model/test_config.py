"""The model function's hyperparameters: early, clear rejection of bad values."""

import pytest

from cnn_mnist.errors import ConfigError
from cnn_mnist.model.config import ModelParams


@pytest.mark.parametrize("make, message", [
    (lambda: ModelParams(optimizer="rmsprop"), "optimizer must be one of sgd, momentum, adam"),
    (lambda: ModelParams(learning_rate=0), "learning rate must be a positive number"),
    (lambda: ModelParams(learning_rate=float("inf")), "learning rate must be a positive number"),
    (lambda: ModelParams(dropout=1.0), "dropout must be in"),
    (lambda: ModelParams(ema_decay=1.0), "ema_decay must be in"),
    (lambda: ModelParams(consistency=-1), "consistency must be a finite number >= 0"),
])
def test_bad_values_fail_with_a_clear_message(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
