"""The ``cnn-mnist`` command line: download, train, evaluate, predict, report, export, serve.

Intentionally thin: each subcommand parses its flags and calls the library. Problems the
user can fix (a ``CnnMnistError``) end as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_mnist.version import __version__
from cnn_mnist.errors import CnnMnistError, DataError, ModelDirError, TrainingInterrupted, install_hint
from cnn_mnist.kernels.devices import DEVICE_CHOICES, DEVICE_PATTERN
from cnn_mnist.kernels.precision import PRECISIONS
from cnn_mnist.model.config import INITIALIZERS, LR_SCHEDULES, OPTIMIZERS
from cnn_mnist.training.presets import PRESETS, preset
from cnn_mnist.training.lock import check_model_dir

DEFAULT_MODEL_DIR = "runs/mnist_convnet_model"
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
COMMANDS = ("download", "train", "evaluate", "predict", "explain", "report", "export", "serve")

log = logging.getLogger("cnn_mnist")


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
        if stop.saved:
            print(f"cnn-mnist: interrupted at global step {stop.global_step}; a checkpoint of it was saved: run the "
                  "same command again to resume from it", file=sys.stderr)
        else:
            print(f"cnn-mnist: aborted at global step {stop.global_step} by a second Ctrl-C, without saving: the "
                  "steps since the newest checkpoint on disk are lost; run the same command again to resume from "
                  "that checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("cnn-mnist: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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


def print_result(result, as_json: bool, text: str | None = None) -> None:
    """A command's result on stdout: one line of JSON with --json, else ``text`` (default: as Python
    prints it, which is how the tutorial printed its evaluation dict)."""
    print(json.dumps(result) if as_json else text if text is not None else result)


# -- subcommands ---------------------------------------------------------------------------------


def download(args) -> None:
    from cnn_mnist.data.download import ensure_mnist

    directory = ensure_mnist(args.data_dir, source_dir=args.source_dir, progress=not args.quiet)
    print_result({"data_dir": str(directory)}, args.json, f"MNIST is ready in {directory}")


def train(args) -> None:
    from cnn_mnist.experiment import train_and_evaluate
    from cnn_mnist.training import distributed

    overrides = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    if args.train_on_all:
        overrides["train_on_all"] = True
        overrides.setdefault("eval_every", 0)  # the presets' validation split is part of training now
    config = preset(args.preset).with_overrides(**overrides)
    check_model_dir(args.model_dir)  # before MNIST is loaded (or downloaded)
    # under torchrun: join the other processes (NCCL on GPUs, gloo on CPUs); otherwise nothing
    with distributed.process_group(config.run.device):
        chief = distributed.is_chief()
        if not chief:
            logging.getLogger().setLevel(logging.WARNING)  # one log for the whole run: rank 0's
        results = train_and_evaluate(config, args.model_dir, args.data_dir, preset=args.preset,
                                     progress=chief and not args.quiet)
        if chief:
            print_result(results, args.json)


def evaluate(args) -> None:
    from cnn_mnist.data.datasets import load_mnist
    from cnn_mnist.data.inputs import numpy_input_fn
    from cnn_mnist.kernels.devices import inference_batch_size
    from cnn_mnist.training.config import RunConfig
    from cnn_mnist.training.estimator import Estimator
    from cnn_mnist.training.run_record import read_run_config

    _check_device(args.device)
    for model_dir in args.model_dir:
        _require_model_dir(model_dir, args.model_dir_is_default)
        trained = read_run_config(model_dir)
        if args.split == "validation" and trained is not None and trained.train_on_all:
            log.warning("%s was trained on all 60,000 images: the validation split was part of its training",
                        model_dir)
    split = load_mnist(args.data_dir, progress=not args.quiet).split(args.split)
    if args.corruptions:
        _evaluate_corruptions(args, split)
        return
    if len(args.model_dir) > 1:
        from cnn_mnist.use.ensemble import Ensemble

        results = Ensemble(args.model_dir, device=args.device).evaluate(split.images, split.labels)
        for member in results["members"]:
            log.info("member %s (global step %d): accuracy = %.4f, loss = %.4f", member["model_dir"],
                     member["global_step"], member["accuracy"], member["loss"])
        print_result(results, args.json)
        return
    classifier = Estimator(model_dir=args.model_dir[0], config=RunConfig(device=args.device))
    log.info("Evaluating on %s", classifier.describe())
    input_fn = numpy_input_fn(split.images, split.labels, batch_size=inference_batch_size(classifier.device),
                              num_epochs=1, shuffle=False)
    results = classifier.evaluate(input_fn, name=None if args.split == "test" else args.split,
                                  progress=not args.quiet)
    print_result(results, args.json)


def _evaluate_corruptions(args, split) -> None:
    from cnn_mnist.use.ensemble import Ensemble
    from cnn_mnist.use.predictor import Predictor
    from cnn_mnist.data import corruptions
    from cnn_mnist.use.robustness import evaluate_corruptions, format_table

    if not corruptions.available():
        raise CnnMnistError(f"evaluate --corruptions needs scikit-image, which is not installed; "
                            f"{install_hint('robustness')}")
    model = Predictor(args.model_dir[0], device=args.device) if len(args.model_dir) == 1 else \
        Ensemble(args.model_dir, device=args.device)
    count = min(args.corruption_images, len(split.images))
    log.info("Evaluating on the first %d %s digits under the 15 corruptions of MNIST-C (in its style)", count,
             args.split)
    results = evaluate_corruptions(model, split.images[:count].numpy(), split.labels[:count].numpy())
    print_result(results, args.json, format_table(results))


def predict(args) -> int:
    from cnn_mnist.use.predictor import Predictor

    _check_device(args.device)
    for model_dir in args.model_dir:
        _require_model_dir(model_dir, args.model_dir_is_default)
    inputs = _read_predict_inputs(args.inputs, args.data_dir)
    if len(args.model_dir) > 1:
        from cnn_mnist.use.ensemble import Ensemble

        predictor = Ensemble(args.model_dir, device=args.device)
        model = {"checkpoints": [str(member.checkpoint_path.absolute()) for member in predictor.members],
                 "global_steps": predictor.global_steps}
    else:
        predictor = Predictor(args.model_dir[0], device=args.device)
        model = {"checkpoint": str(predictor.checkpoint_path.absolute()), "global_step": predictor.global_step}
    readable = [item for item in inputs if item.pixels is not None]
    for start in range(0, len(readable), PREDICT_BATCH_SIZE):
        batch = readable[start:start + PREDICT_BATCH_SIZE]
        prediction = predictor.predict(np.stack([item.pixels for item in batch]))
        for item, digit, probabilities in zip(batch, prediction.classes.tolist(),
                                              prediction.probabilities.tolist(), strict=True):
            item.row.update({"class": digit, "probabilities": [round(p, 6) for p in probabilities]})
    if args.save_prepared:
        _save_prepared(args.save_prepared, inputs)
    rows = [item.row for item in inputs]
    for row in rows:
        if "error" in row:
            print(f"cnn-mnist: error: {row['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({**model, "predictions": rows}))
    elif any("error" not in row for row in rows):  # errors went to stderr; no table of nothing
        print(format_predictions(rows))
    return EXIT_ERROR if any("error" in row for row in rows) else 0


PREDICT_BATCH_SIZE = 10_000  # inputs per network call (the CPU slices it to its caches itself)


def explain(args) -> int:
    from cnn_mnist.files import prepare_output_dir
    from cnn_mnist.use.explain import explain as explain_digit
    from cnn_mnist.use.explain import figure_png
    from cnn_mnist.use.predictor import Predictor

    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    inputs = _read_predict_inputs(args.inputs, args.data_dir)
    predictor = Predictor(args.model_dir, device=args.device)
    out = prepare_output_dir(args.output, "--output") if any(item.pixels is not None for item in inputs) else None
    written, taken = [], set()
    for item in inputs:
        row = item.row
        if "error" in row or row["no_digit"]:
            print(f"cnn-mnist: error: {row.get('error') or row['detail']}", file=sys.stderr)
            continue
        # the figure of seven.png is seven.png, of test[3] test-3.png, of digits.npy[2] digits-2.png
        name_part = re.sub(r"\.(png|jpe?g|bmp|gif|webp|tiff?|ppm|npy)(?=\[|$)", "", Path(row["input"]).name, flags=re.I)
        stem, n = re.sub(r"[^A-Za-z0-9._-]+", "-", name_part).strip("-") or "image", 1
        while (name := f"{stem}.png" if n == 1 else f"{stem}-{n}.png") in taken:
            n += 1
        taken.add(name)
        explanation = explain_digit(predictor, item.pixels)
        try:
            (out / name).write_bytes(figure_png(explanation, row["input"]))
        except OSError as err:
            raise CnnMnistError(f"cannot write {out / name}: {err.strerror or err}") from None
        written.append({"input": row["input"], "class": explanation.predicted, "runner_up": explanation.runner_up,
                        "figure": str(out / name)})
    if args.json:
        print(json.dumps({"checkpoint": str(predictor.checkpoint_path.absolute()), "explanations": written}))
    else:
        for entry in written:
            print(f"{entry['input']}: read as {entry['class']} (runner-up {entry['runner_up']}); "
                  f"wrote {entry['figure']}")
    return EXIT_ERROR if len(written) < len(inputs) else 0


def format_predictions(rows: list[dict]) -> str:
    """An aligned table: input, class, label and each digit's probability under its digit."""
    shown = [row for row in rows if "error" not in row]  # errors went to stderr
    width = max([len("input")] + [len(row["input"]) for row in shown])
    digits = "".join(f"{digit:>7}" for digit in range(10))
    lines = [f"{'input':<{width}}  class  label{digits}"]
    for row in shown:
        if row["no_digit"]:
            lines.append(f"{row['input']:<{width}}  {row['detail'].removeprefix(row['input'] + ': ')}")
            continue
        label = str(row["label"]) if "label" in row else "-"
        probabilities = "".join(f"{p:>7.3f}" for p in row["probabilities"])
        lines.append(f"{row['input']:<{width}}  {row['class']:>5}  {label:>5}{probabilities}")
    return "\n".join(lines)


