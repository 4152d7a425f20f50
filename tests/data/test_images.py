"""Image preparation: any picture of a digit -> the 28x28 MNIST pixels the network was trained on.

The images are real files written with Pillow: every format, sizes from 20x20 to 2000x1500, both
polarities, coloured and transparent paper, digits anywhere in the frame. Each must come out as
MNIST was made: white digit on black, 20 pixels on its longer side, centre of mass at (14, 14).
"""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers import draw_digit, encode
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw, ImageFile, ImageFilter

from cnn_mnist.data.images import MAX_IMAGE_PIXELS, as_mnist_pixels, prepare_image, prepare_pixels
from cnn_mnist.errors import ImageError, NoDigitError

BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def draw_seven(size=(280, 280), box=None, ink=BLACK, paper=WHITE, mode="RGB", pen=None) -> Image.Image:
    """A '7' (a bar and a diagonal: nothing symmetric about it) in ``box``, by default a 2:3 box
    in the middle of the canvas, 60% of its shorter side tall; the pen 12% of the box's height."""
    width, height = size
    digit_height = 0.6 * min(size)
    left, top = (width - digit_height * 2 / 3) / 2, (height - digit_height) / 2
    left, top, right, bottom = box or (left, top, left + digit_height * 2 / 3, top + digit_height)
    pen = pen or max(1, round(0.12 * (bottom - top)))
    stroke = [(left, top + pen / 2), (right, top + pen / 2), (left + 0.35 * (right - left), bottom)]
    return draw_digit([[(x / width, y / height) for x, y in stroke]], size=size, width=pen, ink=ink, paper=paper,
                      mode=mode)


def center_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    mass = pixels.astype(np.float64)
    rows, cols = np.indices(pixels.shape)
    return float((mass * rows).sum() / mass.sum()), float((mass * cols).sum() / mass.sum())


def assert_mnist_like(pixels: np.ndarray) -> None:
    """28x28 uint8, black paper, the ink's box 20 pixels on its longer side, centred by mass (a
    top-heavy 7 may then reach the bottom row, as some of MNIST's do)."""
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    rows, cols = np.nonzero(pixels)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert 19 <= max(height, width) <= 20, (height, width)
    row, col = center_of_mass(pixels)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1, (row, col)
    assert pixels.max() == 255  # full-strength ink, like MNIST's
    assert max(pixels[:3, :3].max(), pixels[:3, -3:].max(), pixels[-3:, :3].max(), pixels[-3:, -3:].max()) == 0


def assert_same_digit(a: np.ndarray, b: np.ndarray, mean_tolerance: float = 6.0) -> None:
    """Near-identical prepared images: mean absolute difference in 0-255 grey levels, allowing the
    one-pixel shift that centring by whole pixels gives when a centre of mass sits near x.5."""
    padded = np.pad(b.astype(np.int16), 1)
    difference = min(np.abs(a.astype(np.int16) - padded[1 + dy:29 + dy, 1 + dx:29 + dx]).mean()
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert difference <= mean_tolerance, difference


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return prepare_image(draw_seven())


# -- the output -----------------------------------------------------------------------------------


@pytest.mark.parametrize("format, options", [("PNG", {}), ("JPEG", {"quality": 75}), ("BMP", {}), ("GIF", {}),
                                             ("WEBP", {"quality": 80}), ("TIFF", {}), ("PPM", {})])
def test_every_format_gives_the_same_mnist_digit(format, options, reference, tmp_path):
    path = tmp_path / f"seven.{format.lower()}"
    path.write_bytes(encode(draw_seven(), format, **options))
    pixels = prepare_image(path)
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference)
    assert np.array_equal(prepare_image(path.read_bytes()), pixels)  # bytes and path agree
    assert np.array_equal(prepare_image(str(path)), pixels)


@pytest.mark.parametrize("size", [(20, 20), (28, 28), (64, 48), (300, 500), (2000, 1500)])
def test_any_size(size, reference):
    pixels = prepare_image(encode(draw_seven(size), "PNG"))
    assert_mnist_like(pixels)
    if min(size) >= 64:  # tiny originals are coarser, but still a 7 of the right size and place
        assert_same_digit(pixels, reference, mean_tolerance=8)


@pytest.mark.parametrize("ink, paper", [(BLACK, WHITE), (WHITE, BLACK), ((20, 30, 140), (250, 240, 190)),
                                        ((250, 220, 60), (30, 40, 110)), ((200, 0, 0), (210, 210, 210)),
                                        ((110, 110, 110), (240, 240, 240))])
def test_either_polarity_and_coloured_paper(ink, paper, reference):
    pixels = prepare_image(encode(draw_seven(ink=ink, paper=paper), "PNG"))
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference)


@pytest.mark.parametrize("box", [(8, 8, 68, 98), (200, 150, 260, 240), (10, 170, 70, 260)])
def test_a_digit_anywhere_in_the_frame(box, reference):
    pixels = prepare_image(encode(draw_seven(box=box), "PNG"))
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference)


