"""Using a trained model: the Predictor (a checkpoint loaded once for many calls), ensembles, ONNX
and safetensors export, the HTTP service with its draw-a-digit page (``static/``), and the HTML
report.

It may import every layer below it (training, model, data, kernels), never the CLI.
"""
