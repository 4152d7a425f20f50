"""Shared fixtures: a tiny synthetic MNIST (learnable in a few steps) and the small model the
modules that use a trained model share, trained once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from helpers import md5_check_skipped

from cnn_mnist.cli import main
from cnn_mnist.data import idx
from cnn_mnist.data.datasets import FILES, VALIDATION_SIZE

# Property tests draw the same examples on every run (a failure reproduces, and no run passes or
# fails by the luck of the draw) and have no per-example deadline (that would measure the load).
settings.register_profile("cnn_mnist", derandomize=True, deadline=None, database=None)
settings.load_profile("cnn_mnist")

TINY_TRAIN = VALIDATION_SIZE + 400  # the tutorial's split needs more than 5,000 training images
TINY_TEST = 300


def make_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 'digits': class c is a bright 6x6 square at its own place, over faint noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + 12 * (label // 5), 1 + 5 * (label % 5)
        images[i, row:row + 6, col:col + 6] = 255
    return images, labels


def write_mnist_dir(directory: Path, train: int = TINY_TRAIN, test: int = TINY_TEST) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("test", test, 2)):
        images, labels = make_digits(count, seed)
        images_name, labels_name = FILES[split]
        idx.write_images(directory / images_name, images)
        idx.write_labels(directory / labels_name, labels)
    return directory


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory) -> Path:
    """A data directory holding the four IDX files of a tiny synthetic MNIST (not MD5-valid)."""
    return write_mnist_dir(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture
def no_verify():
    """Let load_mnist and the CLI accept the synthetic files: skip the canonical-MD5 check."""
    with md5_check_skipped():
        yield


# The small model: `cnn-mnist train` on the tiny MNIST, as a user trains. Twenty Adam steps get
# every synthetic test digit right; the weight average is for export's metadata; no validation
# (5,000 images, that no test reads). Not the report's, which needs a model that makes mistakes.
SMALL_MODEL_STEPS = 20
SMALL_MODEL_TRAIN = ["--steps", str(SMALL_MODEL_STEPS), "--optimizer", "adam", "--ema-decay", "0.9",
                     "--eval-every", "0", "--log-probabilities-every", "0"]


def list_files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory``: its size and modification time."""
    return {str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, tiny_mnist_dir) -> Path:
    """The small model's directory, trained once per session: only to read (evaluate writes its
    event files there; a test that writes takes small_model_copy). The session's end checks that
    no test wrote into it."""
    model_dir = tmp_path_factory.mktemp("small_model") / "model"
    with md5_check_skipped(), torch.random.fork_rng():  # training seeds the global RNG
        assert main(["train", "-q", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                     *SMALL_MODEL_TRAIN]) == 0
    contents = list_files(model_dir)
    yield model_dir
    assert list_files(model_dir) == contents, "a test wrote into the shared small model: give it small_model_copy"


@pytest.fixture
def small_model_copy(small_model, tmp_path) -> Path:
    """A copy of the small model's directory, for a test to write into."""
    return Path(shutil.copytree(small_model, tmp_path / "small_model"))


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return tmp_path / "model"


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Training seeds torch's global RNG; keep tests independent of each other's order."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the slow tests (minutes each)")


def pytest_collection_modifyitems(config, items):
    gpu_device = gpu_test_device()
    if not gpu_device.startswith("cuda") or torch.cuda.is_available():
        no_gpu = None
    else:
        build = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
        no_gpu = pytest.mark.skip(reason=f"needs a CUDA GPU: {build}")
    slow = None if config.getoption("--run-slow") else pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        # The markers themselves: item.keywords also holds parameter ids (a device named "gpu").
        if slow and item.get_closest_marker("slow"):
            item.add_marker(slow)
        if no_gpu and item.get_closest_marker("gpu"):
            item.add_marker(no_gpu)


# The browser tests' Chromium: Debian's, headless (Playwright's own download is not used).
CHROMIUM = Path(os.environ.get("CNN_MNIST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def gpu_test_device() -> str:
    """Where the ``gpu`` tests run: CUDA, or the device CNN_MNIST_GPU_TEST_DEVICE names (``cpu``
    runs them here, to check the tests themselves; the CUDA-only checks then skip)."""
    return os.environ.get("CNN_MNIST_GPU_TEST_DEVICE", "cuda")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under `make test` (CNN_MNIST_REQUIRE_BROWSER=1) a browser test that skips has not passed:
    report it as failed, with the reason it gave for skipping."""
    report = yield
    if report.skipped and "browser" in item.keywords and os.environ.get("CNN_MNIST_REQUIRE_BROWSER") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a browser test may not skip under make test: {reason}"
    return report