def test_a_tall_narrow_digit_keeps_its_aspect_ratio():
    image = draw_digit([[(0.5, 0.1), (0.5, 0.9)]], size=200, width=16)  # a '1'
    pixels = prepare_image(image)
    rows, cols = np.nonzero(pixels)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 <= 3
    assert abs(center_of_mass(pixels)[1] - 14) <= 0.5


def test_mnist_digits_come_through_almost_unchanged():
    digit = prepare_image(draw_seven())
    again = prepare_pixels(digit)
    assert_same_digit(again, digit, mean_tolerance=3.0)


# -- modes, transparency, orientation, animation -------------------------------------------------


@pytest.mark.parametrize("ink", [BLACK, WHITE, (30, 60, 200)])
def test_transparent_background_takes_the_paper_that_shows_the_ink(ink, reference):
    image = draw_seven(mode="RGBA", ink=(*ink, 255), paper=(0, 0, 0, 0))  # ink on fully transparent
    pixels = prepare_image(encode(image, "PNG"))
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference)


def test_transparent_margins_around_an_opaque_page(reference):
    image = draw_seven(mode="RGBA", ink=(0, 0, 0, 255), paper=(250, 250, 250, 255))
    image.paste((0, 0, 0, 0), (0, 0, 280, 8))  # a transparent strip across the top
    pixels = prepare_image(encode(image, "PNG"))
    assert_same_digit(pixels, reference)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "I;16", "I", "F", "CMYK", "YCbCr"])
def test_any_pillow_mode(mode, reference):
    pixels = prepare_image(draw_seven().convert("L").convert(mode) if mode not in ("CMYK", "YCbCr", "PA")
                           else draw_seven().convert(mode if mode != "PA" else "P").convert(mode))
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference)


def test_sixteen_bit_png(reference):
    grey = np.asarray(draw_seven().convert("L"), dtype=np.uint16) * 257
    pixels = prepare_image(encode(Image.fromarray(grey), "PNG"))
    assert_same_digit(pixels, reference)


def test_cmyk_jpeg(reference):
    pixels = prepare_image(encode(draw_seven().convert("CMYK"), "JPEG", quality=90))
    assert_same_digit(pixels, reference)


def test_palette_gif_with_a_transparent_index(reference):
    image = draw_seven().convert("P")
    white = image.getpixel((0, 0))
    pixels = prepare_image(encode(image, "GIF", transparency=white))
    assert_same_digit(pixels, reference)


def test_animated_gif_reads_the_first_frame(reference):
    first, second = draw_seven(), draw_seven(box=(20, 20, 260, 60))  # the second is a bar, no 7
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert_same_digit(prepare_image(data), reference)