@dataclass
class _PredictInput:
    row: dict  # what is printed: input, classes, probabilities, no_digit, and label, detail or error
    pixels: np.ndarray | None = None  # (28, 28) float32 in [0, 1], the network's input; None if unreadable
    prepared: np.ndarray | None = None  # (28, 28) uint8: an image file after prepare_image


def _save_prepared(directory: str, inputs: list[_PredictInput]) -> None:
    """Each image file's prepared pixels as DIR/<its name>.png (-2, -3, ... where names repeat)."""
    from PIL import Image

    out, taken = Path(directory), set()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item in inputs:
            if item.prepared is None:
                continue
            stem, n = Path(item.row["input"]).stem or "image", 1
            while (name := f"{stem}.png" if n == 1 else f"{stem}-{n}.png") in taken:
                n += 1
            taken.add(name)
            Image.fromarray(item.prepared, "L").save(out / name)
            item.row["prepared_file"] = str(out / name)
    except OSError as err:
        raise CnnMnistError(f"cannot write the prepared images to {directory}: {err.strerror or err}") from None


def export(args) -> None:
    from cnn_mnist.use.export import export_model

    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    result = export_model(args.model_dir, args.format, args.output, data_dir=args.data_dir, device=args.device)
    print_result(result.to_dict(), args.json, str(result) if result.parity is None else f"{result}\n{result.parity}")


