"""The package as a user installs it: the sdist and the wheel built from this checkout (each must
carry LICENSE, the page's static files and the C source), the wheel installed with its extras into
a fresh venv outside the clone, and every command run from another folder. A wheel that misses a
file fails here.

That venv also proves the dependency floors: every direct dependency, the extras' included, is
installed at exactly the lowest version pyproject.toml allows (each `name>=X` constrained to
`name==X`, the rest resolved as usual: what uv calls lowest-direct resolution), and the fast tests
run there, against the installed wheel. torch is the exception: its floor (2.6) was read off the
APIs the code calls, and the venv takes the release constraints.txt pins, as every install does.
(Users of a fresh `pip install` get the newest releases instead: the rest of the suite, in the
clone's venv, runs on those.) About 5 minutes here: 1 for the venv, 3 for the fast tests.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from PIL import Image

from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.data.download import default_data_dir

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as CI runs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.real_data  # download --source-dir copies the cached MNIST
PACKAGED = ("LICENSE", "cnn_mnist/use/templates/page.html.j2", "cnn_mnist/use/static/app.js",
            "cnn_mnist/use/static/app.css", "cnn_mnist/use/static/onnx-model.js",
            "cnn_mnist/use/templates/report.html.j2",
            "cnn_mnist/use/templates/report.css", "cnn_mnist/use/templates/prediction.html.j2",
            "cnn_mnist/kernels/cpu/csrc/pool_relu.c")
EXTRAS = "export,serve,robustness,notebook,docs,test"  # all of them: the fast tests need the test tools
# The fast tests: no real MNIST, no browser, nothing slow or GPU-only; not this file. Nor the two
# files that test torch's process handling (torchrun, kills at any moment: 110 s): they call no
# floored dependency that the tests kept here do not (filelock: tests/training/test_lock.py).
FAST = ["-m", "not real_data and not browser and not slow and not gpu", "--ignore", "tests/test_wheel.py",
        "--ignore", "tests/training/test_distributed.py", "--ignore", "tests/training/test_kill_resume.py"]


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Version]:
    """Each direct dependency's lowest allowed version: its one `>=` bound."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    found = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.name == project["name"]:  # the test extra naming the others
            continue
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lows) == 1, f"{line!r}: each dependency states its floor with one >="
        found[canonicalize_name(requirement.name)] = Version(lows[0])
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def user(dist, tmp_path_factory) -> dict:
    """A fresh venv with the wheel and its extras, and a folder outside the clone to work in."""
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    (wheel,) = dist.glob("*.whl")
    pins = home / "floors.txt"
    pins.write_text("".join(f"{name}=={version}\n" for name, version in floors().items() if name != "torch"))
    # pip byte-compiles as it installs, as for any user (~40 s here). Skipping that cost more where
    # PYTHONDONTWRITEBYTECODE is set (this project's machines): each of the fast tests' subprocesses
    # then recompiled torch in memory, ~2 s an import, 80 s over the run.
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-c", str(ROOT / "constraints.txt"), "-c", str(pins), f"{wheel}[{EXTRAS}]"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    work = home / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "CNN_MNIST_DATA")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {"bin": bin_dir, "work": work, "env": env, "data": work / "mnist", "model": work / "model"}


def run(user, *args, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(user["bin"] / "cnn-mnist"), *map(str, args)], cwd=user["work"], env=user["env"],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"cnn-mnist {' '.join(map(str, args))}: {done.stderr[-3000:]}"
    return done


def test_the_sdist_and_the_wheel_carry_every_file(dist):
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    in_wheel = zipfile.ZipFile(wheel).namelist()
    with tarfile.open(sdist) as archive:
        in_sdist = archive.getnames()
    for name in PACKAGED:
        assert any(path.endswith(name) for path in in_wheel), f"the wheel lacks {name}"
        assert any(path.endswith(name) for path in in_sdist), f"the sdist lacks {name}"


def test_the_installed_package_is_the_wheels_not_the_clones(user):
    done = subprocess.run([str(user["bin"] / "python"), "-c", "import cnn_mnist; print(cnn_mnist.__file__)"],
                          cwd=user["work"], env=user["env"], capture_output=True, text=True, timeout=120)
    location = Path(done.stdout.strip())
    assert done.returncode == 0 and user["bin"].parent in location.parents and ROOT not in location.parents