def test_exif_orientation_is_applied(reference):
    upright = draw_seven(size=(280, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    pixels = prepare_image(encode(stored, "JPEG", quality=90, exif=exif.tobytes()))
    assert_same_digit(pixels, prepare_image(upright))
    assert_same_digit(pixels, reference)


# -- photographs ---------------------------------------------------------------------------------


def test_uneven_light_and_noise_of_a_photographed_page(reference):
    rng = np.random.default_rng(0)
    grey = np.asarray(draw_seven(size=(400, 300)).convert("L"), dtype=np.float32)
    light = np.linspace(1.0, 0.55, 400)[None, :]  # the page darkens towards one side
    photo = np.clip(grey * light + rng.normal(0, 6, grey.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(photo).filter(ImageFilter.GaussianBlur(0.8))
    pixels = prepare_image(encode(image, "JPEG", quality=75))
    assert_mnist_like(pixels)
    assert_same_digit(pixels, reference, mean_tolerance=8)


def test_a_speck_of_dust_far_from_the_digit_is_ignored(reference):
    image = draw_seven(size=(400, 400))
    ImageDraw.Draw(image).rectangle((380, 385, 381, 386), fill=BLACK)
    assert_same_digit(prepare_image(image), prepare_image(draw_seven(size=(400, 400))), mean_tolerance=1)


# -- blank images --------------------------------------------------------------------------------


@pytest.mark.parametrize("image", [
    Image.new("RGB", (200, 150), WHITE),
    Image.new("L", (28, 28), 0),
    Image.new("RGB", (640, 480), (120, 130, 90)),
    draw_seven(ink=(250, 250, 250)),  # ink 2% darker than the paper
    draw_seven(size=(500, 500), pen=1, box=(250, 250, 252, 253)),  # a dot
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)),  # nothing but transparency
], ids=["white", "black", "grey", "faint", "dot", "transparent"])
def test_blank_images_have_no_digit(image):
    with pytest.raises(NoDigitError, match="no digit found"):
        prepare_image(encode(image, "PNG"))


def test_paper_noise_alone_is_no_digit():
    rng = np.random.default_rng(1)
    noise = np.clip(rng.normal(235, 5, (300, 300)), 0, 255).astype(np.uint8)
    with pytest.raises(NoDigitError, match="no digit found"):
        prepare_image(encode(Image.fromarray(noise), "JPEG", quality=75))


# -- files that are not images -------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds a few bytes of pixel data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("a shopping list, not a digit\n")
    with pytest.raises(ImageError, match=r"notes.txt: not an image \(readable formats: PNG, JPEG"):
        prepare_image(path)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(encode(draw_seven(), "PNG")[:300])
    with pytest.raises(ImageError, match="cut.png: cannot decode the image; the file is truncated or corrupt"):
        prepare_image(path)


def test_empty_file_bytes_missing_file_and_directory(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    for source, message in ((tmp_path / "empty.png", "empty.png: empty file"), (b"", "empty data"),
                            (tmp_path / "missing.png", "missing.png: file not found"),
                            (tmp_path, "cannot read the file")):
        with pytest.raises(ImageError, match=message):
            prepare_image(source)
    assert not issubclass(ImageError, NoDigitError)  # a broken file is never "blank"


@pytest.mark.parametrize("width, height", [(7_000, 7_000), (10_000, 10_000), (100_000, 100_000)])
def test_huge_declared_size_is_refused_before_decoding(width, height, monkeypatch):
    # 49 MP is over our limit, 100 MP over Pillow's warning, 10 GP over Pillow's error: all refused
    # from the header alone, never decoded.
    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert width * height > MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="megapixels"):
        prepare_image(png_header(width, height))


def test_the_pixel_limit_applies_to_pillow_images_too(monkeypatch):
    monkeypatch.setattr("cnn_mnist.data.images.MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="over the limit"):
        prepare_image(Image.new("L", (100, 100)))


# -- decoded pixels ------------------------------------------------------------------------------


def test_prepare_pixels_agrees_with_prepare_image():
    grey = np.asarray(draw_seven(size=(200, 160)).convert("L"))
    expected = prepare_image(encode(Image.fromarray(grey), "PNG"))
    assert np.array_equal(prepare_pixels(grey), expected)
    assert np.array_equal(prepare_pixels(grey.astype(np.float32) / 255), expected)
    assert np.array_equal(prepare_pixels(grey.astype(np.int64).tolist()), expected)  # JSON-like lists
    assert np.array_equal(prepare_pixels(np.repeat(grey[..., None], 3, axis=2)), expected)  # RGB
    assert_same_digit(prepare_pixels(grey < 128), expected)  # bool


def test_prepare_pixels_of_a_canvas_with_alpha():
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)  # a transparent canvas
    rgba[..., 3] = np.asarray(draw_seven().convert("L").point(lambda v: 255 - v))  # drawn in black
    assert_same_digit(prepare_pixels(rgba), prepare_image(draw_seven()))


def test_prepare_pixels_takes_784_values_for_28x28():
    digit = prepare_image(draw_seven())
    assert np.array_equal(prepare_pixels(digit.ravel()), prepare_pixels(digit))


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((3, 30, 30)), "is not an image"),
    (np.zeros((0, 5)), "is not an image"),
    (np.zeros(100), "is not an image"),
    (np.full((28, 28), np.nan), "NaN"),
    (np.full((28, 28), 7.0), "must lie in"),
    (np.full((28, 28), -1), "must lie in 0..255"),
    (np.array([["a", "b"]]), "expected numeric pixels"),
    ([[1, 2], [3]], "not an array of pixels"),
])
def test_prepare_pixels_rejects_what_is_not_an_image(pixels, message):
    with pytest.raises(ImageError, match=message):
        prepare_pixels(pixels)


def test_as_mnist_pixels_converts_without_preparing():
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[2:6, 2:6] = 200  # off-centre on purpose: it is left where it is
    assert np.array_equal(as_mnist_pixels(digit), digit)
    assert np.array_equal(as_mnist_pixels(digit.astype(np.float32) / 255), digit)
    assert np.array_equal(as_mnist_pixels(digit.ravel().tolist()), digit)
    with pytest.raises(ImageError, match="use prepare_pixels"):
        as_mnist_pixels(np.zeros((56, 56), dtype=np.uint8))


# -- hostile input -------------------------------------------------------------------------------

# No deadline: how long an example takes depends on the machine's load, not on the code under test.
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [encode(draw_seven((40, 32)), format) for format in ("PNG", "GIF", "BMP", "JPEG", "WEBP", "TIFF")]


def assert_valid_or_image_error(function, source) -> None:
    try:
        pixels = function(source)
    except ImageError:
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=4096) | st.builds(lambda magic, tail: magic + tail,
                                            st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"\xff\xd8\xff",
                                                             b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0", b"P5\n"]),
                                            st.binary(max_size=2048)))
def test_random_bytes_give_an_image_error_or_a_digit(data):
    assert_valid_or_image_error(prepare_image, data)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.floats(0.05, 1))
def test_damaged_image_files_give_an_image_error_or_a_digit(seed, flips, keep):
    data = bytearray(seed[:max(1, int(len(seed) * keep))])  # cut short ...
    for where, value in flips:  # ... and with bytes overwritten
        data[int(where * (len(data) - 1))] = value
    assert_valid_or_image_error(prepare_image, bytes(data))


@FUZZ
@given(hnp.arrays(st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]),
                  hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40)))
def test_random_arrays_give_an_image_error_or_a_digit(pixels):
    assert_valid_or_image_error(prepare_pixels, pixels)
