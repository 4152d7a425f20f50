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
