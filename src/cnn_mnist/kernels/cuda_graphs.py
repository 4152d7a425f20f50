"""A training step replayed as one CUDA graph.

On a GPU this network's step is a hundred small kernels (forward, backward, the optimizer, the
weight average), each launched by the host: at batch 100 an H200 spends most of a step waiting
for launches. Captured once as a CUDA graph, the whole step is one launch, replayed each step
on the batch copied into the graph's input buffers (two small copies).

``GraphedStep(step, prepare)`` wraps ``step(images, labels) -> outputs``: tensors, or a structure
holding them, detached (an output that keeps the step's autograd graph alive keeps its gradient
accumulators too, which the capture would then have to sync with). The first ``warmup`` calls
run eagerly on a side stream (as CUDA's capture rules ask: lazily built state such as the
optimizer's and cuDNN's choices exists afterwards); then ``prepare()`` runs once (the caller
makes its optimizer capturable, its learning rate a device tensor) and the step is captured and
replayed from then on. A batch of another shape or type than the captured one (the short last
batch of an epoch) runs eagerly, so every step is taken.

What a replay returns is the same output tensors each time, overwritten by the next replay: read
them (or copy them) before the next step, as the training loop's hooks do. Dropout's random
stream is graph-safe: each replay advances the generator as the eager step would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def can_capture_on(device: torch.device) -> bool:
    """CUDA graphs are CUDA's: on any other device the step runs eagerly."""
    return device.type == "cuda"


class GraphedStep:
    """``step`` captured as a CUDA graph after ``warmup`` eager calls; see the module docstring."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], Any], prepare: Callable[[], None] = lambda: None,
                 warmup: int = 3):
        self.step, self.prepare, self.warmup = step, prepare, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_calls = 0
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._outputs: Any = None
        self._side: torch.cuda.Stream | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Any:
        # A graph is captured and replayed on the current device's streams: make that the
        # tensors' GPU (--device cuda:1 on a machine whose current device is 0).
        with torch.cuda.device(images.device):
            if self.graph is not None and self._fits(images, labels):
                self._inputs[0].copy_(images)
                self._inputs[1].copy_(labels)
                self.graph.replay()
                return self._outputs
            if self.graph is None and self.eager_calls >= self.warmup:
                return self._capture(images, labels)
            return self._eager(images, labels)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _fits(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        return all(new.shape == old.shape and new.dtype == old.dtype
                   for new, old in zip((images, labels), self._inputs, strict=True))

    def _eager(self, images, labels):
        """One eager step on the side stream: capture needs its warm-up there, and it costs nothing.
        One stream for every such step: autograd keeps each weight's gradient accumulator on the
        stream it was made on, and a step on another would sync the two."""
        self.eager_calls += 1
        if self._side is None:
            self._side = torch.cuda.Stream(images.device)
        self._side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(self._side):
            outputs = self.step(images, labels)
        torch.cuda.current_stream(images.device).wait_stream(self._side)
        return outputs

    def _capture(self, images, labels):
        self.prepare()
        self._inputs = (images.clone(), labels.clone())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the step; runs nothing
            self._outputs = self.step(*self._inputs)
        self.graph = graph
        graph.replay()  # this call's step
        return self._outputs
