"""Data augmentation on the fly: each training image randomly rotated, scaled, sheared, shifted
and, optionally, elastically distorted, in one resampling pass per batch; then, optionally, its
pen made wider or narrower or its strokes hollow, a patch of it erased, its paper greyed, its
ink faded and noise added.

All five become one sampling grid (an affine map, plus a smooth random displacement field for
the elastic part) and one bilinear ``grid_sample``, so a batch of 128 costs about 0.25 ms here
(0.4 ms with elastic) against ~21 ms for its training step (``benchmarks/augment_speed.py``);
the damage ingredients after it, computed for every image, cost several times that.
The random numbers come from a generator the caller seeds per batch, so an augmented run
resumes bit for bit like an unaugmented one. Everything runs on the batch's device (the
generator's must match), so on a GPU augmentation adds kernels, not host work.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from cnn_mnist.errors import ConfigError

SIZE = 28
ELASTIC_GRID = 7  # the random displacement is drawn on a 7x7 grid (every 4 px) and smoothed up to 28x28
ERASE_MIN_AREA = 0.02  # random erasing's smallest rectangle (Zhong et al., 2017), as a share of the image
ERASE_PROBABILITY = 0.5  # and the share of images that get one


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms; each is drawn uniformly in [-x, x], per image. 0 = off."""

    rotation: float = field(default=0.0, metadata={"metavar": "DEG"})
    """Rotate each training image by a random angle in +-DEG."""
    scale: float = field(default=0.0, metadata={"metavar": "F"})
    """Resize each training image by a random factor in 1 +- F: 0.1 draws sizes in [0.9, 1.1]."""
    shear: float = field(default=0.0, metadata={"metavar": "DEG"})
    """Shear each training image by a random angle in +-DEG."""
    shift: float = field(default=0.0, metadata={"metavar": "PX"})
    """Move each training image by up to +-PX pixels on each axis."""
    elastic: float = field(default=0.0, metadata={"metavar": "PX"})
    """Elastic distortion: move every pixel of each training image by a smooth random displacement, its standard
    deviation PX pixels."""
    brightness: float = field(default=0.0, metadata={"metavar": "B"})
    """Add a grey background (a uniform grey paper) of a random level in [0, B] to each training image."""
    contrast: float = field(default=0.0, metadata={"metavar": "C"})
    """Make each training image's ink fainter by a random factor in [1 - C, 1]."""
    noise: float = field(default=0.0, metadata={"metavar": "S"})
    """Add Gaussian pixel noise to each training image, its standard deviation drawn in [0, S]."""
    stroke: float = field(default=0.0, metadata={"metavar": "PX"})
    """Pen width: thicken or thin each training image's strokes by up to PX of a pixel per side, a blend toward its
    3x3 dilation or erosion; at most 1."""
    erase: float = field(default=0.0, metadata={"metavar": "A"})
    """Random erasing: half the training images get a rectangle of a random grey, its area drawn in [0.02, A] of the
    image (A at most 0.5) and its sides in a ratio between 1:3 and 3:1."""
    outline: float = field(default=0.0, metadata={"metavar": "S"})
    """Replace this share of the training images, drawn at random, by their strokes' outline, the 3x3 dilation less
    the erosion: hollow strokes, as outline fonts and edge detection draw a digit."""
    clean_share: float = field(default=0.0, metadata={"metavar": "S"})
    """Leave this share of the training images, drawn at random, without the pen, outline, erasing, brightness,
    contrast and noise changes (the geometric ones still apply), so the network keeps seeing clean digits."""

    damage_from_epoch: float = field(default=0.0, metadata={"metavar": "E"})
    """Start the pen, outline, erasing, brightness, contrast and noise changes after this many epochs of training
    data: the network learns clean digits first."""
    # As detectors such as YOLOX end without their strongest augmentation: the last steps, and the weight average,
    # then tune the network to clean digits.
    damage_until_epoch: float = field(default=0.0, metadata={"metavar": "E"})
    """Stop those changes after this many epochs of training data (the geometric ones go on): the network ends on
    clean digits; 0 never stops them."""

    def __post_init__(self):
        for setting in fields(self):
            value = getattr(self, setting.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"augmentation {setting.name} must be a finite number >= 0, got {value!r}")
        if self.scale >= 1:
            raise ConfigError(f"augmentation scale must be below 1 (sizes 1 +- scale), got {self.scale}")
        for name, most in (("brightness", 1), ("contrast", 1), ("stroke", 1), ("erase", 0.5), ("outline", 1)):
            if getattr(self, name) > most:
                raise ConfigError(f"augmentation {name} must be at most {most}, got {getattr(self, name)}")
        if self.clean_share >= 1:
            raise ConfigError(f"augmentation clean_share must be below 1, got {self.clean_share}")
        if self.damage_until_epoch and self.damage_until_epoch <= self.damage_from_epoch:
            raise ConfigError(f"augmentation damage_until_epoch ({self.damage_until_epoch}) must be 0 (never) or "
                              f"after damage_from_epoch ({self.damage_from_epoch})")
        if 0 < self.erase < ERASE_MIN_AREA:
            raise ConfigError(f"augmentation erase must be 0 (off) or at least {ERASE_MIN_AREA}, got {self.erase}")

    def damages_at(self, epochs: float) -> bool:
        """Whether the damage ingredients apply to a batch starting ``epochs`` into the training data."""
        return self.damage_from_epoch <= epochs and (not self.damage_until_epoch or epochs < self.damage_until_epoch)

    @property
    def damages(self) -> bool:
        """Whether any damage ingredient is on (the pen, outline, erasing, brightness, contrast, noise)."""
        return any((self.stroke, self.outline, self.erase, self.brightness, self.contrast, self.noise))

    def __bool__(self) -> bool:
        return any(getattr(self, setting.name) for setting in fields(self)
                   if setting.name not in ("clean_share", "damage_from_epoch", "damage_until_epoch"))


