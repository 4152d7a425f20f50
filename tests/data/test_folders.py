"""A folder of pictures as a dataset: the layout read, the pictures prepared and cached, the split
stratified, and every bad folder a one-line error or a named skip."""

import logging

import numpy as np
import pytest
import torch
from conftest import make_digits
from helpers import SEVEN, draw_png
from PIL import Image

from cnn_mnist.data import folders
from cnn_mnist.data.datasets import load_dataset, load_folder
from cnn_mnist.data.images import prepare_image
from cnn_mnist.errors import DataError


def write_folder(root, images, labels, names=None, fmt="png"):
    """Each image as a 28x28 greyscale picture in root/<its class name>/."""
    names = names or [str(label) for label in range(10)]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{i:05d}.{fmt}")
    return root


def as_set(images, labels):
    return {(int(label), image.tobytes()) for image, label in zip(np.asarray(images), np.asarray(labels), strict=True)}


def everything(dataset):
    return set().union(*(as_set(split.images, split.labels) for split in (dataset.train, dataset.validation,
                                                                          dataset.test)))


@pytest.fixture
def digits():
    return make_digits(200, seed=3)


def test_a_folder_of_28x28_greyscale_pictures_loads_the_same_pixels_and_labels(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "pictures", images, labels)
    dataset = load_folder(root, tmp_path / "data")
    assert dataset.classes == tuple(str(label) for label in range(10))
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 200
    assert everything(dataset) == as_set(images, labels)  # pixel for pixel: kept as they are
    assert dataset.train.images.dtype == dataset.test.images.dtype == torch.uint8
    assert dataset.train.labels.dtype == torch.int64


def test_the_held_out_test_set_is_stratified_seeded_and_in_file_order(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "pictures", images, labels)
    first = load_folder(root, tmp_path / "data", test_fraction=0.2, seed=1)
    again = load_folder(root, tmp_path / "data", test_fraction=0.2, seed=1)
    other = load_folder(root, tmp_path / "data", test_fraction=0.2, seed=2)
    counts = np.bincount(labels, minlength=10)
    test_counts = np.bincount(first.test.labels.numpy(), minlength=10)
    assert (test_counts == np.maximum(1, np.round(0.2 * counts))).all()
    assert first.test.images.equal(again.test.images) and not first.test.images.equal(other.test.images)
    assert (np.diff(first.test.labels.numpy()) >= 0).all()  # folders in sorted order, files in order within
    # the validation split: the same share of the rest, also stratified, and trained on with train_on_all
    rest = counts - test_counts
    assert (np.bincount(first.validation.labels.numpy(), minlength=10) == np.maximum(1, np.round(0.2 * rest))).all()
    assert not as_set(first.validation.images, first.validation.labels) & as_set(first.train.images, first.train.labels)
    on_all = load_folder(root, tmp_path / "data", test_fraction=0.2, seed=1, train_on_all=True)
    assert len(on_all.train) == len(first.train) + len(first.validation) and on_all.test.images.equal(first.test.images)


def test_train_and_test_folders_are_used_as_given(tmp_path, digits):
    images, labels = digits
    write_folder(tmp_path / "set" / "train", images[:150], labels[:150])
    write_folder(tmp_path / "set" / "test", images[150:], labels[150:])
    dataset = load_folder(tmp_path / "set", tmp_path / "data")
    assert as_set(dataset.test.images, dataset.test.labels) == as_set(images[150:], labels[150:])
    assert len(dataset.train) + len(dataset.validation) == 150


def test_a_larger_picture_is_prepared_as_predict_prepares_it(tmp_path):
    for name in ("seven", "other"):
        (tmp_path / "set" / name).mkdir(parents=True)
        (tmp_path / "set" / name / "a.png").write_bytes(draw_png(SEVEN))
        (tmp_path / "set" / name / "b.png").write_bytes(draw_png(SEVEN, size=90))
    dataset = load_folder(tmp_path / "set", tmp_path / "data", test_fraction=0.5)
    expected = prepare_image(tmp_path / "set" / "seven" / "a.png")
    assert any(np.array_equal(np.frombuffer(image, np.uint8).reshape(28, 28), expected)
               for _, image in everything(dataset))


