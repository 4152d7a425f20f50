"""The commands: each takes the parsed flags, calls the library and prints what it returns."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from cnn_mnist.cli.output import format_predictions, print_result
from cnn_mnist.errors import CnnMnistError, ConfigError, ModelDirError, install_hint
from cnn_mnist.training.lock import check_model_dir
from cnn_mnist.training.presets import preset

DEFAULT_MODEL_DIR = "runs/mnist_convnet_model"
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
COMMANDS = ("download", "train", "evaluate", "predict", "explain", "report", "export", "serve")

log = logging.getLogger("cnn_mnist")


def download(args) -> None:
    from cnn_mnist.data.download import ensure_mnist

    directory = ensure_mnist(args.data_dir, source_dir=args.source_dir, progress=not args.quiet)
    print_result({"data_dir": str(directory)}, args.json, f"MNIST is ready in {directory}")


def train(args) -> None:
    from cnn_mnist.experiment import train_and_evaluate
    from cnn_mnist.training import distributed

    # The settings' flags (parser.add_settings) hold None unless given: only those override the preset.
    overrides = {name: getattr(args, name) for name in args.settings if getattr(args, name) is not None}
    try:
        config = preset(args.preset).with_overrides(**overrides)
    except ConfigError as err:  # a value out of range: the settings' own check, said as the parser's error
        args.parser.error(str(err))
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
    from cnn_mnist.data.datasets import load_dataset
    from cnn_mnist.model.config import ModelParams
    from cnn_mnist.training.config import RunConfig, TrainConfig
    from cnn_mnist.training.estimator import Estimator
    from cnn_mnist.training.run_record import read_run_config

    _check_device(args.device)
    records = []
    for model_dir in args.model_dir:
        _require_model_dir(model_dir, args.model_dir_is_default)
        records.append(trained := read_run_config(model_dir) or TrainConfig())  # none: an MNIST model
        if args.split == "validation" and trained.train_on_all:
            log.warning("%s was trained on all 60,000 images: the validation split was part of its training",
                        model_dir)
    trained = records[0]  # the data the (first) model was trained on, split as it was
    split = load_dataset(trained.data, args.data_dir, prepare=trained.prepare, test_fraction=trained.test_fraction,
                         seed=trained.run.seed, progress=not args.quiet).split(args.split)
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
    classifier = Estimator(model_dir=args.model_dir[0], params=ModelParams(classes=trained.params.classes),
                           config=RunConfig(device=args.device))
    log.info("Evaluating on %s", classifier.describe())
    results = classifier.evaluate(classifier.input_fn_for(split), name=None if args.split == "test" else args.split,
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
    from cnn_mnist.use import answers
    from cnn_mnist.use.predictor import Predictor

    _check_device(args.device)
    for model_dir in args.model_dir:
        _require_model_dir(model_dir, args.model_dir_is_default)
    inputs = answers.read_arguments(args.inputs, args.data_dir)
    if len(args.model_dir) > 1:
        from cnn_mnist.use.ensemble import Ensemble

        model = Ensemble(args.model_dir, device=args.device)
        about = {"checkpoints": [str(member.checkpoint_path.absolute()) for member in model.members],
                 "global_steps": model.global_steps}
    else:
        model = Predictor(args.model_dir[0], device=args.device)
        about = {"checkpoint": str(model.checkpoint_path.absolute()), "global_step": model.global_step}
    rows = answers.predict(model, inputs)
    if args.save_prepared:
        _save_prepared(args.save_prepared, inputs, rows)
    for row in rows:
        if "error" in row:
            print(f"cnn-mnist: error: {row['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({**about, "predictions": rows}))
    elif any("error" not in row for row in rows):  # errors went to stderr; no table of nothing
        print(format_predictions(rows, model.classes))
    return EXIT_ERROR if any("error" in row for row in rows) else 0


def _save_prepared(directory: str, inputs, rows: list[dict]) -> None:
    """Each picture's prepared pixels as DIR/<its file name>.png; the row says where."""
    from PIL import Image

    from cnn_mnist.use.answers import file_name

    out, taken = Path(directory), set()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item, row in zip(inputs, rows, strict=True):
            if item.prepared is not None:
                path = out / file_name(item.name, taken)
                Image.fromarray(item.prepared, "L").save(path)
                row["prepared_file"] = str(path)
    except OSError as err:
        raise CnnMnistError(f"cannot write the prepared images to {directory}: {err.strerror or err}") from None


def explain(args) -> int:
    from cnn_mnist.files import prepare_output_dir
    from cnn_mnist.use import answers
    from cnn_mnist.use.explain import figure_png
    from cnn_mnist.use.predictor import Predictor

    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    inputs = answers.read_arguments(args.inputs, args.data_dir)
    predictor = Predictor(args.model_dir, device=args.device)
    out = prepare_output_dir(args.output, "--output") if any(item.pixels is not None for item in inputs) else None
    written, taken = [], set()
    for item, explanation in answers.explain(predictor, inputs):
        if explanation is None:
            print(f"cnn-mnist: error: {item.error or item.no_digit}", file=sys.stderr)
            continue
        path = out / answers.file_name(item.name, taken)
        try:
            path.write_bytes(figure_png(explanation, item.name))
        except OSError as err:
            raise CnnMnistError(f"cannot write {path}: {err.strerror or err}") from None
        written.append({"input": item.name, "class": explanation.predicted, "runner_up": explanation.runner_up,
                        "figure": str(path)})
    if args.json:
        print(json.dumps({"checkpoint": str(predictor.checkpoint_path.absolute()), "explanations": written}))
    else:
        for entry in written:
            print(f"{entry['input']}: read as {entry['class']} (runner-up {entry['runner_up']}); "
                  f"wrote {entry['figure']}")
    return EXIT_ERROR if len(written) < len(inputs) else 0


def export(args) -> None:
    from cnn_mnist.use.export import export_model

    _check_device(args.device)
    _require_model_dir(args.model_dir, args.model_dir_is_default)
    result = export_model(args.model_dir, args.format, args.output, data_dir=args.data_dir, device=args.device,
                          web_runtime=args.web_runtime)
    print_result(result.to_dict(), args.json, str(result))


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
