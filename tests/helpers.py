"""What several test modules share besides fixtures: the check of a one-line CLI error, a digit
drawn with Pillow, the tiny synthetic MNIST accepted without its canonical MD5s, and a user's own
TF32 settings."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence

import pytest
import torch
from PIL import Image, ImageDraw

from cnn_mnist.cli import main

# Strokes are polylines in fractions of the canvas's width and height.
Strokes = Sequence[Sequence[tuple[float, float]]]

SEVEN: Strokes = (((0.2, 0.2), (0.8, 0.2), (0.45, 0.85)),)  # a bar and a diagonal: nothing symmetric
ONE: Strokes = (((0.5, 0.15), (0.5, 0.85)),)


def one_line_error(capsys, argv: list[str], expected: str, status: int = 1) -> str:
    """Run the CLI on ``argv``: it must exit with ``status`` and say ``expected`` on one line of
    stderr, with no traceback. Returns that line."""
    try:
        actual = main(argv)
    except SystemExit as exit_info:  # the parser's errors: status 2
        actual = exit_info.code
    err = capsys.readouterr().err.strip()
    assert actual == status, err
    assert len(err.splitlines()) == 1 and err.startswith("cnn-mnist: ") and "Traceback" not in err, err
    assert expected in err, err
    return err


def draw_digit(strokes: Strokes, size: int | tuple[int, int] = 140, width: int = 14, ink=0, paper=255,
               mode: str = "L") -> Image.Image:
    """``strokes`` drawn with a round pen ``width`` pixels wide on a canvas of ``size`` (a side, or
    width and height) in Pillow's ``mode``."""
    canvas = (size, size) if isinstance(size, int) else size
    image = Image.new(mode, canvas, paper)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        draw.line([(x * canvas[0], y * canvas[1]) for x, y in stroke], fill=ink, width=width, joint="curve")
    return image


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    """The image's file in ``format`` (Pillow's name, with its save options)."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def draw_png(strokes: Strokes, **drawing) -> bytes:
    """A drawing (draw_digit's arguments) as PNG bytes."""
    return encode(draw_digit(strokes, **drawing))


# The tiny synthetic MNIST's files are not the real ones, so their MD5s never match and
# ensure_mnist would download MNIST over them. With every file's check passed it uses them as they
# are (and still checks the rest: --source-dir, a data directory that is a file). This line does
# it in a `python -c` program; md5_check_skipped in this process.
SKIP_MD5_CHECK = "import cnn_mnist.data.download; cnn_mnist.data.download.verify_file = lambda path, md5: True"


@contextlib.contextmanager
def md5_check_skipped() -> Iterator[None]:
    """Inside, ensure_mnist takes any file as verified (SKIP_MD5_CHECK); the no_verify fixture is
    this for one test, and a module- or session-scoped fixture uses it around its own work."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cnn_mnist.data.download.verify_file", lambda path, md5: True)
        yield


def tf32_flags() -> dict[str, object]:
    """cuDNN's convolution and cuBLAS's product settings for fp32, as torch reports them (torch
    2.9+ names them fp32_precision; older torch, allow_tf32)."""
    backends = torch.backends
    if hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision"):
        return {"conv": backends.cudnn.conv.fp32_precision, "matmul": backends.cuda.matmul.fp32_precision}
    return {"conv": backends.cudnn.allow_tf32, "matmul": backends.cuda.matmul.allow_tf32}


@contextlib.contextmanager
def tf32_allowed() -> Iterator[dict[str, object]]:
    """Inside, a user has allowed TF32 everywhere (not torch's default for products, so a change is
    seen); torch's own settings afterwards. Yields the flags as set."""
    backends, found = torch.backends, tf32_flags()
    new_api = hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision")
    conv, matmul = ("tf32", "tf32") if new_api else (True, True)
    attribute = "fp32_precision" if new_api else "allow_tf32"
    setattr(backends.cudnn.conv if new_api else backends.cudnn, attribute, conv)
    setattr(backends.cuda.matmul, attribute, matmul)
    try:
        yield tf32_flags()
    finally:
        setattr(backends.cudnn.conv if new_api else backends.cudnn, attribute, found["conv"])
        setattr(backends.cuda.matmul, attribute, found["matmul"])
