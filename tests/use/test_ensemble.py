"""Ensembles: several models' probabilities averaged, in the library and through the CLI."""

import json

import numpy as np
import pytest

from cnn_mnist.cli import main
from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.errors import ConfigError
from cnn_mnist.use.ensemble import Ensemble
from cnn_mnist.use.predictor import Predictor

FAST = ["--steps", "15", "--optimizer", "adam", "--log-probabilities-every", "0", "--eval-every", "0", "-q"]


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_mnist_dir):
    import cnn_mnist.data.datasets

    original = cnn_mnist.data.datasets.ensure_mnist
    cnn_mnist.data.datasets.ensure_mnist = lambda data_dir, **kw: data_dir  # the synthetic files skip the MD5 check
    try:
        dirs = []
        for seed in (0, 1, 2):
            model_dir = tmp_path_factory.mktemp(f"member{seed}")
            assert main(["train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                         "--seed", str(seed), *FAST]) == 0
            dirs.append(model_dir)
    finally:
        cnn_mnist.data.datasets.ensure_mnist = original
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
    assert all(m["global_step"] == 15 for m in results["members"])


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
    assert predicted["global_steps"] == [15, 15, 15]
    test = load_mnist(tiny_mnist_dir, download=False).test
    expected = Ensemble(members).predict(test.images[:2])
    assert [row["class"] for row in predicted["predictions"]] == expected.classes.tolist()


def test_a_member_named_twice_or_missing_is_a_one_line_error(members, tiny_mnist_dir, no_verify, capsys, tmp_path):
    with pytest.raises(ConfigError, match="named twice"):
        Ensemble([members[0], members[0]])
    assert main(["evaluate", "--model-dir", str(members[0]), "--model-dir", str(tmp_path / "nope"),
                 "--data-dir", str(tiny_mnist_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cnn-mnist: error: model directory") and "does not exist" in err[-1]
