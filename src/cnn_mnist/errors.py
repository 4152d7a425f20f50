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


def install_hint(extra: str) -> str:
    """How to add an optional extra in a clone of the repository (the package is not on PyPI)."""
    return (f"install the '{extra}' extra: run 'make install' in the clone (it installs every extra), or "
            f"'.venv/bin/pip install -e \".[{extra}]\" -c constraints.txt'")
