"""The package's layers, as pyproject.toml's import-linter contract states them: each may import the
ones below it, never one above (cli > experiment > use > training > model > data | kernels > files >
errors | progress | version > notebook). The contract is checked on the package, and shown to fail on a
wrong-way import. No two modules import each other, directly or through others (imports inside
functions included), also shown to fail."""

import ast
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


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` (a ``cnn_mnist`` folder) and the package modules it imports, at the
    top or inside a function; ``from a import b`` counts as importing ``a.b`` where that is a module."""
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(("cnn_mnist", *path.relative_to(package).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    imported.add(target)
        graph[name] = imported
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's strongly
    connected components of more than one module)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_two_modules_import_each_other():
    graph = import_graph(ROOT / "src" / "cnn_mnist")
    assert {"cnn_mnist.use.export", "cnn_mnist.use.web", "cnn_mnist.use.onnx_tracing"} <= set(graph)
    assert "cnn_mnist.use.onnx_tracing" in graph["cnn_mnist.use.web"]  # a lazy import inside a function counts
    assert import_cycles(graph) == []


def test_an_import_back_is_a_cycle(tmp_path):
    copy = tmp_path / "cnn_mnist"
    shutil.copytree(ROOT / "src" / "cnn_mnist", copy, ignore=shutil.ignore_patterns("__pycache__"))
    onnx_tracing = copy / "use" / "onnx_tracing.py"  # web imports it; importing web back closes a circle
    onnx_tracing.write_text(onnx_tracing.read_text() + "\n\ndef _site():\n    from cnn_mnist.use import web  # noqa\n")
    assert import_cycles(import_graph(copy)) == [["cnn_mnist.use.onnx_tracing", "cnn_mnist.use.web"]]
