"""The HTTP service: ``POST /v1/predict`` for images and pixel arrays, ``POST /v1/explain`` for what
each layer makes of a digit, ``GET /healthz``, and the draw-a-digit page at ``/``, around one
Predictor loaded at start-up and shared by every request.

A request goes read (``parsing``) -> decode -> predict -> encode (``routes``, into the models of
``schemas``); ``server`` binds the socket and runs uvicorn. Importing this package loads only
``settings``: FastAPI, pydantic and uvicorn load with ``create_app``, ``serve`` or
``running_server``, so the CLI's parser can read the serve defaults without them.
"""

from __future__ import annotations

import importlib

from cnn_mnist.use.service.settings import (DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, MAX_EXPLAIN_IMAGES,
                                            MAX_IMAGES)

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_PORT", "MAX_EXPLAIN_IMAGES", "MAX_IMAGES",
           "create_app", "pixels_problem", "running_server", "serve"]

_LAZY = {"create_app": "routes", "serve": "server", "running_server": "server", "pixels_problem": "schemas"}


def __getattr__(name: str):
    """The web stack's names, imported on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
