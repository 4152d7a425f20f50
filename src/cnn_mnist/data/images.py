"""Real images to MNIST pixels: one preparation shared by the CLI, the HTTP service and the web page.

The ink is found against its paper (either polarity, uneven light), then the steps MNIST was made
with: the ink's bounding box scaled (anti-aliased) to 20 pixels on its longer side, placed in a
28x28 field with its centre of mass at the centre.
"""

from __future__ import annotations

import io
import os
import threading
import warnings

import numpy as np
import torch
from PIL import Image

from cnn_mnist.data import preparation
from cnn_mnist.data.preparation import IMAGE_SIZE, MIN_INK_CONTRAST, MIN_SIGNAL_TO_NOISE
from cnn_mnist.errors import ImageError, ImageTooLargeError, NoDigitError

MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused before they are decoded
# Larger images are box-averaged down to this before any float work: a digit needs far fewer
# pixels, and each float plane stays under 4 MB (decoding itself holds up to 4 bytes a pixel).
MAX_WORKING_SIDE = 1024
# Formats that announce themselves with a magic number. Pillow's header-less formats (TGA and
# others) would read random bytes as noise, and EPS would hand the file to Ghostscript.
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")  # JPEG includes cameras' MPO

_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {  # EXIF orientation -> the transpose that makes the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")
# warnings.catch_warnings swaps a process-wide filter list; one thread at a time in it keeps two
# from restoring each other's filters (it guards header and EXIF parsing only: microseconds).
_open_lock = threading.Lock()


def prepare_image(source: bytes | str | os.PathLike | Image.Image) -> np.ndarray:
    """An image file's bytes, its path or a Pillow image -> (28, 28) uint8, white digit on black.

    Raises ImageError when the source is not a readable image (naming the file), NoDigitError
    when it is blank or holds no mark large and dark enough to be a digit.
    """
    name = _name_of(source)
    grey, alpha = _decode(source, name)
    return _prepare(grey, alpha, name)


def prepare_pixels(pixels, name: str = "pixels") -> np.ndarray:
    """Decoded pixels of any size -> (28, 28) uint8, prepared exactly as ``prepare_image`` does.

    ``pixels``: (H, W) grey, (H, W, 3) RGB, (H, W, 4) RGBA or (H, W, 2) grey and alpha, or 784
    values for 28x28; uint8 or integers 0-255, uint16 0-65535, bool, or floats in [0, 1]. Either
    polarity, any framing: canvas drawings and photos alike. Raises ImageError or NoDigitError.
    """
    array = _as_unit_floats(pixels, name)
    if array.ndim == 1:
        array = array.reshape(IMAGE_SIZE, IMAGE_SIZE)
    if array.ndim == 3:
        channels = array.shape[2]
        alpha = array[..., -1] if channels in (2, 4) else None
        grey = array[..., :3] @ _LUMA if channels >= 3 else array[..., 0]
    else:
        grey, alpha = array, None
    if max(grey.shape) > MAX_WORKING_SIDE:
        size = _working_size(grey.shape[1], grey.shape[0])
        grey = _resize(grey, size, Image.Resampling.BOX)
        alpha = None if alpha is None else _resize(alpha, size, Image.Resampling.BOX)
    return _prepare(np.ascontiguousarray(grey, dtype=np.float32), alpha, name)


def as_mnist_pixels(pixels, name: str = "pixels") -> np.ndarray:
    """Pixels that are MNIST already (28x28 or 784, white digit on black, centred) -> (28, 28)
    uint8, checked and converted but not prepared. Anything a person drew or photographed should
    go through ``prepare_pixels`` instead."""
    array = _as_unit_floats(pixels, name)
    if array.shape not in ((IMAGE_SIZE * IMAGE_SIZE,), (IMAGE_SIZE, IMAGE_SIZE)):
        raise ImageError(f"{name}: shape {array.shape} is not 784 pixels or 28x28; use prepare_pixels "
                         "for images of other sizes")
    return _to_uint8(array.reshape(IMAGE_SIZE, IMAGE_SIZE))


# -- decoding ------------------------------------------------------------------------------------


def _name_of(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "image"


def _decode(source, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Any source -> grey and alpha (or None) as float32 in [0, 1], upright, at most MAX_WORKING_SIDE."""
    if isinstance(source, Image.Image):
        return _decode_image(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{name}: empty data; send the bytes of an image file (PNG, JPEG, BMP, GIF, WebP)")
        file = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            file = open(source, "rb")  # noqa: SIM115 -- closed below, also when Pillow fails
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found") from None
        except OSError as err:
            raise ImageError(f"{name}: cannot read the file ({err.strerror or err})") from None
    else:
        raise TypeError(f"prepare_image takes bytes, a path or a PIL image, not {type(source).__name__}")
    with file:
        try:
            empty = file.seek(0, io.SEEK_END) == 0
            file.seek(0)
        except OSError as err:  # a pipe or a device
            raise ImageError(f"{name}: cannot read the file ({err.strerror or err})") from None
        if empty:
            raise ImageError(f"{name}: empty file; expected an image (PNG, JPEG, BMP, GIF, WebP)")
        try:
            with _open_lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a damaged header's complaints: the error below says it
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(file, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLargeError(f"{name}: too many pixels (over {MAX_IMAGE_PIXELS // 1_000_000} megapixels); "
                             "scale it down first") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (readable formats: PNG, JPEG, BMP, GIF, WebP, TIFF, PPM)") from None
        except Exception as err:  # a format's header parser can raise many types on hostile bytes
            raise ImageError(f"{name}: not a readable image{_reason(err)}") from None
        with image:
            return _decode_image(image, name)


def _decode_image(image: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(f"{name}: {width}x{height} is over the limit of {MAX_IMAGE_PIXELS // 1_000_000} "
                         "megapixels; scale it down first")
    try:
        orientation = _orientation(image)
        working = _working_size(width, height)
        if image.format == "JPEG" and working != (width, height):
            image.draft("L", working)  # decode at 1/2, 1/4 or 1/8 scale straight from the JPEG
        image = _convert(image)
        if image.size != working:
            image = image.resize(_working_size(*image.size), Image.Resampling.BOX)  # area average
        if orientation in _ORIENTATIONS:
            image = image.transpose(_ORIENTATIONS[orientation])
        if image.mode == "LA":
            array = np.asarray(image, dtype=np.float32) / 255.0
            return np.ascontiguousarray(array[..., 0]), np.ascontiguousarray(array[..., 1])
        array = np.asarray(image, dtype=np.float32)
        return (array if image.mode == "F" else array / 255.0), None
    except ImageError:
        raise
    except Exception as err:  # truncated or corrupt data: OSError, SyntaxError, struct.error, ...
        raise ImageError(f"{name}: cannot decode the image; the file is truncated or corrupt{_reason(err)}") from None


def _orientation(image: Image.Image) -> int:
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like
            return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block only costs the orientation
        return 1


def _convert(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L", "LA" (transparency kept) or "F" (16- and 32-bit, scaled to [0, 1])."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        array = np.nan_to_num(np.asarray(image.convert("F") if mode.startswith("I;16") else image,
                                         dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        # Full scale is the smallest of 1, 255 and 65535 that holds the pixels (else their maximum).
        peak = float(array.max(initial=0))
        top = next((scale for scale in (1.0, 255.0, 65535.0) if peak <= scale), peak)
        array = np.clip(array, 0, top) / top
        return Image.fromarray(array, "F")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info
    if has_alpha:
        return image.convert("RGBA").convert("LA")
    if mode in ("1", "L", "P", "RGB"):
        return image.convert("L")
    return image.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV


def _working_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_WORKING_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0][:100] if str(err) else ""
    return f" ({text})" if text else ""


def _as_unit_floats(pixels, name: str) -> np.ndarray:
    """Validate an array's shape, dtype and range -> float32 in [0, 1]."""
    try:
        array = np.asarray(pixels)
    except (ValueError, TypeError) as err:
        raise ImageError(f"{name}: not an array of pixels{_reason(err)}") from None
    shape_ok = (array.ndim == 1 and array.size == IMAGE_SIZE * IMAGE_SIZE or array.ndim == 2
                or array.ndim == 3 and array.shape[2] in (1, 2, 3, 4))
    if not shape_ok or array.size == 0:
        raise ImageError(f"{name}: shape {array.shape} is not an image; expected (H, W), (H, W, 3) RGB, "
                         "(H, W, 4) RGBA, or 784 values")
    if array.size > MAX_IMAGE_PIXELS * (array.shape[2] if array.ndim == 3 else 1):
        raise ImageTooLargeError(f"{name}: over {MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down first")
    return unit_pixels(array, name)


def unit_pixels(array: np.ndarray, name: str, *, full_scale: float = 1.0) -> np.ndarray:
    """The one check of pixel values, wherever they come from (arrays here, .npy files, the
    service's JSON): numeric, finite and in range for their type -> float32 in [0, 1]. bool is
    0/1, uint8 0-255, uint16 0-65535, other integers must lie in 0..255, floats in
    [0, ``full_scale``] (1, or 255 for JSON's 0-255 numbers). Raises ImageError naming ``name``."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise ImageError(f"{name}: integer pixels must lie in 0..255 (got {array.min()}..{array.max()})")
        return array.astype(np.float32) / 255.0
    if array.dtype.kind != "f":
        raise ImageError(f"{name}: expected numeric pixels, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ImageError(f"{name}: pixels contain NaN or infinity")
    if array.min() < 0 or array.max() > full_scale:
        advice = "scale them, or send integers 0-255" if full_scale == 1 else "send values 0-255"
        raise ImageError(f"{name}: pixels must lie in [0, {full_scale:g}] (got {array.min():g}..{array.max():g}); "
                         f"{advice}")
    return (array / full_scale).astype(np.float32)


# -- preparation ---------------------------------------------------------------------------------


def _prepare(grey: np.ndarray, alpha: np.ndarray | None, name: str) -> np.ndarray:
    """Grey (and alpha) floats in [0, 1] at working size -> (28, 28) uint8 MNIST pixels, by the
    torch steps of ``preparation`` (the ones the web export runs in the browser)."""
    if alpha is not None and alpha.min() < 1:
        grey = _composite(grey, alpha)
    with torch.inference_mode():
        prepared = preparation.prepare(torch.from_numpy(np.array(grey, dtype=np.float32)))  # a writable copy
    contrast, noise = float(prepared.contrast), float(prepared.noise)
    if contrast < MIN_INK_CONTRAST or contrast < MIN_SIGNAL_TO_NOISE * noise:
        raise NoDigitError(f"{name}: no digit found (the image is blank or its ink too faint: "
                           f"{max(contrast, 0):.0%} contrast); write darker or larger")
    longest = int(prepared.longest)
    if longest < prepared.min_longest:
        raise NoDigitError(f"{name}: no digit found (only a mark {longest} pixels across in a "
                           f"{grey.shape[1]}x{grey.shape[0]} image); write larger")
    return prepared.pixels.numpy().astype(np.uint8)


def _border(array: np.ndarray) -> np.ndarray:
    """The pixels of a frame 2% of the shorter side wide (at least one pixel)."""
    width = max(1, round(0.02 * min(array.shape)))
    return np.concatenate([array[:width].ravel(), array[-width:].ravel(),
                           array[width:-width, :width].ravel(), array[width:-width, -width:].ravel()])


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the paper: where the surroundings are transparent the opaque
    pixels are the ink, and the paper is whatever contrasts with it; where they are opaque, the
    transparent pixels take the colour of the surrounding paper."""
    border_grey, border_alpha = _border(grey), _border(alpha)
    if np.median(border_alpha) < 0.5:
        weight = alpha.sum()
        ink = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
        paper = 1.0 if ink < 0.5 else 0.0
    else:
        paper = float(np.median(border_grey[border_alpha >= 0.5]))
    return grey * alpha + paper * (1.0 - alpha)


def _resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F").resize(size, resample))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
