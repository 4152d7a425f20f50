"""Ensembles: several models' probabilities averaged, in the library and through the CLI."""

import json
import shutil

import numpy as np
import pytest
from conftest import SMALL_MODEL_STEPS, SMALL_MODEL_TRAIN
from helpers import md5_check_skipped, one_line_error

from cnn_mnist.cli import main
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import ConfigError
from cnn_mnist.use.ensemble import Ensemble
from cnn_mnist.use.predictor import Predictor


@pytest.fixture(scope="module")
def members(small_model, tmp_path_factory, tiny_mnist_dir):
    """Three models trained as the small model was, with seeds 0 (the small model, copied: evaluate
    writes into its directory), 1 and 2."""
    dirs = [shutil.copytree(small_model, tmp_path_factory.mktemp("member0") / "model")]
    with md5_check_skipped():
        for seed in (1, 2):
            model_dir = tmp_path_factory.mktemp(f"member{seed}")
            assert main(["train", "-q", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                         "--seed", str(seed), *SMALL_MODEL_TRAIN]) == 0
            dirs.append(model_dir)
    return dirs


@pytest.fixture(scope="module")
def test_split(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False).test


def test_the_ensemble_averages_its_members_probabilities(members, test_split):
    images = test_split.images[:50]
    ensemble = Ensemble(members).predict(images)
    each = [Predictor(d).predict(images).probabilities for d in members]
    np.testing.assert_allclose(ensemble.probabilities, np.mean(each, axis=0), atol=1e-6)
    np.testing.assert_array_equal(ensemble.classes, ensemble.probabilities.argmax(axis=1))
    np.testing.assert_allclose(ensemble.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_evaluation_scores_the_mean_and_each_member(members, test_split):
    results = Ensemble(members).evaluate(test_split.images, test_split.labels)
    mean = np.mean([Predictor(d).predict(test_split.images).probabilities for d in members], axis=0)
    labels = test_split.labels.numpy()
    assert results["accuracy"] == pytest.approx((mean.argmax(axis=1) == labels).mean())
    assert results["loss"] == pytest.approx(-np.log(mean[np.arange(len(labels)), labels]).mean(), rel=1e-4, abs=1e-7)
    assert [m["model_dir"] for m in results["members"]] == [str(d) for d in members]
    assert all(m["global_step"] == SMALL_MODEL_STEPS for m in results["members"])


def test_one_member_scores_as_evaluate_does(members, tiny_mnist_dir, no_verify, capsys):
    assert main(["evaluate", "--json", "-q", "--model-dir", str(members[0]), "--data-dir", str(tiny_mnist_dir)]) == 0
    single = json.loads(capsys.readouterr().out)
    test = load_mnist(tiny_mnist_dir, download=False).test
    alone = Ensemble(members[:1]).evaluate(test.images, test.labels)
    assert alone["accuracy"] == single["accuracy"]
    assert alone["loss"] == pytest.approx(single["loss"], rel=1e-4)


def test_cli_evaluate_and_predict_take_several_model_dirs(members, tiny_mnist_dir, no_verify, capsys):
    flags = [arg for d in members for arg in ("--model-dir", str(d))]
    assert main(["evaluate", "--json", "-q", *flags, "--data-dir", str(tiny_mnist_dir)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results["members"]) == 3 and 0 <= results["accuracy"] <= 1
    assert main(["predict", "--json", "-q", *flags, "--data-dir", str(tiny_mnist_dir), "0", "1"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["global_steps"] == [SMALL_MODEL_STEPS] * 3
    test = load_mnist(tiny_mnist_dir, download=False).test
    expected = Ensemble(members).predict(test.images[:2])
    assert [row["class"] for row in predicted["predictions"]] == expected.classes.tolist()


def test_a_member_named_twice_or_missing_is_a_one_line_error(members, tiny_mnist_dir, no_verify, capsys, tmp_path):
    with pytest.raises(ConfigError, match="named twice"):
        Ensemble([members[0], members[0]])
    err = one_line_error(capsys, ["evaluate", "--model-dir", str(members[0]), "--model-dir", str(tmp_path / "nope"),
                                  "--data-dir", str(tiny_mnist_dir)], "does not exist")
    assert err.startswith("cnn-mnist: error: model directory")