def report(args) -> None:
    from cnn_mnist.use.report import write_report

    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    path = write_report(args.model_dir, args.output, data_dir=args.data_dir, device=args.device)
    print_result({"report": str(path)}, args.json, f"Report written to {path}")


def serve(args) -> None:
    try:
        from cnn_mnist.use.service import serve as serve_model
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in SERVE_MODULES:
            raise CnnMnistError(f"serve needs {err.name}, which is not installed; {install_hint('serve')}") from None
        raise
    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    try:
        serve_model(args.model_dir, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                    log_level="warning" if args.quiet else "info", device=args.device)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it stopped on: the normal way to stop serving
        log.info("Stopped serving")


SERVE_MODULES = ("fastapi", "uvicorn", "starlette", "pydantic", "multipart", "python_multipart")


def _check_device(name: str) -> None:
    """A device this machine lacks is the first error, before any file is read."""
    from cnn_mnist.kernels.devices import resolve_device

    resolve_device(name)


def _require_model_dir(model_dir: str, is_default: bool = False) -> None:
    """A model directory to read must exist and be a directory; the message says where it looked."""
    path = Path(model_dir).absolute()
    if path.is_dir():
        return
    if path.exists():
        raise ModelDirError(f"--model-dir {path} is a file, not a model directory; pass the directory train wrote")
    if is_default:
        raise ModelDirError(f"no model in {path}: the default --model-dir {DEFAULT_MODEL_DIR} is relative to the "
                            f"current folder ({Path.cwd()}); run from the folder you trained in, pass --model-dir, "
                            "or train first (cnn-mnist train)")
    raise ModelDirError(f"model directory {path} does not exist; check the path, or train first "
                        f"(cnn-mnist train --model-dir {model_dir})")


