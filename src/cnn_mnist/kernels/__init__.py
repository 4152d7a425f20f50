"""The kernels layer, below the model: where a run computes (``devices``), in what precision
(``precision``), and which implementation of each layer runs on that device (``layers``, the one
seam the network names; ``cpu/`` holds this project's CPU kernels and the allocator setting).

The network calls ``kernels.max_pool_relu``, ``kernels.linear`` and ``kernels.inference_slices``
and nothing device-specific. This layer imports nothing above it.
"""

from cnn_mnist.kernels.layers import inference_slices, linear, max_pool_relu

__all__ = ["inference_slices", "linear", "max_pool_relu"]
