"""The main job: it trains then evaluates, and records the run's configuration inside the lock."""

import json

import numpy as np
import pytest
from conftest import make_digits
from helpers import one_line_error
from PIL import Image

from cnn_mnist.cli import main
from cnn_mnist.errors import ModelDirLockedError
from cnn_mnist.experiment import train_and_evaluate
from cnn_mnist.training.config import TrainConfig
from cnn_mnist.training.lock import ModelDirLock
from cnn_mnist.training.run_record import read_run_config, write_run_config
from cnn_mnist.use.predictor import Predictor


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


def write_pictures(root, names, per_class=30, seed=4):
    """28x28 greyscale pictures, one subfolder per class: the tiny set's digits 0, 1, 2... as the named classes."""
    images, labels = make_digits(40 * per_class, seed)
    for index, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images[labels == index][:per_class]):
            Image.fromarray(image, mode="L").save(root / name / f"{i}.png")
    return root


def test_train_on_a_folder_of_pictures_then_evaluate_and_predict_with_its_classes(tmp_path, capsys):
    pictures = write_pictures(tmp_path / "pictures", ["ring", "Ölfass", "two words"])
    model_dir, data_dir = tmp_path / "model", tmp_path / "data"
    argv = ["--data-dir", str(data_dir), "--model-dir", str(model_dir), "--json"]
    assert main(["train", "--data", str(pictures), "--steps", "30", "--optimizer", "adam", *argv]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["global_step"] == 30 and trained["accuracy"] > 0.9  # three classes that are easy to tell apart
    names = ("ring", "two words", "Ölfass")  # sorted by code point, as torchvision's ImageFolder sorts them
    assert read_run_config(model_dir).params.classes == names
    assert main(["evaluate", *argv]) == 0
    assert json.loads(capsys.readouterr().out) == trained  # the same held-out pictures, found from the record
    predictor = Predictor(model_dir, device="cpu")
    assert predictor.classes == names and predictor.network.logits.out_features == 3
    assert predictor.predict(np.zeros((2, 28, 28), np.uint8)).probabilities.shape == (2, 3)
    picture = str(pictures / "ring" / "0.png")
    assert main(["predict", "--model-dir", str(model_dir), "--json", picture]) == 0
    answer = json.loads(capsys.readouterr().out)["predictions"][0]
    assert answer["name"] == names[answer["class"]] and len(answer["probabilities"]) == 3
    assert main(["predict", "--model-dir", str(model_dir), picture]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["input", "class", "label", "ring", "two", "words", "Ölfass"]  # each class's column
    assert row.startswith(picture) and f" {answer['name']}  " in row
    assert [float(figure) for figure in row.split()[-3:]] == pytest.approx(answer["probabilities"], abs=5e-4)
    assert header.index("Ölfass") + len("Ölfass") == len(header) and len(row) == len(header)  # aligned


def test_a_model_directory_refuses_other_classes_and_keeps_its_checkpoints(tmp_path, capsys):
    model_dir, data_dir = tmp_path / "model", tmp_path / "data"
    argv = ["--data-dir", str(data_dir), "--model-dir", str(model_dir), "--optimizer", "adam"]
    assert main(["train", "--data", str(write_pictures(tmp_path / "a", ["cat", "dog"])), "--steps", "5", *argv]) == 0
    before = {path.name: path.read_bytes() for path in model_dir.glob("model.ckpt-*")}
    capsys.readouterr()
    other = write_pictures(tmp_path / "b", ["cat", "cow"])
    err = one_line_error(capsys, ["train", "--data", str(other), "--steps", "10", *argv],
                         "was trained on the classes cat, dog, not cat, cow; train these in another --model-dir")
    assert {path.name: path.read_bytes() for path in model_dir.glob("model.ckpt-*")} == before, err
