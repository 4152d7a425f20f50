"""Windows and macOS, as far as a Linux machine can show them: the CLI with the POSIX-only module
``fcntl`` missing (as on Windows), run on paths with spaces and non-ASCII letters."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.data.download import default_data_dir


def cli_without_fcntl(*args, cwd):
    """``cnn-mnist ARGS`` in a fresh interpreter where ``import fcntl`` fails, as on Windows."""
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["fcntl"] = None  # an import of it now raises ImportError
        sys.argv = ["cnn-mnist", *{list(args)!r}]
        runpy.run_module("cnn_mnist", run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_package_imports_without_fcntl():
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['fcntl'] = None; import cnn_mnist; "
                           "from cnn_mnist.training.lock import ModelDirLock; import cnn_mnist.data.download"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.real_data
def test_download_train_and_predict_without_fcntl_on_paths_with_spaces_and_accents(tmp_path):
    data_dir, model_dir = tmp_path / "dätä dir", tmp_path / "mödel dir"
    image = tmp_path / "my digït 7.png"
    Image.fromarray(load_mnist().test.images[0].numpy()).save(image)  # a 7; fills the cache if it was empty

    done = cli_without_fcntl("download", "--json", "--data-dir", str(data_dir),
                             "--source-dir", str(default_data_dir()), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".")) == sorted(
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"])

    done = cli_without_fcntl("train", "--json", "-q", "--steps", "30", "--optimizer", "adam",
                             "--model-dir", str(model_dir), "--data-dir", str(data_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["global_step"] == 30

    done = cli_without_fcntl("train", "-q", "--steps", "30", "--model-dir", str(model_dir), "--data-dir",
                             str(data_dir), cwd=tmp_path)  # the lock is taken and given back again
    assert done.returncode == 0, done.stderr

    done = cli_without_fcntl("predict", "--json", str(image), "--model-dir", str(model_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["predictions"][0]["input"] == str(image)
    assert np.isclose(sum(answer["predictions"][0]["probabilities"]), 1, atol=1e-4)
