"""The package's layers, as pyproject.toml's import-linter contract states them: each may import the
ones below it, never one above (cli > experiment > use > training > model > data | kernels > files >
errors | progress | version > notebook). The contract is checked on the package, and shown to fail on a
wrong-way import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = ("data", "model", "training", "kernels", "use")


def lint_imports(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess:
    """import-linter on the ``cnn_mnist`` found in ``package_parent``, with the project's contract."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_package_keeps_its_layers():
    result = lint_imports(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "wrong_way"), [
    ("data/idx.py", "from cnn_mnist.training import checkpoints"),  # data may not reach up to training
    ("kernels/devices.py", "from cnn_mnist.model import network"),  # kernels sit below the model
    ("use/report.py", "from cnn_mnist import experiment"),  # using a model may not import the main job
    ("training/estimator.py", "from cnn_mnist import cli"),  # nothing imports the CLI
    ("notebook.py", "from cnn_mnist import errors"),  # the bottom layer imports none of the package
])
def test_a_wrong_way_import_breaks_the_contract(tmp_path, module, wrong_way):
    copy = tmp_path / "src" / "cnn_mnist"
    shutil.copytree(ROOT / "src" / "cnn_mnist", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = copy / module
    target.write_text(target.read_text() + f"\n{wrong_way}  # noqa\n")
    result = lint_imports(tmp_path / "src", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout


def test_each_layer_says_what_lives_there_and_what_it_may_import():
    for layer in LAYERS:
        doc = (ROOT / "src" / "cnn_mnist" / layer / "__init__.py").read_text()
        assert doc.startswith('"""') and "import" in doc.split('"""')[1], layer
