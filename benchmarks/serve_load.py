"""Load on ``cnn-mnist serve``: the server in its own process on loopback, a fixed number of
requests at a fixed concurrency from an httpx AsyncClient, for one canvas-sized PNG per request
(raw image/png body, as the page sends) and for batches of PNGs (multipart, one `file` part each).
Reports errors (anything but a 200), requests and images per second, and p50/p99 latency; prints
a table and one JSON line.

The PNGs are 280x280 mouse-style drawings of all ten digits (benchmarks/page_digits.py's strokes),
dark on light like the page's canvas, so each request pays the whole path: upload, decode,
prepare_image, the network, the JSON answer. A warm-up of 2 x concurrency requests per scenario is
left out of the figures. Client and server share the machine's cores.

Attains (fast preset, 2-core reference machine): see docs/performance.md.
Usage: python benchmarks/serve_load.py --model-dir D [--requests 2000] [--concurrency 16] [--batch 16]
       [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
from common import machine_record
from page_digits import digit_strokes, place
from PIL import Image, ImageDraw

CANVAS = 280


def canvas_pngs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` canvas-like drawings, digits 0-9 in turn, as PNG bytes."""
    rng = np.random.default_rng(seed)
    pngs = []
    for i in range(count):
        strokes, _ = place(digit_strokes(i % 10, rng), rng)
        image = Image.new("RGB", (CANVAS, CANVAS), (255, 253, 247))
        draw = ImageDraw.Draw(image)
        for stroke in strokes:
            draw.line([(x * CANVAS, y * CANVAS) for x, y in stroke], fill=(21, 24, 30), width=18, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: str, port: int) -> subprocess.Popen:
    """``python -m cnn_mnist serve`` in its own process; returns once /healthz answers."""
    process = subprocess.Popen([sys.executable, "-m", "cnn_mnist", "serve", "--model-dir", model_dir,
                                "--port", str(port), "--quiet"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the server loads torch and the checkpoint first: a few seconds
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not answer /healthz within 60 s")


async def load(url: str, requests: int, concurrency: int, make_request) -> dict:
    """``requests`` calls from ``concurrency`` workers; latencies of the 200s, and the failures."""
    latencies, failures = [], []
    next_index = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def worker():
            for index in next_index:  # one shared iterator: each index is taken once
                started = time.perf_counter()
                try:
                    response = await make_request(client, index)
                    ok = response.status_code == 200
                    if not ok:
                        failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    ok = False
                    failures.append(f"{type(error).__name__}: {error}")
                if ok:
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"latencies": latencies, "failures": failures, "seconds": seconds}


def run_scenario(url: str, name: str, images_per_request: int, make_request, args) -> dict:
    asyncio.run(load(url, 2 * args.concurrency, args.concurrency, make_request))  # warm-up, not counted
    result = asyncio.run(load(url, args.requests, args.concurrency, make_request))
    latencies_ms = np.array(result["latencies"]) * 1000
    return {
        "scenario": name, "requests": args.requests, "concurrency": args.concurrency,
        "images_per_request": images_per_request, "errors": len(result["failures"]),
        "requests_per_s": round(args.requests / result["seconds"], 1),
        "images_per_s": round(args.requests * images_per_request / result["seconds"], 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if len(latencies_ms) else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if len(latencies_ms) else None,
        "first_errors": result["failures"][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario (default: 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default: 16)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch request (default: 16)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    args = parser.parse_args()

    pngs = canvas_pngs(100)
    port = args.port or free_port()
    server = start_server(args.model_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async def single(client, index):
            return await client.post("/v1/predict", content=pngs[index % len(pngs)],
                                     headers={"content-type": "image/png"})

        async def batch(client, index):
            files = [("file", (f"{j}.png", pngs[(index * args.batch + j) % len(pngs)], "image/png"))
                     for j in range(args.batch)]
            return await client.post("/v1/predict", files=files)

        results = [run_scenario(url, "single PNG", 1, single, args),
                   run_scenario(url, f"batch of {args.batch} PNGs", args.batch, batch, args)]
        model = httpx.get(f"{url}/healthz").json()
    finally:
        server.terminate()
        server.wait(timeout=30)

    machine = machine_record()
    print(f"cnn-mnist serve, {model['checkpoint']}; {args.requests} requests per scenario at concurrency "
          f"{args.concurrency}; {machine['cores']} CPUs shared by client and server")
    print(f"{'scenario':<20} {'errors':>6} {'req/s':>8} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for row in results:
        print(f"{row['scenario']:<20} {row['errors']:>6} {row['requests_per_s']:>8} {row['images_per_s']:>9} "
              f"{row['p50_ms']:>8} {row['p99_ms']:>8}")
        for failure in row["first_errors"]:
            print(f"  {failure}")
    print(json.dumps({"benchmark": "serve_load", "checkpoint": model["checkpoint"], "results": results,
                      **machine}))
    if any(row["errors"] for row in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
