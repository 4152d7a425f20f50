"""The steps that turn a drawing or a photo into MNIST pixels, in torch ops: one implementation
that Python runs eagerly (``images.prepare_image``) and that the web export traces into its ONNX
graph, so the browser prepares a drawing with exactly the steps (and the arithmetic) Python uses.

The ink is found against its paper (either polarity, uneven light), then the steps MNIST was made
with: the ink's bounding box scaled (anti-aliased) to 20 pixels on its longer side, placed in a
28x28 field with its centre of mass at the centre.

Everything that depends on the pixels stays a tensor (no ``.item()``, no Python branch on a
value): the bounding box, the scale and the centring are resampling matrices built from
comparisons, so the traced graph has fixed shapes for a fixed input size. What only depends on
the size (the paper's coarse grid) is computed in float64 as Pillow does and enters as constants.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE_SIZE = 28  # the field, as MNIST's
DIGIT_SIZE = 20  # the longer side of the digit's bounding box in the field
CENTER = 14.0  # where MNIST's centres of mass sit, in pixel indices (row, column)

PAPER_GRID_SIDE = 48  # the paper is estimated on a grid this coarse: light varies slowly
PAPER_WINDOW = 0.5  # ... as what is left after strokes narrower than half the image are filled in
MIN_INK_CONTRAST = 0.08  # ink that differs from the paper by less than 8% of full scale is no ink
MIN_SIGNAL_TO_NOISE = 6.0  # ... or by less than this many times the paper's own noise
INK_FLOOR = 0.2  # after normalising, ink fainter than 20% of the strongest is paper noise
BOX_TRIM = 0.002  # the bounding box leaves out this fraction of the ink on each side (dust, specks)
MIN_DIGIT_FRACTION = 0.025  # a mark smaller than 2.5% of the image's longer side is not a digit
MIN_DIGIT_PIXELS = 3


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` computed: the field and the figures that say whether it holds a digit.
    All tensors (0-d but ``pixels``), so a traced graph can return them as outputs."""

    pixels: torch.Tensor  # (28, 28) float32, whole numbers 0-255: white digit on black
    contrast: torch.Tensor  # the strongest ink's departure from the paper (0-1)
    noise: torch.Tensor  # the paper's own noise (a robust sigma)
    longest: torch.Tensor  # the ink box's longer side, in input pixels
    min_longest: float  # the smallest ``longest`` that is a digit at this input size

    @property
    def no_digit(self) -> torch.Tensor:
        """True where the image is blank, its ink too faint, or its mark too small."""
        faint = (self.contrast < MIN_INK_CONTRAST) | (self.contrast < MIN_SIGNAL_TO_NOISE * self.noise)
        return faint | (self.longest < self.min_longest)


def prepare(grey: torch.Tensor) -> Prepared:
    """Grey pixels (H, W) float32 in [0, 1], either polarity -> the 28x28 MNIST field."""
    ink, contrast, noise = _ink(grey)
    height, width = grey.shape
    top, bottom = _trimmed_span(ink.sum(dim=1), ink.sum())
    left, right = _trimmed_span(ink.sum(dim=0), ink.sum())
    rows, cols = bottom - top, right - left
    longest = torch.maximum(rows, cols)
    # A blank image gives an empty box; one pixel keeps the arithmetic finite (no_digit says it).
    rows, cols = rows.clamp(min=1), cols.clamp(min=1)
    scale = DIGIT_SIZE / torch.maximum(rows, cols)
    new_rows = torch.round(rows * scale).clamp(min=1)  # round half to even, as Python's round()
    new_cols = torch.round(cols * scale).clamp(min=1)
    shrink = scale < 1  # downscaling averages areas (MNIST's anti-aliasing); upscaling interpolates
    along_rows = _pillow_weights(height, top, rows, new_rows, shrink, outputs=IMAGE_SIZE)
    along_cols = _pillow_weights(width, left, cols, new_cols, shrink, outputs=IMAGE_SIZE)
    digit = (along_rows @ ink @ along_cols.T).clamp(0.0, 1.0)  # (28, 28), the digit at the top left
    digit = digit / torch.where(digit.max() > 0, digit.max(), torch.ones(()))
    field = _centre_by_mass(digit, new_rows, new_cols)
    pixels = torch.round(field.clamp(0.0, 1.0) * 255.0)
    return Prepared(pixels=pixels, contrast=contrast, noise=noise, longest=longest,
                    min_longest=max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(height, width)))