def affine_grid(theta: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) affine maps -> (N, 2, 28, 28) sampling coordinates (x, then y) of every output
    pixel: ``F.affine_grid`` with ``align_corners=False``, but laid out channels first.

    One (2N x 3) by (3 x 784) matrix product: 0.08 ms for a batch of 128 here, where
    ``F.affine_grid``'s batched product with its 3-wide matrices cost 0.5 ms.
    """
    return (theta.reshape(-1, 3) @ _pixels(theta.dtype, theta.device)).reshape(len(theta), 2, SIZE, SIZE)


@functools.cache
def _pixels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, 784): x, y and 1 for every pixel centre, in [-1, 1] (built once per device: 5% of a batch's work)."""
    centres = torch.linspace(-1.0, 1.0, SIZE, dtype=dtype) * ((SIZE - 1) / SIZE)
    x, y = centres.expand(SIZE, SIZE), centres[:, None].expand(SIZE, SIZE)
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.ones(SIZE * SIZE, dtype=dtype)]).to(device)


def smooth_upsample(coarse: torch.Tensor) -> torch.Tensor:
    """(..., 7, 7) -> (..., 28, 28): ``F.interpolate(mode="bicubic")``, which is separable, as two
    products with the 28x7 matrix that resizes each unit vector: 0.09 ms for 128 two-channel
    fields here against 0.6 ms for ``F.interpolate``."""
    resize = _bicubic_resize(coarse.dtype, coarse.device)
    return resize.T @ coarse @ resize


