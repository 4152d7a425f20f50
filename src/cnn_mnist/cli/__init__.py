"""The ``cnn-mnist`` command line: download, train, evaluate, predict, explain, report, export, serve.

A thin layer over the library: ``parser`` reads the flags (train's generated from the settings
dataclasses), ``commands`` calls the library, ``inputs`` reads predict's and explain's INPUTs and
``output`` prints. Problems the user can fix (a ``CnnMnistError``) end as one line on stderr and a
non-zero exit status.
"""

from __future__ import annotations

import logging
import sys

from cnn_mnist.cli.commands import COMMANDS, EXIT_ERROR, EXIT_INTERRUPTED
from cnn_mnist.cli.parser import build_parser, parse_arguments
from cnn_mnist.errors import CnnMnistError, TrainingInterrupted

__all__ = ["COMMANDS", "build_parser", "main", "parse_arguments"]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s:%(name)s:%(message)s", stream=sys.stderr)
    if args.verbose:  # this package's DEBUG lines, not every library's (PIL, matplotlib, asyncio, ...)
        logging.getLogger("cnn_mnist").setLevel(logging.DEBUG)
    try:
        return args.command(args) or 0
    except CnnMnistError as err:
        print(f"cnn-mnist: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except TrainingInterrupted as stop:
        print(f"cnn-mnist: {stop.sentence()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("cnn-mnist: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