def _read_predict_inputs(inputs: list[str], data_dir: str | None) -> list[_PredictInput]:
    """INPUTs are test-set indices, .npy files or image files; one _PredictInput per image (a .npy
    may hold many). One that cannot be read carries its one-line error, a blank image no_digit."""
    from cnn_mnist.data.images import prepare_image
    from cnn_mnist.errors import NoDigitError

    test = None
    if any(item.lstrip("-").isdigit() for item in inputs):
        from cnn_mnist.data.datasets import load_mnist

        test = load_mnist(data_dir).test  # no MNIST is an error for the whole command
    read = []

    def add(name: str, pixels=None, prepared=None, **fields):
        row = {"input": name, "class": None, "probabilities": None, "no_digit": False, **fields}
        read.append(_PredictInput(row, pixels, prepared))

    for item in inputs:
        try:
            if item.lstrip("-").isdigit():
                index = int(item)
                if not 0 <= index < len(test):
                    raise DataError(f"test-set index {index} is out of range 0..{len(test) - 1}")
                add(f"test[{index}]", test.images[index].numpy().astype(np.float32) / 255.0,
                    label=int(test.labels[index]))
            elif item.lower().endswith(".npy"):
                batch = load_npy_images(item)
                for i, pixels in enumerate(batch):
                    add(item if len(batch) == 1 else f"{item}[{i}]", pixels)
            else:  # anything else is read as an image file: PNG, JPEG, BMP, GIF, WebP, TIFF, PPM
                prepared = prepare_image(item)
                add(item, prepared.astype(np.float32) / 255.0, prepared)
        except NoDigitError as err:
            add(item, no_digit=True, detail=str(err))
        except DataError as err:
            add(item, error=str(err))
    return read


