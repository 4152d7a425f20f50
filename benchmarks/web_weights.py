"""What storing the network's weights as float16 costs the static site: the size of the model file
and the answers on MNIST's 10,000 test digits, float32 against float16, both in onnxruntime.

The web export (cnn-mnist export --format web) stores float16 weights, widened to float32 as the
graph runs; this prints the figures that choice rests on.

Usage: python benchmarks/web_weights.py --model-dir D
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import onnxruntime
from common import machine_record

from cnn_mnist.data.datasets import load_mnist
from cnn_mnist.use.export import build_onnx_model, export_metadata
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.web import build_drawing_model, half_precision_weights


def answers(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(["probabilities", "classes"], {"images": pixels})
    return probabilities, classes


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    predictor = Predictor(args.model_dir, device="cpu")
    test = load_mnist(args.data_dir).test
    pixels = test.images.numpy().astype(np.float32)[:, None] / np.float32(255.0)
    labels = test.labels.numpy()
    full = build_onnx_model(predictor.network, export_metadata(predictor))
    half = half_precision_weights(build_onnx_model(predictor.network, export_metadata(predictor)), prefix="")
    (p32, c32), (p16, c16) = answers(full, pixels), answers(half, pixels)
    site32 = build_drawing_model(predictor.network)
    site16 = half_precision_weights(build_drawing_model(predictor.network))
    result = {
        "global_step": predictor.global_step,
        "classifier_bytes": {"float32": full.ByteSize(), "float16": half.ByteSize()},
        "site_model_bytes": {"float32": site32.ByteSize(), "float16": site16.ByteSize()},
        "accuracy": {"float32": float((c32 == labels).mean()), "float16": float((c16 == labels).mean())},
        "classes_changed": int((c32 != c16).sum()),
        "max_abs_probability_diff": float(np.abs(p32 - p16).max()),
    }
    print(f"model at global step {predictor.global_step}, MNIST's {len(labels):,} test digits, onnxruntime:")
    print(f"  site model file   float32 {result['site_model_bytes']['float32'] / 1e6:5.1f} MB   "
          f"float16 {result['site_model_bytes']['float16'] / 1e6:5.1f} MB")
    accuracy = result["accuracy"]
    print(f"  test accuracy     float32 {accuracy['float32']:.4f}    float16 {accuracy['float16']:.4f}")
    print(f"  classes changed   {result['classes_changed']}   max |dp| {result['max_abs_probability_diff']:.1e}")
    print(json.dumps({"benchmark": "web_weights", **result, **machine_record()}))


if __name__ == "__main__":
    main()
