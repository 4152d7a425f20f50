"""One way to trace a PyTorch module into an ONNX graph, for both exports (the ONNX file and the
web site's model): the opset, torch's dynamo exporter kept quiet, and its errors as one line."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from cnn_mnist.errors import ExportError, install_hint

ONNX_OPSET = 20

log = logging.getLogger(__name__)


def require_onnx() -> None:
    """An ExportError saying how to install what tracing and checking need, where it is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as err:
        raise ExportError(f"ONNX export needs {err.name or 'onnx'}, which is not installed; "
                          f"{install_hint('export')}") from None


def trace(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
          doc_string: str, dynamic_shapes: dict | None = None):
    """``module`` (in eval mode, weights fp32) traced on ``example`` as a checked ``onnx.ModelProto``
    with its weights inside (one file: far below protobuf's 2 GB limit)."""
    import onnx

    with quiet_exporter():
        try:
            program = torch.onnx.export(module, example, None, input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, opset_version=ONNX_OPSET,
                                        external_data=False, dynamo=True, verbose=False)
        except Exception as err:  # the exporter raises many types; the first line says what failed
            raise ExportError(f"torch.onnx.export failed: {first_line(err)}") from err
    model = program.model_proto
    model.doc_string = doc_string
    onnx.checker.check_model(model, full_check=True)
    return model


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's chatter: missing torchvision ops, optimizer passes logged at INFO,
    deprecation notices deep in torch, and what some onnxscript releases (0.6.0) print to stdout
    ("Applied 1 of general pattern rewrite rules."), which would land in the command's output and
    in front of its --json. Errors still come through; what was printed is logged at DEBUG."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if printed.getvalue().strip():
            log.debug("the ONNX exporter printed: %s", printed.getvalue().strip())


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