def test_the_second_load_reads_the_cache_and_a_changed_picture_rebuilds_it(tmp_path, digits, monkeypatch):
    images, labels = digits
    root = write_folder(tmp_path / "pictures", images, labels)
    load_folder(root, tmp_path / "data")
    cache = tmp_path / "data" / "folder-cache"
    assert len(list(cache.glob("*.images.npy"))) == 1

    def no_preparing(path, prepare):
        raise AssertionError("prepared again")

    monkeypatch.setattr(folders, "read_picture", no_preparing)
    assert everything(load_folder(root, tmp_path / "data")) == as_set(images, labels)
    monkeypatch.undo()
    Image.fromarray(255 - images[0], mode="L").save(root / str(labels[0]) / "00000.png")  # another picture
    assert (labels[0], (255 - images[0]).tobytes()) in everything(load_folder(root, tmp_path / "data"))
    assert len(list(cache.glob("*.images.npy"))) == 2
    for damaged in cache.glob("*.images.npy"):
        damaged.write_bytes(b"")  # a damaged cache is prepared again, not trusted
    assert everything(load_folder(root, tmp_path / "data")) - as_set(images, labels) == \
        {(labels[0], (255 - images[0]).tobytes())}


def test_class_names_with_spaces_and_other_scripts_are_kept(tmp_path, digits):
    images, labels = digits
    names = ["zero", "one one", "двa", "三", "quatre", "cinq", "six", "sept", "huit", "neuf"]
    dataset = load_folder(write_folder(tmp_path / "p", images, labels, names), tmp_path / "data")
    assert dataset.classes == tuple(sorted(names))


def test_a_file_that_is_not_a_picture_is_skipped_with_its_name(tmp_path, digits, caplog):
    images, labels = digits
    root = write_folder(tmp_path / "p", images, labels)
    (root / "3" / "notes.txt").write_text("not a picture")
    (root / "3" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not the user's pictures
    with caplog.at_level(logging.WARNING):
        dataset = load_folder(root, tmp_path / "data")
    assert "skipped 3/notes.txt: not a picture Pillow reads" in caplog.text and "DS_Store" not in caplog.text
    assert len(everything(dataset)) == len(as_set(images, labels))


@pytest.mark.parametrize(("build", "message"), [
    (lambda root: None, "no such folder; --data takes mnist or a folder with one subfolder per class"),
    (lambda root: (root / "only").mkdir(parents=True), "at least two; found only 'only'"),
    (lambda root: [(root / name).mkdir(parents=True) for name in ("a", "b")], "the class 'a' has no pictures"),
])
def test_a_folder_that_is_not_a_dataset_is_one_line(tmp_path, build, message):
    build(tmp_path / "p")
    with pytest.raises(DataError, match=message) as error:
        load_dataset(str(tmp_path / "p"), tmp_path / "data")
    assert "\n" not in str(error.value)


def test_a_class_whose_every_file_was_skipped_stops_the_run(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "p", images[:20], labels[:20])
    (root / "broken").mkdir()
    (root / "broken" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="no usable picture in class 'broken'"):
        load_folder(root, tmp_path / "data")


def test_as_is_takes_28x28_pictures_only_and_makes_colour_grey(tmp_path, digits, caplog):
    images, labels = digits
    root = write_folder(tmp_path / "p", images[:40], labels[:40])
    Image.fromarray(np.stack([images[0]] * 3, axis=-1), mode="RGB").save(root / str(labels[0]) / "rgb.png")
    Image.new("L", (56, 56)).save(root / str(labels[1]) / "big.png")
    with caplog.at_level(logging.WARNING):
        dataset = load_folder(root, tmp_path / "data", prepare="as-is")
    assert "big.png: 56x56; --prepare as-is takes 28x28 pictures only" in caplog.text
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 41


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(DataError, match="prepare must be one of auto, mnist, as-is"):
        load_folder(tmp_path, prepare="sharpen")
    with pytest.raises(DataError, match="between 0 and 1"):
        load_folder(tmp_path, test_fraction=1.0)


def test_mismatched_train_and_test_classes_are_named(tmp_path, digits):
    images, labels = digits
    write_folder(tmp_path / "set" / "train", images, labels)
    write_folder(tmp_path / "set" / "test", images[labels < 5], labels[labels < 5])
    with pytest.raises(DataError, match="train/ has 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and test/ has 0, 1, 2, 3, 4$"):
        load_folder(tmp_path / "set", tmp_path / "data")


def test_a_picture_over_predicts_size_limit_is_skipped_unread(tmp_path, digits, caplog, monkeypatch):
    images, labels = digits
    root = write_folder(tmp_path / "p", images[:40], labels[:40])
    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", 50 * 50)  # the limit predict uses, made small to test
    monkeypatch.setattr("cnn_mnist.data.images.MAX_IMAGE_PIXELS", 50 * 50)
    Image.new("L", (60, 60), 255).save(root / str(labels[0]) / "huge.png")
    with caplog.at_level(logging.WARNING):
        dataset = load_folder(root, tmp_path / "data")
    assert f"skipped {labels[0]}/huge.png:" in caplog.text and "pixels" in caplog.text
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 40