@pytest.fixture(scope="module")
def trained(user) -> dict:
    """MNIST copied in and a 30-step model, with the installed commands."""
    run(user, "download", "--data-dir", user["data"], "--source-dir", default_data_dir())
    result = json.loads(run(user, "train", "-q", "--json", "--steps", "30", "--model-dir", user["model"],
                            "--data-dir", user["data"]).stdout)
    digit = user["work"] / "digit.png"
    Image.fromarray(load_mnist().test.images[0].numpy()).save(digit)
    return {**user, "result": result, "digit": digit}


def test_every_command_from_another_folder(trained):
    user = trained
    assert "train" in run(user, "--help").stdout
    assert trained["result"]["global_step"] == 30
    evaluated = json.loads(run(user, "evaluate", "--json", "--model-dir", user["model"], "--data-dir",
                               user["data"]).stdout)
    assert evaluated == trained["result"]

    predicted = json.loads(run(user, "predict", "--json", user["digit"], "--model-dir", user["model"]).stdout)
    assert predicted["predictions"][0]["input"] == str(user["digit"])

    explained = json.loads(run(user, "explain", "--json", "0", "--model-dir", user["model"], "--data-dir",
                               user["data"], "--output", user["work"] / "explained").stdout)
    assert Path(explained["explanations"][0]["figure"]).is_file()

    for name in ("model.onnx", "model.safetensors"):
        run(user, "export", "--model-dir", user["model"], "--data-dir", user["data"], "--output", user["work"] / name)
        assert (user["work"] / name).stat().st_size > 13_000_000
    site = user["work"] / "site"  # no suffix: the static web site's folder
    run(user, "export", "--model-dir", user["model"], "--data-dir", user["data"], "--output", site)
    assert {"index.html", "model.json", "model.onnx", "static", "ort"} == {path.name for path in site.iterdir()}
    assert (site / "static" / "onnx-model.js").is_file() and (site / "ort" / "ort-wasm-simd-threaded.wasm").is_file()

    reported = run(user, "report", "--json", "--model-dir", user["model"], "--data-dir", user["data"]).stdout
    assert Path(json.loads(reported)["report"]).is_file()

    done = subprocess.run([str(user["bin"] / "python"), "-m", "pip", "check"], env=user["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_serve_answers_the_page_and_predict(trained):
    user = trained
    server = subprocess.Popen([str(user["bin"] / "cnn-mnist"), "serve", "--model-dir", str(user["model"]),
                               "--port", "0"], cwd=user["work"], env=user["env"], stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stderr], daemon=True).start()  # drains it
    try:
        url = None
        while url is None:  # the first lines: loading, then "Serving on http://127.0.0.1:PORT: ..."
            line = lines.get(timeout=120)  # queue.Empty fails the test rather than hanging it
            found = re.search(r"Serving on (http://[^\s:]+:\d+)", line)
            url = found and found.group(1)
        page = httpx.get(f"{url}/", timeout=60)
        assert page.status_code == 200 and "static/app.js" in page.text
        for name in ("app.js", "app.css"):
            assert httpx.get(f"{url}/static/{name}", timeout=60).status_code == 200
        answer = httpx.post(f"{url}/v1/predict", content=user["digit"].read_bytes(),
                            headers={"content-type": "image/png"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["class"] in range(10)
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C stops it
        try:
            assert server.wait(timeout=60) == 0
        finally:
            server.kill()  # no-op once it has exited
            server.wait()


def test_every_dependency_is_at_its_floor(user):
    freeze = subprocess.run([str(user["bin"] / "python"), "-m", "pip", "list", "--format", "freeze"],
                            capture_output=True, text=True, check=True, timeout=300).stdout.split()
    installed = {canonicalize_name(name): Version(version) for name, version in (line.split("==") for line in freeze)}
    wanted = {name: version for name, version in floors().items() if name != "torch"}
    assert {"numpy", "filelock", "onnxruntime", "fastapi", "scikit-image", "mkdocs"} <= set(wanted)
    assert {name: installed.get(name) for name in wanted} == wanted


def test_the_fast_tests_pass_on_the_wheel_with_every_dependency_at_its_floor(user):
    done = subprocess.run([str(user["bin"] / "python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FAST],
                          cwd=ROOT, env=user["env"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
