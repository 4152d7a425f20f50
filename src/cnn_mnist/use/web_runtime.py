"""ONNX Runtime Web, the runtime the static site runs its model on, at one pinned version.

Its three files (the JavaScript API, the WASM module's loader and the WASM module, 14.9 MB in
all) are copied into every site, so the page loads nothing from anywhere else. They come from
the package's npm tarball, downloaded once from the npm registry (or given as a file, for a
machine without a network), checked against the registry's SHA-512 and each file's SHA-256,
and kept in the default data directory.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import filelock

from cnn_mnist.data.download import default_data_dir
from cnn_mnist.errors import ExportError
from cnn_mnist.files import write_atomically

VERSION = "1.31.1"
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz"
# npm's dist.integrity of that tarball (`npm view onnxruntime-web@1.31.1 dist.integrity`)
TARBALL_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
# The WASM-only build (no WebGPU/WebGL: 54 KB of JavaScript instead of 370 KB) and its SIMD module,
# which runs threaded where the page is cross-origin isolated and on one thread elsewhere.
FILES = {
    "ort.wasm.min.js": "b8a78c408c40da65fdc8ba0846f7b2948e92a4c6d6b23cc8e4165e428ad95443",
    "ort-wasm-simd-threaded.mjs": "30ed0b5cd1182ede931fea448afb567d4dc705ec957af09f108a2be5f770dac3",
    "ort-wasm-simd-threaded.wasm": "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
}
DOWNLOAD_TIMEOUT_S = 60.0


def runtime_files(tarball: str | os.PathLike | None = None) -> dict[str, Path]:
    """The runtime's files by name, from the cache ($CNN_MNIST_DATA or ~/.cache/cnn_mnist, beside
    MNIST); filled first from ``tarball`` (npm's ``onnxruntime-web-1.31.1.tgz``) if given, else
    from the npm registry."""
    cache = default_data_dir() / f"onnxruntime-web-{VERSION}"
    cache.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(cache / ".lock"):
        data = None
        if tarball is not None:  # checked even when the cache is complete: a wrong file is an error
            data = _read_tarball(tarball)
            _check_integrity(data, str(tarball))
        if not all(_intact(cache / name, digest) for name, digest in FILES.items()):
            if data is None:
                data = _download()
                _check_integrity(data, TARBALL_URL)
            _extract(data, cache)
    return {name: cache / name for name in FILES}


def _intact(path: Path, digest: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _read_tarball(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as err:
        raise ExportError(f"--web-runtime {path}: cannot read it ({err.strerror or err}); give the file "
                          f"`npm pack onnxruntime-web@{VERSION}` writes") from None


def _download() -> bytes:
    request = urllib.request.Request(TARBALL_URL, headers={"User-Agent": "cnn-mnist (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise ExportError(f"cannot download ONNX Runtime Web {VERSION} from the npm registry ({reason}); where "
                          f"there is a network, run `npm pack onnxruntime-web@{VERSION}` and give the file with "
                          "--web-runtime") from None


def _check_integrity(data: bytes, source: str) -> None:
    algorithm, _, expected = TARBALL_INTEGRITY.partition("-")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != expected:
        raise ExportError(f"{source} is not onnxruntime-web-{VERSION}.tgz as the npm registry publishes it (its "
                          f"{algorithm} differs); download it again with `npm pack onnxruntime-web@{VERSION}`")


def _extract(data: bytes, cache: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name, digest in FILES.items():
            member = archive.extractfile(f"package/dist/{name}")
            content = member.read() if member is not None else b""
            if hashlib.sha256(content).hexdigest() != digest:  # the tarball's own hash held: a wrong pin here
                raise ExportError(f"onnxruntime-web-{VERSION}.tgz: dist/{name} is not the expected file")
            write_atomically(cache / name, lambda temp, content=content: temp.write_bytes(content))
