"""How often the draw-a-digit page reads a mouse-drawn digit right: Chromium (Playwright) draws each
digit 0-9 on the page's pad with scripted strokes, varied in size, position, slant, wobble and pen
width, and reads the class the page then shows. Prints a table and one JSON line.

The strokes are drawn as one person would draw them with a mouse (one template per digit, the 1
with or without its flag, the 4 open or closed at random); they are not MNIST digits, so the figure
says how the whole path (canvas -> PNG -> prepare_image -> network) copes with clean mouse
drawing, not how the network does on MNIST.

Attains (fast preset, 2-core reference machine): see docs/performance.md.
Usage: python benchmarks/page_digits.py --model-dir D [--repeats 10] [--seed 0] [--viewport desktop|phone]
       [--chromium /usr/bin/chromium] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import machine_record
from playwright.sync_api import sync_playwright

from cnn_mnist.use.service import create_app, running_server

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
PENS = ("thin", "medium", "bold")

Stroke = list[tuple[float, float]]


# -- the digits, in a unit box (x right, y down) ---------------------------------------------------


def arc(cx, cy, rx, ry, start_deg, end_deg, points=28) -> Stroke:
    """An elliptic arc; angles counter-clockwise from 3 o'clock, as on paper (y grows downwards)."""
    angles = np.radians(np.linspace(start_deg, end_deg, points))
    return [(cx + rx * math.cos(a), cy - ry * math.sin(a)) for a in angles]


def digit_strokes(digit: int, rng: np.random.Generator, sloppy: bool = False) -> list[Stroke]:
    """One digit's strokes; ``sloppy`` mixes in the variants people draw (open 0, crossed 7, ...)."""
    variant = sloppy and rng.random() < 0.5
    if digit == 0:
        end = float(rng.choice([95 + 320, 95 + 410])) if variant else 95 + 370  # a gap, or an overshoot
        return [arc(0.5, 0.5, 0.42, 0.5, 95, end, points=40)]
    if digit == 1:
        stem = [(0.56, 0.0), (0.5, 1.0)]
        if variant:
            return [[(0.3, 0.22), *stem], [(0.25, 1.0), (0.75, 1.0)]]  # flag and foot
        return [[(0.32, 0.2), *stem]] if rng.random() < 0.5 else [stem]
    if digit == 2:
        if variant:  # a loop where the diagonal meets the base
            return [arc(0.5, 0.28, 0.4, 0.28, 165, -25) + [(0.2, 0.85)] + arc(0.2, 0.9, 0.1, 0.1, 90, 360 + 10)
                    + [(0.96, 0.96)]]
        return [arc(0.5, 0.28, 0.4, 0.28, 165, -25) + [(0.06, 1.0), (0.96, 0.98)]]
    if digit == 3:
        top = [(0.1, 0.0), (0.85, 0.0), (0.42, 0.42)] if variant else arc(0.5, 0.25, 0.38, 0.25, 150, -90)
        return [top + arc(0.5, 0.74, 0.42, 0.26, 90, -150)]
    if digit == 4:
        if rng.random() < 0.5:  # open top, two strokes, the way MNIST's writers mostly wrote it
            return [[(0.22, 0.0), (0.08, 0.6), (0.94, 0.6)], [(0.72, 0.04), (0.7, 1.0)]]
        return [[(0.7, 1.0), (0.7, 0.0), (0.06, 0.66), (0.94, 0.66)]]
    if digit == 5:
        bowl = arc(0.48, 0.69, 0.4, 0.3, 140, -155)
        if variant:  # in one stroke, the bar last
            return [[(0.26, 0.02), (0.2, 0.46)] + bowl, [(0.3, 0.02), (0.9, 0.0)]][::-1]
        return [[(0.26, 0.02), (0.2, 0.46)] + bowl, [(0.26, 0.02), (0.88, 0.02)]]
    if digit == 6:
        loop = arc(0.5, 0.75, 0.3, 0.24, 180, 540) if variant else arc(0.5, 0.72, 0.35, 0.28, 180, 540)
        return [[(0.74, 0.0), (0.46, 0.14), (0.27, 0.38), (0.16, 0.66)] + loop]
    if digit == 7:
        seven = [[(0.06, 0.04), (0.94, 0.04), (0.42, 1.0)]]
        return seven + [[(0.35, 0.52), (0.85, 0.5)]] if variant else seven  # the crossed 7
    if digit == 8:
        if variant:  # two loops, one on the other
            return [arc(0.5, 0.25, 0.3, 0.25, 90, 450), arc(0.5, 0.72, 0.4, 0.28, 90, 450)]
        t = np.linspace(0, 2 * np.pi, 48)
        return [list(zip(0.5 - 0.42 * np.sin(2 * t) * (1 - 0.15 * np.cos(t)), 0.5 - 0.5 * np.cos(t), strict=True))]
    if digit == 9:
        stem = [(0.9, 0.3), (0.88, 0.75), (0.6, 1.0)] if variant else [(0.9, 0.3), (0.84, 1.0)]  # hooked
        return [arc(0.5, 0.3, 0.4, 0.3, 0, 370) + stem]
    raise ValueError(digit)


