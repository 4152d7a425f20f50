"""How fast an explanation answers: ``explain`` (one forward pass with the stages recorded, and
integrated gradients over 32 steps) plus its encoding as /v1/explain returns it, in the library
and over HTTP on loopback, for a drawn digit; p50 and p99 over --rounds requests after a warm-up.

Target: at most 50 ms p50 on the reference 2-core machine, so the page can explain while you draw.

Usage: python benchmarks/explain_speed.py --model-dir D [--rounds 200]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time

import httpx
import numpy as np
from common import machine_record
from PIL import Image, ImageDraw

from cnn_mnist.data.images import prepare_image
from cnn_mnist.use.explain import explain, to_json
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.service import create_app, running_server


def drawn_seven() -> bytes:
    """A 280x280 PNG of a 7, dark ink on light paper, as the page sends it."""
    image = Image.new("L", (280, 280), 252)
    ImageDraw.Draw(image).line([(80, 60), (200, 60), (125, 225)], fill=20, width=18, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "requests": len(ms)}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    predictor = Predictor(args.model_dir, device="cpu")
    png = drawn_seven()
    pixels = np.asarray(prepare_image(png), dtype=np.uint8)
    results = {}
    library = []
    for round_ in range(args.rounds + 10):
        started = time.perf_counter()
        to_json(explain(predictor, pixels))
        if round_ >= 10:  # the first calls import Captum and build oneDNN's kernels
            library.append(time.perf_counter() - started)
    results["library"] = percentiles(library)
    http = []
    with running_server(create_app(predictor=predictor)) as url, httpx.Client(base_url=url, timeout=30) as client:
        for round_ in range(args.rounds + 10):
            started = time.perf_counter()
            response = client.post("/v1/explain", content=png, headers={"content-type": "image/png"})
            response.raise_for_status()
            if round_ >= 10:
                http.append(time.perf_counter() - started)
        results["http"] = {**percentiles(http), "bytes": len(response.content)}
    print(f"explain, one drawn digit, {args.rounds} requests each:")
    for name, figures in results.items():
        print(f"  {name:<8} p50 {figures['p50_ms']:6.1f} ms   p99 {figures['p99_ms']:6.1f} ms")
    print(json.dumps({"benchmark": "explain_speed", **results, **machine_record()}))


if __name__ == "__main__":
    main()
