"""examples/: each script runs as users run it (``python examples/NAME.py --steps N``, from the
clone's root and from another folder) and prints its evaluation; the tutorial's model function
computes what the package's does."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_mnist import Mode, cnn_model_fn
from cnn_mnist.model.network import ConvNet

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tutorial.py"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_no_example_shadows_the_package():
    # `python examples/X.py` puts examples/ first on sys.path: a cnn_mnist.py there hides the package
    assert EXAMPLES and not (ROOT / "examples" / "cnn_mnist.py").exists()
    assert not (ROOT / "examples" / "cnn_mnist").exists()


@pytest.mark.real_data
@pytest.mark.parametrize("where", ["root", "elsewhere"])
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_each_example_runs_as_users_run_it(script, where, tmp_path):
    cwd, path = (ROOT, f"examples/{script.name}") if where == "root" else (tmp_path, str(script))
    done = subprocess.run([sys.executable, path, "--steps", "20", "--model-dir", str(tmp_path / "model")],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = ast.literal_eval(done.stdout.strip().splitlines()[-1])  # the evaluation dict, as printed
    assert results["global_step"] == 20 and 0.1 <= results["accuracy"] <= 1 and results["loss"] > 0


def test_the_example_takes_whole_flags_only(tmp_path):
    # argparse's default would read --model as --model-dir and train into the folder named
    done = subprocess.run([sys.executable, str(EXAMPLE), "--model", str(tmp_path / "m")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "unrecognized arguments: --model" in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("tutorial_example", EXAMPLE)  # its functions, to compare
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", [Mode.EVAL, Mode.PREDICT])
def test_the_examples_model_function_is_the_packages(example, mode):
    network = ConvNet()
    images, labels = torch.rand(5, 784), torch.randint(0, 10, (5,))
    ours = example.cnn_model_fn(network, images, labels, mode)
    package = cnn_model_fn(network, images, labels, mode)
    torch.testing.assert_close(ours.predictions["probabilities"], package.predictions["probabilities"])
    if mode == Mode.EVAL:
        torch.testing.assert_close(ours.loss, package.loss)
        assert torch.equal(ours.eval_metrics["accuracy"], package.eval_metrics["accuracy"])


def test_the_example_trains_evaluates_and_prints(example, tiny_mnist_dir, no_verify, model_dir, capsys):
    results = example.main(steps=15, model_dir=model_dir, data_dir=tiny_mnist_dir)
    assert results["global_step"] == 15 and 0 <= results["accuracy"] <= 1
    assert "'global_step': 15" in capsys.readouterr().out
