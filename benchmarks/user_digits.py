"""Accuracy on digits that are not from MNIST: typed digits in every TrueType font on this machine,
synthetic hand-drawn digits, either kind "photographed" (light falling off, noise, blur), and (as a
control) MNIST test digits made into ordinary images, all encoded as PNG or JPEG and read back
through ``prepare_image``. Prints a table per model and one
JSON line. Needs no network; the images are built in memory from a fixed seed.

Takes about 12 s a model on the 2-core reference machine (1 ms a preparation). What each preset
attains, and the exact command (the font set changes the typed figures, so pin --fonts-dir), is
on docs/performance.md; the figures live there alone, so they cannot go stale here.
Usage: python benchmarks/user_digits.py --model-dir D [--model-dir D2 ...] [--fonts-dir /usr/share/fonts]
       [--variants 3] [--hand-drawn 60] [--photos 30] [--mnist 1000] [--data-dir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
from common import machine_record
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cnn_mnist.data.images import prepare_image
from cnn_mnist.errors import NoDigitError
from cnn_mnist.use.predictor import Predictor

# (ink, paper) RGB pairs: pen on paper, chalk on a board, coloured ink on coloured paper.
COLOURS = [((0, 0, 0), (255, 255, 255)), ((20, 30, 120), (250, 245, 200)), ((255, 255, 255), (0, 0, 0)),
           ((90, 90, 90), (235, 232, 220)), ((200, 30, 30), (230, 230, 230)), ((250, 230, 80), (20, 40, 110)),
           ((0, 90, 0), (255, 255, 255)), ((230, 230, 230), (60, 60, 60))]
FONT_SIZES = (24, 40, 72, 150)


def find_fonts(fonts_dir: str) -> list[Path]:
    return sorted(p for p in Path(fonts_dir).rglob("*") if p.suffix.lower() in (".ttf", ".otf"))


def encode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=75)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


# -- typed digits --------------------------------------------------------------------------------


def typed_digit(font_path: Path, digit: int, rng: np.random.Generator, dark_on_light=False) -> Image.Image:
    """One digit in a font at a random size, stroke, colour pair, margin and position."""
    size = int(rng.choice(FONT_SIZES))
    font = ImageFont.truetype(str(font_path), size)
    stroke = int(rng.choice([0, 0, 1, max(1, size // 30)]))
    ink, paper = COLOURS[0] if dark_on_light else COLOURS[rng.integers(len(COLOURS))]
    left, top, right, bottom = font.getbbox(str(digit), stroke_width=stroke)
    width, height = right - left, bottom - top
    # Canvases from a tight crop to a digit small in a wide frame, the digit anywhere in it.
    frame = float(rng.choice([0.1, 0.5, 1.0, 3.0]))
    canvas_w, canvas_h = int(width + 2 + frame * height * rng.uniform(1, 2)), int(height + 2 + frame * height)
    x, y = rng.integers(1, canvas_w - width), rng.integers(1, canvas_h - height)
    image = Image.new("RGB", (canvas_w, canvas_h), paper)
    ImageDraw.Draw(image).text((x - left, y - top), str(digit), font=font, fill=ink, stroke_width=stroke,
                               stroke_fill=ink)
    return image


# -- hand-drawn digits ---------------------------------------------------------------------------


def arc(cx, cy, rx, ry, start_deg, end_deg, n=16):
    """Points along an ellipse in a unit box, y down; angles clockwise from 3 o'clock."""
    angles = np.radians(np.linspace(start_deg, end_deg, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# Each digit: a few ways people write it, each a list of strokes, each a polyline in a unit box.
STROKES = {
    0: [[arc(0.5, 0.5, 0.3, 0.45, -90, 270, 24)], [arc(0.5, 0.5, 0.25, 0.45, -100, 265, 24)]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]], [[(0.3, 0.25), (0.55, 0.05), (0.55, 0.95)]],
        [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)], [(0.35, 0.95), (0.75, 0.95)]]],
    2: [[arc(0.5, 0.3, 0.28, 0.25, 190, 360, 10) + [(0.2, 0.95), (0.82, 0.95)]],
        [arc(0.5, 0.3, 0.3, 0.25, 180, 390, 12) + [(0.2, 0.92), (0.85, 0.92)]]],
    3: [[arc(0.45, 0.28, 0.28, 0.23, 200, 450, 14) + arc(0.45, 0.73, 0.3, 0.24, -90, 160, 14)],
        [[(0.2, 0.05), (0.75, 0.05), (0.4, 0.45)] + arc(0.45, 0.7, 0.3, 0.25, -90, 160, 14)]],
    4: [[[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.85, 0.65)]],
        [[(0.25, 0.05), (0.2, 0.6), (0.85, 0.6)], [(0.65, 0.3), (0.65, 0.95)]]],
    5: [[[(0.78, 0.05), (0.3, 0.05), (0.25, 0.45)] + arc(0.48, 0.66, 0.3, 0.27, -130, 150, 14)],
        [[(0.3, 0.05), (0.25, 0.45)] + arc(0.48, 0.66, 0.3, 0.27, -130, 150, 14), [(0.3, 0.05), (0.8, 0.05)]]],
    6: [[arc(0.78, 0.62, 0.52, 0.57, 255, 180, 10) + arc(0.5, 0.7, 0.25, 0.25, 180, 540, 18)],
        [[(0.65, 0.05), (0.3, 0.55)] + arc(0.5, 0.7, 0.25, 0.25, 200, 560, 18)]],
    7: [[[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)]],
        [[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)], [(0.35, 0.5), (0.8, 0.5)]],
        [[(0.15, 0.2), (0.2, 0.05), (0.85, 0.05), (0.5, 0.95)]]],
    8: [[arc(0.5, 0.27, 0.22, 0.22, 90, 450, 20) + arc(0.5, 0.71, 0.27, 0.24, -90, 270, 20)],
        [arc(0.5, 0.27, 0.2, 0.22, 0, 360, 20), arc(0.5, 0.71, 0.27, 0.24, 0, 360, 20)]],
    9: [[arc(0.5, 0.3, 0.26, 0.25, 0, 360, 20) + [(0.76, 0.3), (0.72, 0.95)]],
        [arc(0.5, 0.3, 0.26, 0.25, 0, 360, 20) + arc(0.2, 0.3, 0.56, 0.65, 0, 90, 10)]],
}


