"""The 15 corruptions of MNIST-C (Mu & Gilmer, 2019), in the style of MNIST-C: this project's own
implementation of the published definitions, at the severities the benchmark fixed, with
scikit-image for the filters and warps. The original files cannot be fetched here, so figures
measured on these images are "in the style of MNIST-C", not MNIST-C's own.

Each corruption maps a (28, 28) uint8 digit to a (28, 28) uint8 image. The random numbers come
from a generator seeded by (seed, corruption, image index) alone, so a corrupted set is the same
on every run and every machine, and any one image can be made again without the others.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np

SIZE = 28
CENTRE = (SIZE - 1) / 2  # 13.5: MNIST-C's transforms keep this point fixed


def available() -> bool:
    """Whether scikit-image, which the filters and warps need (the ``robustness`` extra), is installed."""
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma)


def _warp(x: np.ndarray, **affine) -> np.ndarray:
    """An affine map about the image centre (MNIST-C's shear, rotate, scale), bilinear, zeros outside."""
    from skimage import transform

    around = transform.AffineTransform(**affine)
    a1, a2 = around.params[0, :2]
    b1, b2 = around.params[1, :2]
    centred = transform.AffineTransform(**affine, translation=[CENTRE * (1 - a1 - a2), CENTRE * (1 - b1 - b2)])
    return transform.warp(x, inverse_map=centred)


def shot_noise(x, rng):
    photons = 3  # severity 5: few photons, heavy Poisson noise
    return np.clip(rng.poisson(_unit(x) * photons) / photons, 0, 1)


def impulse_noise(x, rng):
    from skimage.util import random_noise

    return random_noise(_unit(x), mode="s&p", amount=0.17, rng=rng)  # severity 4


def glass_blur(x, rng):
    sigma, delta, iterations = 0.7, 1, 2  # severity 1
    y = np.uint8(_gaussian(_unit(x), sigma) * 255)
    for _ in range(iterations):  # swap each pixel with a random neighbour, half of the time
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                if rng.random() < 0.5:
                    dx, dy = rng.integers(-delta, delta, size=2)
                    y[h, w], y[h + dy, w + dx] = y[h + dy, w + dx], y[h, w]
    return np.clip(_gaussian(y / 255.0, sigma), 0, 1)


def motion_blur(x, rng):
    """ImageMagick's motion blur as MNIST-C ran it (radius 10, sigma 3, an angle in +-45 degrees):
    each pixel becomes a Gaussian-weighted mean of the pixels behind it along that direction."""
    from scipy.ndimage import shift

    radius, sigma = 10, 3.0
    angle = math.radians(rng.uniform(-45, 45))
    image = _unit(x)
    weights = np.exp(-np.arange(radius + 1) ** 2 / (2 * sigma ** 2))
    total = np.zeros_like(image)
    for distance, weight in enumerate(weights):
        behind = (distance * math.sin(angle), distance * math.cos(angle))
        total += weight * shift(image, behind, order=1, mode="nearest")
    return np.clip(total / weights.sum(), 0, 1)


def shear(x, rng):
    return np.clip(_warp(_unit(x), shear=0.4 * rng.choice([-1, 1])), 0, 1)  # severity 2


def scale(x, rng):
    return np.clip(_warp(_unit(x), scale=(1 / 0.7, 1 / 0.7)), 0, 1)  # severity 3: the digit at 70%


def rotate(x, rng):
    return np.clip(_warp(_unit(x), rotation=0.4 * rng.choice([-1, 1])), 0, 1)  # severity 2: 23 degrees


def brightness(x, rng):
    return np.clip(_unit(x) + 0.5, 0, 1)  # severity 5: HSV value + 0.5, which for grey is the grey itself


def translate(x, rng):
    from skimage import transform

    dx, dy = 3 * rng.choice([-1, 1], size=2)  # severity 3: 3 pixels on each axis
    return np.clip(transform.warp(_unit(x), inverse_map=transform.AffineTransform(translation=[dx, dy])), 0, 1)


def stripe(x, rng):
    y = _unit(x)
    y[:, :7] = 1 - y[:, :7]
    y[:, 21:] = 1 - y[:, 21:]
    return y


def _plasma(rng, size: int = 256, decay: float = 1.4) -> np.ndarray:
    """A diamond-square height map in [0, 1], as MNIST-C's fog draws it."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled(values):
        return values / 4 + wibble * rng.uniform(-wibble, wibble, values.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(squares)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = wibbled(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = wibbled(top)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x, rng):
    strength = 3.0  # severity 5
    y = _unit(x)
    peak = y.max()
    y = y + strength * _plasma(rng)[:SIZE, :SIZE]
    return np.clip(y * peak / (peak + strength), 0, 1)


def spatter(x, rng):
    loc, spread, sigma, threshold, mask_sigma = 0.65, 0.3, 1, 0.65, 1.5  # severity 4: mud
    y = _unit(x)
    liquid = _gaussian(rng.normal(loc, spread, size=y.shape), sigma)
    liquid[liquid < threshold] = 0
    mask = _gaussian((liquid > threshold).astype(np.float64), mask_sigma)
    mask[mask < 0.8] = 0
    return np.clip(y * (1 - mask) + 63 / 255 * mask, 0, 1)


def _line(c0, r0, c1, r1) -> np.ndarray:
    """MNIST-C's anti-aliased line from column c0 to c1 (values fall off as log(1 - d/2.3) + 1)."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cc, rr = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), sparse=True)
    slope = (r1 - r0) / (c1 - c0)
    distance = np.clip(np.abs(rr - (slope * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - distance / 2.3) + 1, 0, 1) * np.ones((SIZE, 1))
    line[:, :int(math.floor(c0))] = 0
    line[:, int(math.ceil(c1)):] = 0
    return line


def dotted_line(x, rng):
    r0, r1 = rng.integers(0, 27, size=2)
    line = _line(0, r0, 27, r1)
    for start in range(0, 28, 4):  # every other 2-pixel dash off
        line[:, start:start + 2] = 0
    return np.clip(_unit(x) + line, 0, 1)


def zigzag(x, rng):
    length = width = 2.0
    c0, c1 = 2, 25
    r0 = int(rng.integers(0, 27))
    r1 = r0 + int(rng.integers(-5, 5))
    theta = math.atan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / math.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - length) // (2 * length)) + 1):
        r_i = (-1) ** i * width
        points.append(((2 * i + 1) * length, r_i))
    last = (2 * length) * (d // (2 * length))
    if d != last:
        points.append((d, r_i / (2 * (d - last))))
    cs, rs = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) @ np.array(points).T
    y = _unit(x)
    for i in range(1, len(points)):
        y = np.clip(y + _line(cs[i - 1] + c0, rs[i - 1] + r0, cs[i] + c0, rs[i] + r0), 0, 1)
    return y


def canny_edges(x, rng):
    from skimage import feature

    return feature.canny(_unit(x)).astype(np.float64)


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness, "translate": translate,
    "stripe": stripe, "fog": fog, "spatter": spatter, "dotted_line": dotted_line, "zigzag": zigzag,
    "canny_edges": canny_edges,
}


def corrupt(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """(N, 28, 28) uint8 digits -> the same digits under corruption ``name``, uint8."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    function, key = CORRUPTIONS[name], list(CORRUPTIONS).index(name)
    out = np.empty(images.shape, dtype=np.uint8)
    for index, image in enumerate(np.asarray(images, dtype=np.uint8)):
        rng = np.random.default_rng([seed, key, index])
        out[index] = np.rint(np.clip(function(image, rng), 0, 1) * 255)
    return out


def example_png(image: np.ndarray) -> bytes:
    """One corrupted digit as a PNG (for the report)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()