def load_npy_images(path: str) -> np.ndarray:
    """A .npy file of one or many 28x28 images -> (N, 28, 28) float32 in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0]})") from None
    if array.dtype.kind not in "uif" or array.size == 0:
        raise DataError(f"{path}: expected numeric pixels, got dtype {array.dtype} with {array.size} values")
    if array.shape in ((784,), (28, 28), (1, 28, 28)):
        array = array.reshape(1, 28, 28)
    elif array.ndim == 2 and array.shape[1] == 784 or array.ndim == 4 and array.shape[1:] == (1, 28, 28):
        array = array.reshape(-1, 28, 28)
    elif not (array.ndim == 3 and array.shape[1:] == (28, 28)):
        raise DataError(f"{path}: shape {array.shape} is not 784 pixels or 28x28 images "
                        "(accepted: (784,), (28, 28), (N, 784), (N, 28, 28), (N, 1, 28, 28))")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: pixels contain NaN or infinity")
    if array.min() < 0 or array.max() > 1:
        raise DataError(f"{path}: float pixels must lie in [0, 1] (got {array.min():g}..{array.max():g}); "
                        "scale them, or save uint8 0-255")
    return array


# -- parser --------------------------------------------------------------------------------------

TRAIN_FLAGS = ("steps", "batch_size", "learning_rate", "lr_schedule", "optimizer", "momentum", "dropout",
               "initializer", "seed", "ema_decay", "label_smoothing", "consistency", "eval_every",
               "augment_rotation", "augment_scale", "augment_shear", "augment_shift", "augment_elastic",
               "augment_brightness", "augment_contrast", "augment_noise", "augment_stroke", "augment_erase",
               "augment_outline", "augment_clean_share", "augment_damage_from_epoch",
               "augment_damage_until_epoch",
               "log_probabilities_every", "save_checkpoints_secs", "save_checkpoints_steps",
               "keep_checkpoint_max", "precision", "device", "deterministic", "cuda_graphs")


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


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def directory(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a directory")
    return text


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def device_name(text: str) -> str:
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_CHOICES}, got {text!r}")
    return text


def port_number(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0-65535 (0 picks a free one), got {text}")
    return value


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-q/-v on the top-level parser (default False) and again on each subcommand (default
    SUPPRESS, so a subcommand that is not given them keeps what came before it)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bar or INFO lines: warnings and errors only")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="DEBUG lines too")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the package's one line (and a pointer to --help) instead of a
    usage block followed by ``cnn-mnist train: error: ...``."""

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
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name, function, help_text, json_help="print the result as one line of JSON"):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command=function, parser=sub)
        _add_verbosity(sub, default=argparse.SUPPRESS)
        if json_help:
            sub.add_argument("--json", action="store_true", help=json_help)
        return sub

    def data_dir(sub):
        sub.add_argument("--data-dir", type=directory, metavar="DIR",
                         help="where MNIST is cached (default: $CNN_MNIST_DATA, else ~/.cache/cnn_mnist)")

    def device(sub):
        sub.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                         help="auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps (default: auto)")

    def model_dir(sub, several=False):
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

    sub = command("download", download, "fetch and verify the four MNIST files", "print the data directory as JSON")
    data_dir(sub)
    sub.add_argument("--source-dir", type=directory, metavar="DIR",
                     help="take the IDX files (raw or .gz) from this directory before trying the network")

    sub = command("train", train, "train (resuming from the newest checkpoint), then evaluate on the test set")
    model_dir(sub)
    data_dir(sub)
    sub.add_argument("--preset", default="tutorial", choices=sorted(PRESETS),
                     help="the recipe to start from; explicit flags override it (default: tutorial)")
    tutorial = _flatten(PRESETS["tutorial"].to_dict())

    def train_flag(flag, help_text, **kwargs):
        name = flag[2:].replace("-", "_")
        default = "off" if tutorial[name] is None else tutorial[name]
        sub.add_argument(flag, help=f"{help_text} (tutorial: {default})", **kwargs)

    train_flag("--steps", "global step to train to: an absolute target, so a re-run never trains past it",
               type=positive_int, metavar="N")
    train_flag("--batch-size", "images per step; under torchrun, all processes together", type=positive_int,
               metavar="N")
    train_flag("--learning-rate", "optimizer step size", type=positive_float, metavar="LR")
    train_flag("--lr-schedule", "constant, or one_cycle (warm-up, then linear decay to 0 at --steps)",
               choices=LR_SCHEDULES)
    train_flag("--optimizer", "sgd (plain), momentum or adam", choices=OPTIMIZERS)
    train_flag("--momentum", "momentum coefficient of the momentum optimizer", type=fraction, metavar="M")
    train_flag("--dropout", "fraction of the dense units dropped in training", type=fraction, metavar="RATE")
    train_flag("--initializer", "glorot (TensorFlow's) or pytorch (PyTorch's layer defaults)", choices=INITIALIZERS)
    train_flag("--ema-decay", "keep a moving average of the weights with this decay per step, and evaluate "
               "and predict with it; 0 turns it off", type=fraction, metavar="D")
    train_flag("--label-smoothing", "train towards 1 - X on the true class and X/10 on each class; 0 turns it off",
               type=fraction, metavar="X")
    train_flag("--consistency", "show each image clean and damaged (twice the work a step): learn the label from "
               "the clean one, and W times the Jensen-Shannon divergence between the two predictions (AugMix's "
               "loss); needs a damage ingredient; 0 turns it off", type=non_negative_float, metavar="W")
    train_flag("--augment-rotation", "rotate each training image by a random angle in +-DEG", type=non_negative_float,
               metavar="DEG")
    train_flag("--augment-scale", "resize each training image by a random factor in 1 +- F", type=fraction,
               metavar="F")
    train_flag("--augment-shear", "shear each training image by a random angle in +-DEG", type=non_negative_float,
               metavar="DEG")
    train_flag("--augment-shift", "move each training image by up to +-PX pixels on each axis",
               type=non_negative_float, metavar="PX")
    train_flag("--augment-elastic", "distort each training image by a smooth random field of about PX pixels",
               type=non_negative_float, metavar="PX")
    train_flag("--augment-brightness", "add a grey background of a random level in [0, B] to each training image",
               type=fraction, metavar="B")
    train_flag("--augment-contrast", "make each training image's ink fainter by a random factor in [1 - C, 1]",
               type=fraction, metavar="C")
    train_flag("--augment-noise", "add Gaussian pixel noise of a random standard deviation in [0, S]",
               type=non_negative_float, metavar="S")
    train_flag("--augment-stroke", "thicken or thin each training image's strokes by up to PX of a pixel "
               "per side (at most 1)", type=non_negative_float, metavar="PX")
    train_flag("--augment-erase", "fill a random rectangle of up to A of the area (0.02-0.5) of half the "
               "training images with a random grey", type=fraction, metavar="A")
    train_flag("--augment-outline", "replace this share of the training images, at random, by their strokes' "
               "outline (hollow strokes)", type=fraction, metavar="S")
    train_flag("--augment-clean-share", "leave this share of the training images, at random, without the pen, "
               "outline, erasing, brightness, contrast and noise changes", type=fraction, metavar="S")
    train_flag("--augment-damage-from-epoch", "start the pen, outline, erasing, brightness, contrast and noise "
               "changes after this many epochs (the network learns clean digits first)",
               type=non_negative_float, metavar="E")
    train_flag("--augment-damage-until-epoch", "stop those changes after this many epochs (the network ends on "
               "clean digits); 0 never stops them", type=non_negative_float, metavar="E")
    train_flag("--seed", "seeds weights, data order, dropout and augmentation", type=int, metavar="N")
    train_flag("--eval-every", "evaluate on the 5,000 validation images every N steps and at the end; 0 turns "
               "it off", type=non_negative_int, metavar="N")
    train_flag("--log-probabilities-every", "log a batch's softmax probabilities every N steps; 0 turns it off",
               type=non_negative_int, metavar="N")
    train_flag("--save-checkpoints-secs", "seconds between checkpoints", type=positive_float, metavar="S")
    train_flag("--save-checkpoints-steps", "steps between checkpoints; replaces --save-checkpoints-secs",
               type=positive_int, metavar="N")
    train_flag("--device", "auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps; torchrun "
               "gives each process its own GPU", type=device_name, metavar="DEVICE")
    train_flag("--precision", "fp32; bf16 or fp16 autocast (fp16 with a gradient scaler); auto: bf16 where the "
               "CPU or GPU runs it natively, fp16 on GPUs without bf16, else fp32", choices=PRECISIONS)
    train_flag("--deterministic", "use torch's deterministic algorithms: on a GPU, the same seed then gives the "
               "same weights, and kill-and-resume the uninterrupted run's (CPU runs are deterministic anyway)",
               action=argparse.BooleanOptionalAction, default=None)
    train_flag("--cuda-graphs", "on a CUDA GPU, replay the training step as one captured CUDA graph (one process, "
               "sgd or adam, not fp16); elsewhere it changes nothing", action=argparse.BooleanOptionalAction,
               default=None)
    train_flag("--keep-checkpoint-max", "how many of the newest checkpoints to keep", type=positive_int, metavar="N")
    sub.add_argument("--train-on-all", action="store_true",
                     help="train on all 60,000 training images instead of 55,000 (no validation split)")

    sub = command("evaluate", evaluate, "accuracy and loss of the newest checkpoint on a whole split")
    model_dir(sub, several=True)
    data_dir(sub)
    sub.add_argument("--split", choices=("test", "validation"), default="test", help="which split (default: test)")
    sub.add_argument("--corruptions", action="store_true",
                     help="accuracy under each of MNIST-C's 15 corruptions (in its style) and their mean, instead")
    sub.add_argument("--corruption-images", type=positive_int, default=1000, metavar="N",
                     help="with --corruptions: the first N digits of the split (default: 1000)")
    device(sub)

    sub = command("predict", predict, "classes and probabilities for image files, test-set images or .npy files",
                  "print JSON: the checkpoint, its global step, and per input its class and probabilities")
    sub.epilog = ("Image files are prepared as MNIST was made: ink found against the paper (either polarity), "
                  "cropped, scaled to 20 pixels on the longer side and centred by mass in 28x28. A blank image is "
                  "answered 'no digit found'. Exit status 1 if any INPUT could not be read (its error is printed, "
                  "the other inputs are still answered), else 0.")
    model_dir(sub, several=True)
    data_dir(sub)
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="an image file (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM; any size, dark on light or light "
                          "on dark), a test-set index (0-9999), or a .npy file of 784 pixels or 28x28 images")
    sub.add_argument("--save-prepared", type=directory, metavar="DIR",
                     help="write the 28x28 image the network saw for each image file to DIR/<name>.png")
    device(sub)

    sub = command("explain", explain, "what each layer of the network makes of each image, and which pixels "
                  "decided: one PNG figure per image", "print JSON: the checkpoint and, per input, its class and "
                  "figure")
    sub.epilog = ("INPUTs are read as predict reads them. Each figure shows the input, conv1's 32 maps after ReLU "
                  "and after pooling, conv2's 64 likewise, the 1,024 dense units, the integrated-gradients "
                  "attribution towards the answer against the runner-up, conv1's filters and the probabilities. "
                  "Exit status 1 if any INPUT could not be read or holds no digit.")
    model_dir(sub)
    data_dir(sub)
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="an image file, a test-set index (0-9999), or a .npy file of 28x28 images")
    sub.add_argument("-o", "--output", type=directory, default="explanations", metavar="DIR",
                     help="folder for the figures, <input name>.png each (default: ./explanations)")
    sub.add_argument("--out", type=directory, dest="output", help=argparse.SUPPRESS)  # the old name
    device(sub)

    sub = command("report", report, "write an HTML report of a trained model: training curves, confusion matrix, "
                  "per-class scores, the most confident mistakes, calibration and first-layer filters",
                  "print the report's path as JSON")
    model_dir(sub)
    data_dir(sub)
    sub.add_argument("-o", "--output", type=directory, metavar="DIR",
                     help="folder for report.html, its PNGs and metrics.json (default: <model-dir>/report)")
    sub.add_argument("--out", type=directory, dest="output", help=argparse.SUPPRESS)  # the old name
    device(sub)

    sub = command("export", export, "write the newest checkpoint as ONNX (checked against PyTorch in onnxruntime) "
                  "or safetensors", "print what was written as JSON")
    model_dir(sub)
    data_dir(sub)
    sub.add_argument("--format", choices=("onnx", "safetensors"),
                     help="onnx: network, softmax and argmax in one file, parity-checked on 1,000 test images; "
                          "safetensors: the weights alone (default: from --output's suffix, else onnx)")
    sub.add_argument("-o", "--output", type=directory, metavar="PATH",
                     help="file to write (default: <model-dir>/export/model.onnx or model.safetensors)")
    device(sub)

    sub = command("serve", serve, "answer POST /v1/predict over HTTP and serve a draw-a-digit page at /",
                  json_help=None)
    model_dir(sub)
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    sub.add_argument("--port", type=port_number, default=8000, help="TCP port, 0-65535; 0 picks a free one "
                     "(default: 8000)")
    sub.add_argument("--max-body-bytes", type=positive_int, default=4 * 1024 * 1024, metavar="N",
                     help="refuse request bodies over N bytes with 413 (default: 4194304)")
    device(sub)
    return parser