def wobble(count: int, rng: np.random.Generator, amount: float = 0.025) -> np.ndarray:
    """(count, 2) offsets that drift smoothly along a stroke, as an unsteady hand's do."""
    knots = np.linspace(0, count - 1, max(2, count // 6 + 1))
    return np.stack([np.interp(np.arange(count), knots, rng.normal(0, amount, len(knots))) for _ in range(2)], 1)


def hand_drawn_digit(digit: int, rng: np.random.Generator, dark_on_light=False) -> Image.Image:
    """A digit drawn with a round pen along jittered strokes, slanted and squeezed at random."""
    strokes = STROKES[digit][rng.integers(len(STROKES[digit]))]
    canvas = int(rng.choice([28, 64, 140, 280, 500]))
    angle, shear = math.radians(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.1)
    squeeze, height = rng.uniform(0.7, 1.15), canvas * rng.uniform(0.5, 0.85)
    cx, cy = canvas * rng.uniform(0.4, 0.6), canvas * rng.uniform(0.4, 0.6)
    pen = max(1, round(height * rng.uniform(0.06, 0.14)))
    light_on_dark = rng.random() < 0.5 and not dark_on_light
    ink, paper = ((255, 255, 255), (0, 0, 0)) if light_on_dark else ((20, 20, 20), (245, 245, 240))
    image = Image.new("RGB", (canvas, canvas), paper)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = np.array(stroke) + wobble(len(stroke), rng)
        x, y = (points[:, 0] - 0.5) * squeeze, points[:, 1] - 0.5
        x = x + shear * y  # slant
        x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
        xy = [(cx + height * a, cy + height * b) for a, b in zip(x, y, strict=True)]
        draw.line(xy, fill=ink, width=pen, joint="curve")
        for px, py in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2), fill=ink)
    if canvas >= 140:
        image = image.filter(ImageFilter.GaussianBlur(0.6))  # a soft pen edge
    return image


# -- photographed digits --------------------------------------------------------------------------


def photographed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A digit on paper as a phone sees it: light falling off across the page, a vignette, sensor
    noise and a little blur."""
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    height, width = grey.shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = x * math.cos(angle) + y * math.sin(angle)
    light = 1.0 - rng.uniform(0.15, 0.4) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    light *= 1.0 - 0.15 * ((x - x.mean()) ** 2 + (y - y.mean()) ** 2) / 0.5  # vignette
    grey = grey * light * rng.uniform(0.85, 1.0) + rng.normal(0, rng.uniform(0.01, 0.04), grey.shape)
    photo = Image.fromarray(np.clip(grey * 255, 0, 255).astype(np.uint8), "L")
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


# -- MNIST as ordinary images (control) ----------------------------------------------------------


def mnist_as_images(data_dir: str | None, count: int, rng: np.random.Generator):
    """MNIST test digits enlarged 8x and printed dark on light, as a scan of them would be; and the
    same digits' own 28x28 pixels, to tell what preparation costs from what the model misses."""
    from cnn_mnist.data.datasets import load_mnist
    from cnn_mnist.errors import CnnMnistError

    try:
        test = load_mnist(data_dir, download=False).test
    except CnnMnistError:
        return [], None
    picks = rng.choice(len(test), size=min(count, len(test)), replace=False)
    samples = []
    for index in picks:
        pixels = 255 - test.images[index].numpy()
        image = Image.fromarray(pixels, "L").resize((224, 224), Image.Resampling.BILINEAR)
        samples.append((encode(image, "png"), int(test.labels[index])))
    return samples, (test.images[picks].numpy(), test.labels[picks].numpy())