@functools.cache
def _bicubic_resize(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(7, 28): row i is unit vector i resized bicubically to 28 (built once per device, on the CPU)."""
    unit = torch.eye(ELASTIC_GRID, dtype=dtype).reshape(ELASTIC_GRID, 1, 1, ELASTIC_GRID)
    resize = F.interpolate(unit, size=(1, SIZE), mode="bicubic", align_corners=False).reshape(ELASTIC_GRID, SIZE)
    return resize.to(device)


def augment(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator,
            damage: bool = True) -> torch.Tensor:
    """(N, 28, 28) or (N, 1, 28, 28) uint8 or [0, 1] float -> (N, 1, 28, 28) float in [0, 1], transformed.

    ``damage=False`` applies (and draws) the geometric ingredients only: the batches before
    ``damage_from_epoch``."""
    n = len(images)
    x = images.reshape(n, 1, SIZE, SIZE)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    u = torch.rand(n, 5, generator=generator, device=x.device).mul_(2).sub_(1)  # uniform in [-1, 1]
    angle = math.radians(augmentation.rotation) * u[:, 0]
    scale = 1.0 + augmentation.scale * u[:, 1]
    shear = math.tan(math.radians(augmentation.shear)) * u[:, 2]
    shift = augmentation.shift * (2.0 / SIZE) * u[:, 3:5]  # pixels -> grid units of [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Where each output pixel samples the input: rotation, shear and scale, then shift. The ranges
    # are symmetric, so whether this is the transform or its inverse changes nothing.
    theta = torch.stack([torch.stack([cos, cos * shear - sin, shift[:, 0]], 1),
                         torch.stack([sin, sin * shear + cos, shift[:, 1]], 1)], 1)
    if augmentation.rotation or augmentation.scale or augmentation.shear or augmentation.shift or augmentation.elastic:
        grid = affine_grid(theta)
        if augmentation.elastic:
            coarse = torch.randn(n, 2, ELASTIC_GRID, ELASTIC_GRID, generator=generator, device=x.device)
            grid.add_(smooth_upsample(coarse), alpha=augmentation.elastic * 2.0 / SIZE)
        grid = grid.permute(0, 2, 3, 1)  # (N, 28, 28, 2), as grid_sample wants it; a view, no copy
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)
    # else the identity map: resampling would cost ~0.2 ms a batch and move pixels by ~1e-7
    if not damage:
        return x
    damaged = _damage(x, augmentation, generator)
    if augmentation.clean_share and augmentation.damages:
        keep = torch.rand(n, 1, 1, 1, generator=generator, device=x.device) < augmentation.clean_share
        damaged = torch.where(keep, x, damaged)
    return damaged


def augment_views(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """(N, 28, 28) or (N, 1, 28, 28) -> (N, 2, 1, 28, 28): each image's geometric view and the same
    view damaged, for a consistency loss (``ModelParams.consistency``); ``clean_share`` plays no
    part, as the clean view is always there. The same draws as ``augment`` up to the clean share."""
    clean = augment(images, augmentation, generator, damage=False)
    return torch.stack([clean, _damage(clean, augmentation, generator)], 1)


def views_as_batch(views: torch.Tensor) -> torch.Tensor:
    """(N, V, 1, 28, 28) views -> (V * N, 1, 28, 28), view after view, for one pass of the network
    (a copy: the views of an image sit side by side in memory)."""
    return views.transpose(0, 1).flatten(0, 1)


def _damage(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """The pen, outline, erasing, brightness, contrast and noise ingredients on every image of ``x``
    (itself if none is on)."""
    n = len(x)
    photometric = augmentation.brightness or augmentation.contrast or augmentation.noise
    # Each ingredient's random numbers are drawn only when it is on, in the order the ingredients
    # were added, so a recipe without the newer ones draws (and trains) exactly as before.
    if photometric:
        v = torch.rand(n, 3, 1, 1, generator=generator, device=x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device) if augmentation.noise else None
    if augmentation.stroke:
        x = _pen_width(x, augmentation.stroke * torch.rand(n, 1, 1, 1, generator=generator, device=x.device)
                       .mul_(2).sub_(1))
    if augmentation.outline:
        hollow = torch.rand(n, 1, 1, 1, generator=generator, device=x.device) < augmentation.outline
        x = torch.where(hollow, _outline(x), x)
    if augmentation.erase:
        x = _erase(x, augmentation.erase, generator)
    if photometric:
        x = x * (1.0 - augmentation.contrast * v[:, 0:1])
        x = x + augmentation.brightness * v[:, 1:2]
        if noise is not None:
            x = x + noise * (augmentation.noise * v[:, 2:3])
        x = x.clamp_(0.0, 1.0)
    return x


def _pen_width(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Blend each image toward its 3x3 dilation (``amount`` > 0: thicker strokes) or erosion (< 0:
    thinner), ``amount`` (N, 1, 1, 1) in [-1, 1]: a pen up to a pixel wider or narrower each side."""
    target = torch.where(amount > 0, _dilate(x), _erode(x))
    return torch.lerp(x, target, amount.abs())


def _outline(x: torch.Tensor) -> torch.Tensor:
    """The morphological gradient: ink where a stroke's edge is, none inside it or outside (a
    stroke 4 px wide becomes two lines 2 px wide)."""
    return _dilate(x) - _erode(x)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _erode(x: torch.Tensor) -> torch.Tensor:
    return -F.max_pool2d(-x, 3, stride=1, padding=1)


def _erase(x: torch.Tensor, most: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing: with probability ERASE_PROBABILITY, a rectangle of area in [2%, ``most``]
    of the image and aspect ratio in [1/3, 3] (log-uniform), anywhere it fits, filled with one grey
    level drawn in [0, 1]. Masks from comparisons against the pixel grid: no per-image loop."""
    n = len(x)
    u = torch.rand(n, 6, generator=generator, device=x.device)
    area = (ERASE_MIN_AREA + (most - ERASE_MIN_AREA) * u[:, 0]) * SIZE * SIZE
    aspect = torch.exp(math.log(3.0) * (2 * u[:, 1] - 1))
    height = torch.sqrt(area * aspect).clamp_(1, SIZE)
    width = torch.sqrt(area / aspect).clamp_(1, SIZE)
    top, left = u[:, 2] * (SIZE - height), u[:, 3] * (SIZE - width)
    pixels = torch.arange(SIZE, device=x.device, dtype=x.dtype)
    rows = (pixels >= top[:, None]) & (pixels < (top + height)[:, None])  # (N, 28)
    cols = (pixels >= left[:, None]) & (pixels < (left + width)[:, None])
    mask = (rows[:, :, None] & cols[:, None, :] & (u[:, 4] < ERASE_PROBABILITY)[:, None, None]).unsqueeze(1)
    return torch.where(mask, u[:, 5].reshape(n, 1, 1, 1), x)