def grey_of_rgba(rgba: torch.Tensor) -> torch.Tensor:
    """(H, W, 4) uint8 RGBA (an opaque canvas) -> (H, W) float32 grey in [0, 1], with Pillow's
    integer luma (ITU-R 601-2, rounded as convert("L") rounds): every step is exact in float32."""
    rgb = rgba[..., :3].to(torch.float32)
    luma = rgb[..., 0] * 19595.0 + rgb[..., 1] * 38470.0 + rgb[..., 2] * 7471.0 + 32768.0  # < 2**24
    return torch.floor(luma / 65536.0) / 255.0


# -- the ink -------------------------------------------------------------------------------------


def _ink(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey pixels -> ink strength (0 on the paper, 1 at the digit's strongest, either polarity),
    the contrast and the paper's noise.

    Dark ink is measured as the fraction of the paper's light it absorbs, light ink (chalk, a
    screen) as the light it adds, each against the paper right under it, so that light falling
    off across a photographed page is not taken for ink.
    """
    level = _median(_border(grey))
    # Dark ink on light paper, or light ink on dark: the stronger departure from the paper is the ink.
    dark_ink = level - grey.min() >= grey.max() - level
    closing, opening = _paper(grey)
    paper = torch.where(dark_ink, closing, opening)
    signed = torch.where(dark_ink, (paper - grey) / paper.clamp(min=0.05), grey - paper)
    # The closing lifts the paper estimate by the noise it sees; the paper's median is the true zero.
    border = _border(signed)
    zero = _median(border)
    signed = signed - zero
    noise = 1.4826 * _median((border - zero).abs())  # robust sigma of the paper
    contrast = signed.max()
    floor = torch.maximum(INK_FLOOR * contrast, 3.0 * noise)
    # For a real digit contrast - floor >= contrast / 2; the clamp only keeps a blank image finite.
    ink = ((signed - floor) / (contrast - floor).clamp(min=1e-6)).clamp(0.0, 1.0)
    return ink, contrast, noise


def _border(array: torch.Tensor) -> torch.Tensor:
    """The pixels of a frame 2% of the shorter side wide (at least one pixel)."""
    width = max(1, round(0.02 * min(array.shape)))
    return torch.cat([array[:width].flatten(), array[-width:].flatten(),
                      array[width:-width, :width].flatten(), array[width:-width, -width:].flatten()])


def _median(values: torch.Tensor) -> torch.Tensor:
    """As numpy's median: the middle value, or the mean of the two middle ones."""
    ordered = torch.sort(values).values
    count = values.shape[0]
    return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2


def _paper(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's brightness under the ink for dark ink (a morphological closing) and for light
    ink (an opening), each of a coarse copy, which fills in strokes narrower than the window and
    keeps slow changes of light."""
    down_rows, down_cols, up_rows, up_cols = paper_matrices(*grey.shape)
    coarse = down_rows @ grey @ down_cols.T
    window = max(3, round(PAPER_WINDOW * max(coarse.shape)) | 1)  # odd
    closing = _min_filter(_max_filter(coarse, window), window)
    opening = _max_filter(_min_filter(coarse, window), window)
    return up_rows @ closing @ up_cols.T, up_rows @ opening @ up_cols.T


@functools.lru_cache(maxsize=16)
def paper_matrices(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The resampling weights to the paper's coarse grid and back, for one image size: rows down,
    columns down, rows up, columns up. Computed once a size, eagerly, so that a traced graph holds
    them as four float32 constants (216 KB at 280x280) rather than the float64 steps that made them."""
    grid_width, grid_height = _grid_size(width, height)
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable by a later export
        return (_resize_matrix(height, grid_height), _resize_matrix(width, grid_width),
                _resize_matrix(grid_height, height), _resize_matrix(grid_width, width))


def _max_filter(array: torch.Tensor, window: int) -> torch.Tensor:
    """Max over a window x window square; edge padding makes windows at the edge truncated."""
    padded = F.pad(array[None, None], (window // 2,) * 4, mode="replicate")
    # A square's max is the max of the column maxes: 2w comparisons a pixel instead of w*w (25x here).
    return F.max_pool2d(F.max_pool2d(padded, (window, 1), stride=1), (1, window), stride=1)[0, 0]


def _min_filter(array: torch.Tensor, window: int) -> torch.Tensor:
    return -_max_filter(-array, window)


def _grid_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, PAPER_GRID_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize_matrix(size: int, new: int) -> torch.Tensor:
    """(new, size) weights of Pillow's resize of a whole axis: box (area average) when shrinking,
    bilinear when growing (the identity at the same size)."""
    shrink = torch.tensor(new < size)
    return _pillow_weights(size, torch.tensor(0.0, dtype=torch.float64), torch.tensor(float(size), dtype=torch.float64),
                           torch.tensor(float(new), dtype=torch.float64), shrink, outputs=new)


def _pillow_weights(size: int, start: torch.Tensor, count: torch.Tensor, new: torch.Tensor, shrink: torch.Tensor,
                    outputs: int) -> torch.Tensor:
    """(outputs, size) float32 weights that take ``count`` pixels from ``start`` to ``new`` output
    pixels (rows at or past ``new`` are zero), with Pillow's coefficients (Resample.c's
    precompute_coeffs): the same float64 operations in the same order, so that where an edge of
    the box filter falls exactly on a pixel centre the same pixel is in or out as in Pillow."""
    f64 = torch.float64
    out = torch.arange(outputs, dtype=f64)[:, None]
    x = torch.arange(size, dtype=f64)[None, :] - start  # index inside the crop
    scale = count / new
    filter_scale = torch.clamp(scale, min=1.0)
    support = torch.where(shrink, 0.5, 1.0) * filter_scale  # box: 0.5, bilinear: 1
    centre = (out + 0.5) * scale
    # Pillow's window [int(centre - support + 0.5), int(centre + support + 0.5)), clipped to the crop.
    low, high = centre - support + 0.5, centre + support + 0.5
    window = (low < x + 1.0) & (x + 1.0 <= high) & (x >= 0) & (x < count) & (out < new)
    at = (x - centre + 0.5) * (1.0 / filter_scale)
    box = (at > -0.5) & (at <= 0.5)
    triangle = torch.clamp(1.0 - at.abs(), min=0.0)
    weights = (torch.where(shrink, box.to(f64), triangle) * window.to(f64)).to(torch.float32)
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


# -- the box, the scale, the centring -------------------------------------------------------------


def _trimmed_span(mass: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first and one-past-the-last index holding all but BOX_TRIM of ``mass`` on each side
    (numpy's searchsorted right and left, as counts)."""
    cumulative = torch.cumsum(mass, dim=0)
    first = (cumulative <= BOX_TRIM * total).sum().to(torch.float64)
    last = (cumulative < (1.0 - BOX_TRIM) * total).sum().to(torch.float64)
    return first, last + 1


def _centre_by_mass(digit: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Move the digit (at the field's top left, ``rows`` x ``cols``) so its centre of mass lands on
    (14, 14), by whole pixels as MNIST was; the shift is clamped so that no ink leaves the field."""
    index = torch.arange(IMAGE_SIZE, dtype=torch.float64)
    mass = digit.sum().to(torch.float64)  # the centre in float64, as numpy computed it
    row_mass, col_mass = digit.sum(dim=1).to(torch.float64), digit.sum(dim=0).to(torch.float64)
    row = torch.where(mass > 0, row_mass @ index / mass.clamp(min=1e-12), (rows - 1) / 2)
    col = torch.where(mass > 0, col_mass @ index / mass.clamp(min=1e-12), (cols - 1) / 2)
    # A symmetric digit's centre is a tie (x.5) that sums in another order (onnxruntime's, not
    # torch's) could tip by 1e-7 either way; snapped to 1/256 pixel, both round it the same way.
    row, col = torch.round(row * 256.0) / 256.0, torch.round(col * 256.0) / 256.0
    top = torch.minimum(torch.round(CENTER - row).clamp(min=0), IMAGE_SIZE - rows)
    left = torch.minimum(torch.round(CENTER - col).clamp(min=0), IMAGE_SIZE - cols)
    shift_rows = (index[:, None] - index[None, :] == top).to(torch.float32)  # field row i <- digit row i - top
    shift_cols = (index[:, None] - index[None, :] == left).to(torch.float32)
    return shift_rows @ digit @ shift_cols.T