def densify(stroke: Stroke, step: float = 0.05) -> Stroke:
    """Points every ``step`` along the polyline, so a wobble bends straight segments too."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in zip(stroke[:-1], stroke[1:], strict=True):
        count = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        points += [(x0 + (x1 - x0) * i / count, y0 + (y1 - y0) * i / count) for i in range(1, count + 1)]
    return points


def place(strokes: list[Stroke], rng: np.random.Generator, sloppy: bool = False) -> tuple[list[Stroke], dict]:
    """Unit-box strokes -> pad coordinates: a random size, position, slant and hand wobble; ``sloppy``
    adds rotation, a wider range of proportions and a slow wobble along each stroke."""
    height = float(rng.uniform(0.3, 0.8))
    width = height * float(rng.uniform(0.4, 0.95) if sloppy else rng.uniform(0.5, 0.72))
    cx, cy = 0.5 + rng.uniform(-0.12, 0.12, size=2) * (1 - height)
    slant = float(rng.uniform(-0.25, 0.45) if sloppy else rng.uniform(-0.1, 0.3))
    turn = math.radians(float(rng.uniform(-12, 12))) if sloppy else 0.0
    placed = []
    for stroke in strokes:
        stroke = densify(stroke) if sloppy else stroke
        amplitude = 0.03 if sloppy else 0.0  # in unit-box units
        frequency, phase = rng.uniform(0.5, 2.0, size=2), rng.uniform(0, 2 * np.pi, size=2)
        points = []
        for i, (u, v) in enumerate(stroke):
            along = i / max(len(stroke) - 1, 1)
            u += slant * (0.5 - v) + amplitude * math.sin(2 * np.pi * frequency[0] * along + phase[0])
            v += amplitude * math.sin(2 * np.pi * frequency[1] * along + phase[1])
            du, dv = (u - 0.5) * width, (v - 0.5) * height
            x = cx + du * math.cos(turn) - dv * math.sin(turn) + rng.normal(0, 0.003)
            y = cy + du * math.sin(turn) + dv * math.cos(turn) + rng.normal(0, 0.003)
            points.append((float(np.clip(x, 0.01, 0.99)), float(np.clip(y, 0.01, 0.99))))
        placed.append(points)
    return placed, {"height": round(height, 3), "slant": round(slant, 3), "turn_deg": round(math.degrees(turn), 1),
                    "centre": [round(cx, 3), round(cy, 3)]}


# -- driving the page ------------------------------------------------------------------------------


def draw(page, box, strokes: list[Stroke]) -> None:
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.up()


def read_class(page) -> str:
    page.wait_for_selector("#result[data-settled='true']:not([data-state='empty'])")
    return page.locator("#top-class").text_content()


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    trials = []
    with running_server(create_app(args.model_dir)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORTS[args.viewport])
        page.goto(f"{url}/")
        page.wait_for_selector("#model-info:has-text('global step')")
        checkpoint = page.locator("#model-info").text_content()
        box = page.locator("#pad").bounding_box()
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for digit in range(10):
                pen = PENS[(repeat + digit) % len(PENS)]
                page.click("#clear")
                page.check(f"input[name='pen'][value='{pen}']")
                sloppy = args.style == "sloppy"
                strokes, shape = place(digit_strokes(digit, rng, sloppy), rng, sloppy)
                draw(page, box, strokes)
                shown = read_class(page)
                trials.append({"digit": digit, "shown": shown, "pen": pen, **shape})
                if args.screenshots and shown != str(digit):
                    Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=Path(args.screenshots) / f"misread-{digit}-as-{shown}-{repeat}.png")
        seconds = time.perf_counter() - started
        browser.close()
    return summarise(trials, args, checkpoint, seconds)


def summarise(trials: list[dict], args, checkpoint: str, seconds: float) -> dict:
    def accuracy(rows):
        return sum(row["shown"] == str(row["digit"]) for row in rows) / len(rows)

    per_digit = {digit: accuracy([t for t in trials if t["digit"] == digit]) for digit in range(10)}
    per_pen = {pen: accuracy([t for t in trials if t["pen"] == pen]) for pen in PENS}
    misreads = Counter(f"{t['digit']}->{t['shown']}" for t in trials if t["shown"] != str(t["digit"]))
    return {"benchmark": "page_digits", "model": checkpoint, "viewport": args.viewport, "style": args.style,
            "drawings": len(trials),
            "accuracy": round(accuracy(trials), 4), "per_digit": {str(d): round(a, 3) for d, a in per_digit.items()},
            "per_pen": {pen: round(a, 3) for pen, a in per_pen.items()}, "misreads": dict(misreads.most_common()),
            "seconds": round(seconds, 1), "seed": args.seed, **machine_record()}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--repeats", type=int, default=10, help="drawings of each digit (default: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--viewport", choices=VIEWPORTS, default="desktop")
    parser.add_argument("--style", choices=("clean", "sloppy"), default="clean",
                        help="clean: one careful template per digit; sloppy: variants (open 0, crossed 7, looped 2, "
                             "two-loop 8, ...), rotation, odd proportions, a slow wobble (default: clean)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", metavar="DIR", help="save a screenshot of every misread drawing here")
    args = parser.parse_args()
    result = run(args)
    print(f"{result['model']}; {result['drawings']} {args.style} mouse drawings at {args.viewport} width "
          f"in {result['seconds']} s")
    print(f"{'digit':>5}  {'read right':>10}")
    for digit, share in result["per_digit"].items():
        print(f"{digit:>5}  {share:>10.0%}")
    print(f"{'all':>5}  {result['accuracy']:>10.1%}")
    print("by pen: " + ", ".join(f"{pen} {share:.0%}" for pen, share in result["per_pen"].items()))
    print("misreads: " + (", ".join(f"{pair} x{n}" for pair, n in result["misreads"].items()) or "none"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
