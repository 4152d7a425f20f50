"""How fast the static site is in this machine's Chromium: from navigation to a loaded model (a
cold cache each time), and from a finished drawing to its answer with every stage drawn (the
page's own clock), over a local `python -m http.server`, one WASM thread (no cross-origin
isolation, as on most static hosts). Also the site's size, whole and gzipped.

Targets: loaded in under 2 s; an answer, stages drawn, in under 50 ms p50.

Usage: python benchmarks/web_page.py --model-dir D [--loads 10] [--drawings 60] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine_record
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("CNN_MNIST_CHROMIUM", "/usr/bin/chromium")
SEVEN = [(0.28, 0.22), (0.72, 0.22), (0.44, 0.80)]


def strokes(rng) -> list[tuple[float, float]]:
    """A 7 drawn a little differently each time: corners moved by up to 5% of the pad."""
    return [(x + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.05, 0.05)) for x, y in SEVEN]


def draw(page, points) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=6)
    page.mouse.up()


def summary(values: list[float]) -> dict:
    array = np.array(values)
    return {"p50_ms": round(float(np.percentile(array, 50)), 1), "p90_ms": round(float(np.percentile(array, 90)), 1),
            "max_ms": round(float(array.max()), 1), "count": len(values)}


def sizes(site: Path) -> dict:
    files = {str(path.relative_to(site)): path.read_bytes() for path in site.rglob("*") if path.is_file()}
    group = {"runtime": lambda name: name.startswith("ort/"), "model": lambda name: name == "model.onnx",
             "page": lambda name: not name.startswith("ort/") and name != "model.onnx"}
    return {kind: {"bytes": sum(len(data) for name, data in files.items() if test(name)),
                   "gzip_bytes": sum(len(gzip.compress(data, 6)) for name, data in files.items() if test(name))}
            for kind, test in group.items()}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--drawings", type=int, default=60)
    parser.add_argument("--screenshot", help="also save the page, a 7 drawn, as this PNG (the docs' picture)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        site = Path(temp) / "site"
        subprocess.run([sys.executable, "-m", "cnn_mnist", "export", "-q", "--model-dir", args.model_dir, "--output",
                        str(site)], check=True)
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                   "--directory", str(site)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        try:
            port = re.search(r"port (\d+)", server.stdout.readline()).group(1)
            url = f"http://127.0.0.1:{port}/"
            result = measure(url, args)
        finally:
            server.terminate()
        result["sizes"] = sizes(site)
    load, answer = result["load"], result["answer"]
    print(f"static site in Chromium, {args.loads} cold loads, {args.drawings} drawings, one WASM thread:")
    print(f"  loaded (navigation -> model ready)   p50 {load['p50_ms']:7.1f} ms   max {load['max_ms']:7.1f} ms")
    print(f"  answer, stages drawn                 p50 {answer['p50_ms']:7.1f} ms   p90 {answer['p90_ms']:7.1f} ms")
    for kind, size in result["sizes"].items():
        print(f"  {kind:<8} {size['bytes'] / 1e6:6.2f} MB   gzipped {size['gzip_bytes'] / 1e6:6.2f} MB")
    print(json.dumps({"benchmark": "web_page", **result, **machine_record()}))


def measure(url: str, args) -> dict:
    rng = np.random.default_rng(0)
    loads, answers = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        for _ in range(args.loads):
            context = browser.new_context(viewport={"width": 1280, "height": 800})  # a cold cache
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("body[data-ready='true']")
            loads.append(page.evaluate("window.cnnMnistReadyMs"))
            context.close()
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        for index in range(args.drawings + 3):  # the first runs warm WASM up
            page.click("#clear")
            draw(page, strokes(rng))
            page.wait_for_selector("#result[data-settled='true']:not([data-state='empty'])")
            if index >= 3:
                answers.append(page.evaluate("window.cnnMnistLast.ms"))
        if args.screenshot:
            page.click("#clear")
            draw(page, SEVEN)
            page.wait_for_selector("#result[data-settled='true']:not([data-state='empty'])")
            page.screenshot(path=args.screenshot, full_page=True, animations="disabled")
        browser.close()
    return {"load": summary(loads), "answer": summary(answers)}


if __name__ == "__main__":
    main()
