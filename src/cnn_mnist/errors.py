"""The package's own errors: each one is a problem the user can fix, told in one line.

The CLI prints ``cnn-mnist: error: <message>`` for these and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class CnnMnistError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class DataError(CnnMnistError):
    """A data file is missing, corrupt, or not what it claims to be."""


class IdxFormatError(DataError):
    """A file is not a valid IDX file of the expected kind."""


class DownloadError(DataError):
    """MNIST could not be fetched from any source."""


class CheckpointError(CnnMnistError):
    """No usable checkpoint: missing, corrupt, or from another model."""


class ModelDirLockedError(CnnMnistError):
    """Another live process is training in the same model directory."""


class NanLossError(CnnMnistError):
    """Training produced a NaN or infinite loss."""


class ConfigError(CnnMnistError):
    """A hyperparameter or option has an impossible value."""


class ImageError(DataError):
    """A file is not a readable image: unknown format, truncated, empty, or too large."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the package decodes (a decompression bomb's guard)."""


class NoDigitError(ImageError):
    """An image is blank or nearly blank: there is no digit to read."""


class ExportError(CnnMnistError):
    """A model could not be exported, or the exported file disagrees with the model."""


class ModelDirError(CnnMnistError):
    """A model directory is missing, is a file, or cannot be created."""


class OutputError(CnnMnistError):
    """An output path (a report folder, an export file) cannot be written."""


class ServeError(CnnMnistError):
    """The service cannot listen where it was asked to: a bad host, a port in use or out of range."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C while training. ``saved``: whether a checkpoint of ``global_step`` was written on the
    way out (one Ctrl-C), or the run stopped at once without one (a second Ctrl-C)."""

    def __init__(self, global_step: int, saved: bool):
        super().__init__(global_step, saved)
        self.global_step, self.saved = global_step, saved

    def sentence(self, again: str = "run the same command again") -> str:
        """What happened and how to resume, in one line; ``again``: how to run it again where the
        user is (the CLI's command, a notebook's cell)."""
        if self.saved:
            return (f"interrupted at global step {self.global_step}; a checkpoint of it was saved: {again} to "
                    "resume from it")
        return (f"aborted at global step {self.global_step} by a second Ctrl-C, without saving: the steps since "
                f"the newest checkpoint on disk are lost; {again} to resume from that checkpoint")


def install_hint(extra: str) -> str:
    """How to add an optional extra, fitted to how this copy of the package was installed: the
    make target in a clone's venv; otherwise a pip line for this Python that adds the extra to the
    same source (a clone, a wheel file, a Git URL), as pip recorded it in ``direct_url.json``."""
    import json
    import shlex
    import subprocess
    import sys
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    def command(*words: str) -> str:  # quoted for this system's shell
        return subprocess.list2cmdline(words) if sys.platform == "win32" else shlex.join(words)

    pip = (sys.executable, "-m", "pip", "install")
    try:
        recorded = metadata.distribution("cnn-mnist").read_text("direct_url.json")
    except metadata.PackageNotFoundError:  # run from a source tree on sys.path, not installed
        return f"install the '{extra}' extra: pip install -e \".[{extra}]\" in the clone"
    if not recorded:  # from a package index
        return f"install the '{extra}' extra: {command(*pip, f'cnn-mnist[{extra}]')}"
    source = json.loads(recorded)
    url = source.get("url", "")
    if "vcs_info" in source:
        vcs = source["vcs_info"]
        commit = f"@{vcs['commit_id']}" if vcs.get("commit_id") else ""
        where = f"#subdirectory={source['subdirectory']}" if source.get("subdirectory") else ""
        requirement = f"cnn-mnist[{extra}] @ {vcs.get('vcs', 'git')}+{url}{commit}{where}"
        return f"install the '{extra}' extra: {command(*pip, requirement)}"
    if source.get("dir_info", {}).get("editable"):
        clone = Path(url2pathname(urlparse(url).path))
        editable = command(*pip, "-e", f"{clone}[{extra}]")
        if Path(sys.prefix).resolve() == (clone / ".venv").resolve():
            return (f"install the '{extra}' extra: run 'make install' in {clone} (it installs every extra), or: "
                    f"{command(*pip, '-e', f'{clone}[{extra}]', '-c', str(clone / 'constraints.txt'))}")
        return f"install the '{extra}' extra: {editable}"
    return f"install the '{extra}' extra: {command(*pip, f'cnn-mnist[{extra}] @ {url}')}"
