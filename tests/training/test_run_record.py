"""The run record: config.json holds the whole configuration and the software versions, and reads back."""

import json

from cnn_mnist.training.config import TrainConfig
from cnn_mnist.training.run_record import read_run_config, write_run_config


def test_run_config_is_written_whole_and_read_back(model_dir):
    config = TrainConfig(steps=12).with_overrides(optimizer="adam", seed=4)
    path = write_run_config(model_dir, config, preset="tutorial")
    record = json.loads(path.read_text())
    assert record["preset"] == "tutorial" and set(record["versions"]) == {"cnn_mnist", "torch", "python"}
    assert read_run_config(model_dir) == config
    assert read_run_config(model_dir / "elsewhere") is None