# -- run -----------------------------------------------------------------------------------------


def prepare_or_blank(data: bytes) -> np.ndarray:
    """The prepared image, or an empty field (never read as the right digit) when it says no digit."""
    try:
        return prepare_image(data)
    except NoDigitError:
        return np.zeros((28, 28), dtype=np.uint8)


def build_sources(args, rng) -> tuple[dict[str, list[tuple[bytes, int]]], dict]:
    """Encoded images with their labels by source; and pixels that skip preparation, by source."""
    fonts = find_fonts(args.fonts_dir)
    typed_png, typed_jpeg = [], []
    for font_path in fonts:
        for digit in range(10):
            for _ in range(args.variants):
                image = typed_digit(font_path, digit, rng)
                typed_png.append((encode(image, "png"), digit))
                typed_jpeg.append((encode(image, "jpeg"), digit))
    hand_png, hand_jpeg = [], []
    for digit in range(10):
        for i in range(args.hand_drawn):
            image = hand_drawn_digit(digit, rng)
            (hand_png if i % 2 == 0 else hand_jpeg).append((encode(image, "png" if i % 2 == 0 else "jpeg"), digit))
    photos = []
    for digit in range(10):
        for i in range(args.photos):
            paper = (typed_digit(fonts[i % len(fonts)], digit, rng, dark_on_light=True) if i % 2 and fonts
                     else hand_drawn_digit(digit, rng, dark_on_light=True))
            photos.append((encode(photographed(paper, rng), "jpeg"), digit))
    sources = {f"typed PNG ({len(fonts)} fonts)": typed_png, f"typed JPEG q75 ({len(fonts)} fonts)": typed_jpeg,
               "hand-drawn PNG": hand_png, "hand-drawn JPEG q75": hand_jpeg,
               "photographed JPEG q75": photos}
    unprepared = {}
    if args.mnist:
        sources["MNIST test as PNG (control)"], raw = mnist_as_images(args.data_dir, args.mnist, rng)
        if raw is not None:
            unprepared["same MNIST digits, 28x28 as is"] = raw
    return {name: samples for name, samples in sources.items() if samples}, unprepared


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", action="append", required=True, help="a trained model directory; repeatable")
    parser.add_argument("--fonts-dir", default="/usr/share/fonts")
    parser.add_argument("--variants", type=int, default=3, help="renderings of each digit in each font")
    parser.add_argument("--hand-drawn", type=int, default=60, help="hand-drawn images of each digit")
    parser.add_argument("--photos", type=int, default=30, help="photographed images of each digit")
    parser.add_argument("--mnist", type=int, default=1000, help="MNIST test digits for the control; 0 skips it")
    parser.add_argument("--data-dir", help="MNIST (default: $CNN_MNIST_DATA, else ~/.cache/cnn_mnist); never downloads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    started = time.perf_counter()
    sources, unprepared = build_sources(args, rng)
    built_s = time.perf_counter() - started
    prepared, prepare_s = {}, 0.0
    for name, samples in sources.items():
        started = time.perf_counter()
        prepared[name] = (np.stack([prepare_or_blank(data) for data, _ in samples]),
                          np.array([label for _, label in samples]))
        prepare_s += time.perf_counter() - started
    count = sum(len(labels) for _, labels in prepared.values())
    prepared.update(unprepared)

    for model_dir in args.model_dir:
        predictor = Predictor(model_dir)
        rows = []
        for name, (images, labels) in prepared.items():
            classes = predictor.predict(images).classes
            blank = ~images.reshape(len(images), -1).any(axis=1)  # answered "no digit found"
            correct = (classes == labels) & ~blank
            per_digit = [float(correct[labels == d].mean()) if (labels == d).any() else None for d in range(10)]
            rows.append({"source": name, "count": len(labels), "accuracy": float(correct.mean()),
                         "no_digit": int(blank.sum()),
                         "per_digit": per_digit})
        print(f"\n{model_dir} (global step {predictor.global_step})")
        print(f"{'source':<34} {'count':>6} {'accuracy':>9} {'no digit':>8}   "
              + " ".join(f"{d:>5}" for d in range(10)))
        for row in rows:
            digits = " ".join("    -" if a is None else f"{a:>5.2f}" for a in row["per_digit"])
            print(f"{row['source']:<34} {row['count']:>6} {row['accuracy']:>9.2%} {row['no_digit']:>8}   {digits}")
        print(json.dumps({"benchmark": "user_digits", "model_dir": model_dir, "global_step": predictor.global_step,
                          "seed": args.seed, "rows": rows, "images": count, "build_s": round(built_s, 1),
                          "prepare_ms_per_image": round(1000 * prepare_s / count, 2),
                          **machine_record()}))


if __name__ == "__main__":
    main()
