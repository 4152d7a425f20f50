"""The command line: every subcommand end to end on tiny data, and one-line errors for bad input."""

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL_STEPS, SMALL_MODEL_TRAIN, write_mnist_dir
from helpers import SEVEN, SKIP_MD5_CHECK, draw_digit, one_line_error

from cnn_mnist.cli import main, parse_arguments
from cnn_mnist.data.datasets import FILES
from cnn_mnist.training.checkpoints import content_digest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "20", "--optimizer", "adam", "--log-probabilities-every", "0"]


def run_cli(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("command, flags", [
    ("download", ["--data-dir", "--source-dir"]),
    ("train", ["--model-dir", "--steps", "--batch-size", "--learning-rate", "--optimizer", "--dropout", "--seed",
               "--log-probabilities-every", "--initializer", "--save-checkpoints-secs", "--save-checkpoints-steps",
               "--keep-checkpoint-max", "--data-dir", "--preset", "--train-on-all", "--ema-decay", "--eval-every",
               "--precision", "--lr-schedule"]),
    ("evaluate", ["--model-dir", "--split", "--data-dir", "--json"]),
    ("predict", ["--model-dir", "--data-dir", "--json", "--save-prepared", "INPUT", "Exit status 1"]),
    ("export", ["--model-dir", "--data-dir", "--format", "--output"]),
    ("report", ["--model-dir", "--data-dir", "--output"]),
])
def test_every_subcommand_documents_its_flags(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in flags:
        assert flag in help_text


def test_defaults_are_the_tutorials():
    args = parse_arguments(["train"])
    assert args.model_dir == "runs/mnist_convnet_model" and args.preset == "tutorial"


def test_train_then_evaluate_prints_the_result_dict(model_dir, tiny_mnist_dir, no_verify, capsys):
    status, out, err = run_cli(capsys, "train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                               *FAST)
    assert status == 0
    assert out.startswith("{'accuracy': ") and "'global_step': 20" in out
    config = json.loads((model_dir / "config.json").read_text())
    assert config["steps"] == 20 and config["params"]["optimizer"] == "adam" and config["preset"] == "tutorial"
    assert config["params"]["learning_rate"] == 0.001 and config["batch_size"] == 100  # from the preset


def test_train_ends_with_the_figures_evaluate_prints(model_dir, tiny_mnist_dir, no_verify, capsys):
    # bf16 training: train's closing evaluation is evaluate's, in fp32. A few small steps show it: on a CPU
    # without native bf16 (emulated), 40 of the fast preset's 256-image steps took 140 s.
    status, trained, _ = run_cli(capsys, "train", "--json", "--preset", "fast", "--steps", "4", "--batch-size", "32",
                                 "--eval-every", "0", "--precision", "bf16",
                                 "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir))
    assert status == 0
    status, evaluated, _ = run_cli(capsys, "evaluate", "--json", "--model-dir", str(model_dir), "--data-dir",
                                   str(tiny_mnist_dir))
    assert status == 0 and json.loads(trained) == json.loads(evaluated)


def test_eval_every_logs_validation_during_training(model_dir, tiny_mnist_dir, no_verify, capsys, caplog):
    caplog.set_level(logging.INFO)
    status, out, err = run_cli(capsys, "train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                               *FAST, "--eval-every", "8", "--ema-decay", "0.9")
    assert status == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation at step")]
    assert [line.split(":")[0] for line in lines] == ["validation at step 8", "validation at step 16",
                                                      "validation at step 20"]
    assert json.loads((model_dir / "config.json").read_text())["params"]["ema_decay"] == 0.9


def test_rerunning_train_never_trains_past_steps(small_model_copy, tiny_mnist_dir, no_verify, capsys):
    status, out, _ = run_cli(capsys, "train", "--model-dir", str(small_model_copy), "--data-dir", str(tiny_mnist_dir),
                             *SMALL_MODEL_TRAIN)  # the command that trained it, again
    assert status == 0 and f"'global_step': {SMALL_MODEL_STEPS}" in out


def test_evaluate_json_and_validation_split(small_model_copy, tiny_mnist_dir, no_verify, capsys):
    assert not (small_model_copy / "eval_validation").exists()  # trained without validation
    status, out, _ = run_cli(capsys, "evaluate", "--model-dir", str(small_model_copy), "--data-dir",
                             str(tiny_mnist_dir), "--json")
    results = json.loads(out)
    assert status == 0 and results["global_step"] == SMALL_MODEL_STEPS and results["accuracy"] > 0.5
    status, out, _ = run_cli(capsys, "evaluate", "--model-dir", str(small_model_copy), "--data-dir",
                             str(tiny_mnist_dir), "--split", "validation", "--json")
    assert status == 0 and json.loads(out)["global_step"] == SMALL_MODEL_STEPS
    assert (small_model_copy / "eval_validation").is_dir()


def test_predict_test_indices_and_npy_files(small_model, tiny_mnist_dir, no_verify, tmp_path, capsys):
    from cnn_mnist.data.datasets import load_mnist

    test = load_mnist(tiny_mnist_dir, download=False).test
    np.save(tmp_path / "one.npy", test.images[3].numpy())  # uint8 28x28
    np.save(tmp_path / "many.npy", test.images[:2].numpy().reshape(2, 784).astype(np.float32) / 255)
    status, out, _ = run_cli(capsys, "predict", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir),
                             "0", str(tmp_path / "one.npy"), str(tmp_path / "many.npy"), "--json")
    assert status == 0
    result = json.loads(out)
    rows = result["predictions"]
    assert result["global_step"] == SMALL_MODEL_STEPS
    assert [row["input"] for row in rows] == ["test[0]", str(tmp_path / "one.npy"), f"{tmp_path / 'many.npy'}[0]",
                                              f"{tmp_path / 'many.npy'}[1]"]
    assert rows[0]["label"] == int(test.labels[0]) and "label" not in rows[1]
    assert rows[0]["probabilities"] == pytest.approx(rows[2]["probabilities"], abs=1e-6)  # same image
    assert all(sum(row["probabilities"]) == pytest.approx(1, abs=1e-4) for row in rows)
    assert result["checkpoint"] == str(small_model / f"model.ckpt-{SMALL_MODEL_STEPS}.pt")
    assert all(row["class"] == int(np.argmax(row["probabilities"])) for row in rows)
    status, out, _ = run_cli(capsys, "predict", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir),
                             "5", "6")
    header, *lines = out.splitlines()
    assert header.split() == ["input", "class", "label", *map(str, range(10))] and len(lines) == 2
    for line, index in zip(lines, (5, 6), strict=True):  # each probability under its digit
        assert line.startswith(f"test[{index}] ") and len(line) == len(header)
        cells = line.split()
        assert cells[2] == str(int(test.labels[index])) and sum(map(float, cells[3:])) == pytest.approx(1, abs=0.01)
        assert int(cells[1]) == max(range(10), key=lambda digit: float(cells[3 + digit]))


def write_images(directory):
    """A 7 as PNG and as JPEG, a blank PNG, a text file and a truncated PNG."""
    seven = draw_digit(SEVEN, size=(120, 160), ink="black", paper="white", mode="RGB")
    seven.save(directory / "seven.png")
    seven.save(directory / "seven.jpg", quality=75)
    draw_digit([], size=100, paper="white", mode="RGB").save(directory / "blank.png")
    (directory / "notes.txt").write_text("not an image")
    (directory / "cut.png").write_bytes((directory / "seven.png").read_bytes()[:100])


def test_predict_image_files_and_save_what_the_network_saw(small_model, tmp_path, capsys):
    from PIL import Image

    from cnn_mnist.data.images import prepare_image
    from cnn_mnist.use.predictor import Predictor

    write_images(tmp_path)
    files = [str(tmp_path / name) for name in ("seven.png", "seven.jpg", "blank.png")]
    status, out, err = run_cli(capsys, "predict", "--model-dir", str(small_model), *files,
                               "--save-prepared", str(tmp_path / "seen"))
    _, *lines = out.splitlines()
    assert status == 0 and err == "" and len(lines) == 3
    expected = Predictor(small_model).predict(prepare_image(files[0]))
    assert lines[0].split()[:3] == [files[0], str(expected.classes[0]), "-"]
    assert lines[1].split()[0] == files[1] and lines[1].split()[1] in list("0123456789")
    assert lines[2].startswith(f"{files[2]}  no digit found")
    saved = sorted(path.name for path in (tmp_path / "seen").iterdir())
    assert saved == ["seven-2.png", "seven.png"]  # one per image with a digit, named after it
    assert (Image.open(tmp_path / "seen" / "seven.png").size, Image.open(tmp_path / "seen" / "seven.png").mode) == (
        (28, 28), "L")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seen" / "seven.png")), prepare_image(files[0]))


def test_predict_answers_every_file_and_fails_for_unreadable_ones(small_model, tiny_mnist_dir, no_verify, tmp_path,
                                                                   capsys):
    write_images(tmp_path)
    names = ("seven.png", "notes.txt", "blank.png", "cut.png", "missing.png")
    status, out, err = run_cli(capsys, "predict", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir),
                               *(str(tmp_path / name) for name in names), "3", "--json")
    assert status == 1
    result = json.loads(out)
    rows = {row["input"].rsplit("/", 1)[-1]: row for row in result["predictions"]}
    assert result["global_step"] == SMALL_MODEL_STEPS and len(rows) == 6
    assert rows["seven.png"]["class"] in range(10) and sum(rows["seven.png"]["probabilities"]) == pytest.approx(1)
    assert rows["test[3]"]["class"] in range(10) and "label" in rows["test[3]"]
    assert rows["blank.png"]["no_digit"] and rows["blank.png"]["class"] is None
    assert "no digit found" in rows["blank.png"]["detail"] and "error" not in rows["blank.png"]
    assert "not an image" in rows["notes.txt"]["error"] and rows["notes.txt"]["probabilities"] is None
    assert "truncated or corrupt" in rows["cut.png"]["error"]
    assert "missing.png: file not found" in rows["missing.png"]["error"]
    errors = err.splitlines()  # one line per unreadable file, naming it
    assert len(errors) == 3 and all(line.startswith("cnn-mnist: error: ") for line in errors)
    assert [name for name in ("notes.txt", "cut.png", "missing.png") if any(name in line for line in errors)] == [
        "notes.txt", "cut.png", "missing.png"]


def test_explain_writes_a_figure_per_digit_and_errors_as_predict(small_model, tiny_mnist_dir, no_verify, tmp_path,
                                                                  capsys):
    pytest.importorskip("captum")
    from PIL import Image

    write_images(tmp_path)
    out_dir = tmp_path / "figures"
    names = ("seven.png", "notes.txt", "blank.png")
    status, out, err = run_cli(capsys, "explain", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir),
                               *(str(tmp_path / name) for name in names), "3", "--output", str(out_dir))
    assert status == 1  # an unreadable file and a blank one: answered as predict answers them
    assert sorted(path.name for path in out_dir.iterdir()) == ["seven.png", "test-3.png"]
    for path in out_dir.iterdir():
        with Image.open(path) as figure:
            assert figure.format == "PNG" and figure.width > 1000 and figure.height > 1000
    lines = out.splitlines()
    assert len(lines) == 2 and all("read as" in line and "wrote " in line for line in lines)
    assert str(out_dir / "test-3.png") in out
    errors = err.splitlines()
    assert len(errors) == 2 and all(line.startswith("cnn-mnist: error: ") for line in errors)
    assert "not an image" in errors[0] and "no digit found" in errors[1]
    status, out, _ = run_cli(capsys, "explain", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir), "3",
                             "--out", str(out_dir), "--json")  # the old name of --output still works
    result = json.loads(out)
    assert status == 0 and result["explanations"][0]["figure"] == str(out_dir / "test-3.png")


def test_evaluate_corruptions_prints_each_accuracy_and_the_mean(small_model, tiny_mnist_dir, no_verify, capsys):
    pytest.importorskip("skimage")
    from cnn_mnist.data.corruptions import CORRUPTIONS

    argv = ["evaluate", "--corruptions", "--corruption-images", "12", "--model-dir", str(small_model),
            "--data-dir", str(tiny_mnist_dir)]
    status, out, _ = run_cli(capsys, *argv, "--json")
    result = json.loads(out)
    assert status == 0 and result["images"] == 12 and list(result["corruptions"]) == list(CORRUPTIONS)
    assert result["mean"] == pytest.approx(sum(result["corruptions"].values()) / 15)
    assert result["worst"]["accuracy"] == min(result["corruptions"].values()) and 0 <= result["clean"] <= 1
    status, out, _ = run_cli(capsys, *argv)
    lines = out.splitlines()
    assert status == 0 and len(lines) == 18 and lines[-1].startswith("mean of 15")
    assert json.loads(run_cli(capsys, *argv, "--json")[1]) == result  # the same corrupted digits every run


def test_every_setting_is_one_train_flag_with_its_docstring_as_help():
    """Adding a setting is adding one field: its flag, metavar or choices and help come from the field.
    Every field of TrainConfig and of its sections has one docstring paragraph; every field not kept
    off the command line is exactly one flag, and every flag of train's settings groups is a field."""
    import argparse
    import dataclasses
    import typing

    from cnn_mnist.cli import build_parser
    from cnn_mnist.cli.parser import SETTINGS, field_docs
    from cnn_mnist.data.augment import Augmentation
    from cnn_mnist.training.config import TrainConfig

    train = next(action for action in build_parser()._actions
                 if isinstance(action, argparse._SubParsersAction)).choices["train"]
    hints = typing.get_type_hints(TrainConfig)
    sections = {hints[f.name] for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(hints[f.name])}
    assert {settings for _, settings, _ in SETTINGS} == {TrainConfig, *sections}  # no section left without flags
    groups = {group.title: group._group_actions for group in train._action_groups}
    for title, settings, prefix in SETTINGS:
        docs = field_docs(settings)
        expected = []
        for setting in dataclasses.fields(settings):
            doc = docs.get(setting.name, "")
            assert doc and "\n\n" not in doc, f"{settings.__name__}.{setting.name}: one docstring paragraph"
            if setting.default is not dataclasses.MISSING and setting.metadata.get("flag") is not False:
                expected.append(setting)
        actions = groups[title]
        assert [action.dest for action in actions] == [f"{prefix.replace('-', '_')}{s.name}" for s in expected]
        for action, setting in zip(actions, expected, strict=True):
            assert action.option_strings[0] == f"--{prefix}{setting.name.replace('_', '-')}"
            assert " ".join(docs[setting.name].split()).lower().rstrip(".") in action.help.lower(), action.help
            assert action.metavar == setting.metadata.get("metavar") and action.default is None
    flags = {action.dest: action for action in train._actions}
    settings_flags = [action.dest for title, _, _ in SETTINGS for action in groups[title]]
    assert train.get_default("settings") == tuple(settings_flags) and len(flags) == len(train._actions)
    # the flags that are not settings: where the run lives and how it is told
    assert set(flags) - set(settings_flags) == {"help", "quiet", "verbose", "json", "model_dir", "data_dir", "preset"}
    assert flags["augment_rotation"].option_strings == ["--augment-rotation"]
    assert not {"warmup_fraction", "log_step_count_steps"} & set(flags)  # kept off the command line
    assert dataclasses.fields(Augmentation)[0].metadata["metavar"] == "DEG"


def test_bad_numbers_are_rejected_by_the_parser(capsys):
    """A settings flag's value is checked by its dataclass (__post_init__, the one check), at the
    flag; a check across settings when the config is built; both as the parser's one line."""
    for argv, message in ((["train", "--steps", "-5"], "argument --steps: steps must be a positive number, got -5"),
                          (["train", "--batch-size", "0"], "batch size must be a positive number, got 0"),
                          (["train", "--learning-rate", "abc"], "argument --learning-rate: not a number"),
                          (["train", "--learning-rate", "inf"], "learning rate must be a positive number, got inf"),
                          (["train", "--dropout", "1.5"], "argument --dropout: dropout must be in [0, 1)"),
                          (["train", "--augment-erase", "0.9"], "augmentation erase must be at most 0.5"),
                          (["train", "--eval-every", "5", "--train-on-all"],
                           "train: eval-every needs the validation split"),
                          (["train", "--consistency", "1"], "train: consistency compares each image with its "
                                                            "damaged view"),
                          (["evaluate", "--data-dir", ""], "is empty; give a directory")):
        one_line_error(capsys, argv, message, status=2)


def test_evaluate_on_an_empty_or_missing_model_dir(tmp_path, tiny_mnist_dir, no_verify, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["evaluate", "--model-dir", str(tmp_path / "empty"), "--data-dir", str(tiny_mnist_dir)],
                   "no checkpoint in")
    one_line_error(capsys, ["predict", "--model-dir", str(tmp_path / "nope"), "--data-dir", str(tiny_mnist_dir), "1"],
                   f"model directory {tmp_path / 'nope'} does not exist; check the path, or train first")


def test_an_empty_data_dir_with_no_source_reachable(tmp_path, monkeypatch, capsys):
    from cnn_mnist.data import download

    offline = functools.partial(download.ensure_mnist, mirrors=("http://127.0.0.1:9/",), npm=None)
    monkeypatch.setattr(download, "ensure_mnist", offline)
    status = main(["download", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("cnn-mnist: error: ") and "Traceback" not in err
    assert "train-images-idx3-ubyte" in err and "--source-dir" in err


def test_a_data_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a directory")
    one_line_error(capsys, ["download", "--data-dir", str(tmp_path / "file")],
                   f"data directory {tmp_path / 'file'} is a file; pass --data-dir a directory")
    one_line_error(capsys, ["download", "--data-dir", str(tmp_path / "file" / "mnist")],
                   f"cannot create data directory {tmp_path / 'file' / 'mnist'}: Not a directory")
    monkeypatch.setenv("CNN_MNIST_DATA", str(tmp_path / "file"))  # not named on the command line
    one_line_error(capsys, ["download"], f"data directory {tmp_path / 'file'} (the default: $CNN_MNIST_DATA, else "
                   "~/.cache/cnn_mnist) is a file")


def test_truncated_and_wrong_magic_idx_files(tmp_path, no_verify, capsys):
    data = write_mnist_dir(tmp_path / "data", train=5_100, test=10)
    path = data / FILES["test"][1]
    path.write_bytes(path.read_bytes()[:-3])
    argv = ["train", "--model-dir", str(tmp_path / "m"), "--data-dir", str(data), *FAST]
    one_line_error(capsys, argv, "t10k-labels-idx1-ubyte: byte length")
    (data / FILES["train"][0]).write_bytes((data / FILES["test"][0]).read_bytes().replace(b"\x08\x03", b"\x08\x01", 1))
    one_line_error(capsys, argv, "train-images-idx3-ubyte: wrong magic number 2049")


def test_checkpoint_of_another_shape(small_model_copy, tiny_mnist_dir, no_verify, capsys):
    path = small_model_copy / f"model.ckpt-{SMALL_MODEL_STEPS}.pt"
    state = torch.load(path, weights_only=True)
    state["network"]["dense.weight"] = torch.zeros(512, 3136)
    del state["sha256"]
    torch.save({**state, "sha256": content_digest(state)}, path)  # intact, but another model's
    one_line_error(capsys, ["evaluate", "--model-dir", str(small_model_copy), "--data-dir", str(tiny_mnist_dir)],
                   "checkpoint of another model (dense.weight: (512, 3136) saved, (1024, 3136) here)")


def test_bad_npy_inputs(small_model, tiny_mnist_dir, no_verify, tmp_path, capsys):
    np.save(tmp_path / "shape.npy", np.zeros((3, 30)))
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    np.save(tmp_path / "range.npy", np.full((28, 28), 7.0))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    base = ["predict", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir)]
    for name, message in (("shape.npy", "shape (3, 30) is not 784 pixels"), ("nan.npy", "NaN"),
                          ("range.npy", "must lie in [0, 1]"), ("junk.npy", "not a readable .npy"),
                          ("missing.npy", "file not found")):
        one_line_error(capsys, [*base, str(tmp_path / name)], message)
    one_line_error(capsys, [*base, "10000"], "out of range 0..299")


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "cnn_mnist", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "download" in result.stdout and "predict" in result.stdout


def test_predict_says_which_checkpoint_it_used(small_model, tiny_mnist_dir, no_verify, capsys, caplog):
    caplog.set_level(logging.INFO)
    status, out, err = run_cli(capsys, "predict", "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir),
                               "0")
    assert status == 0
    checkpoint = small_model / f"model.ckpt-{SMALL_MODEL_STEPS}.pt"
    assert f"Loaded {checkpoint} (global step {SMALL_MODEL_STEPS}" in caplog.text


# -- progress ------------------------------------------------------------------------------------

# The CLI in a process of its own (logging set up as a user gets it), except that the synthetic
# files skip the MD5 check, as no_verify does in-process.
CLI_PROGRAM = f"import sys; {SKIP_MD5_CHECK}; from cnn_mnist.cli import main; sys.exit(main(sys.argv[1:]))"


def run_cli_process(*argv, terminal=False) -> tuple[int, str, str]:
    """(exit status, stdout, stderr); with ``terminal``, both go to one pseudo-terminal 120 wide."""
    command = [sys.executable, "-c", CLI_PROGRAM, *argv]
    if not terminal:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        return result.returncode, result.stdout, result.stderr
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=120), output.decode(errors="replace"), ""


def test_off_a_terminal_train_logs_plain_progress_lines_and_the_tensorboard_command(model_dir, tiny_mnist_dir):
    status, out, err = run_cli_process("train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                                       *FAST)
    assert status == 0, err
    assert f"tensorboard --logdir {model_dir}" in err
    assert "INFO:cnn_mnist.progress:train: step 20/20 (100%), loss " in err  # the closing line
    assert "INFO:cnn_mnist.progress:evaluate: image " in err
    assert "\r" not in err and "%|" not in err  # no bar redrawing in a log
    assert "'global_step': 20" in out


def test_quiet_silences_progress_and_info(model_dir, tiny_mnist_dir):
    for argv, terminal in ((["train", "-q", *FAST], True), (["evaluate", "--quiet"], False)):
        status, out, err = run_cli_process(*argv, "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                                           terminal=terminal)
        assert status == 0
        assert "INFO" not in out + err and "%|" not in out + err
        assert "accuracy" in out


def test_on_a_terminal_train_draws_a_bar_with_the_log_lines_above_it(model_dir, tiny_mnist_dir):
    status, text, _ = run_cli_process("train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir),
                                      *FAST, terminal=True)
    assert status == 0, text[-2000:]
    assert "train: 100%|" in text and "20/20" in text  # tqdm's bar, redrawn in place
    assert "loss " in text and "images/s " in text
    assert "evaluate: 100%|" in text
    assert "INFO:cnn_mnist.training.hooks:loss = " in text  # the tutorial's lines are still shown
    assert "INFO:cnn_mnist.progress" not in text  # the bar replaces the plain lines


def test_train_on_all_turns_the_presets_validation_off_but_an_explicit_one_is_an_error(
        model_dir, tiny_mnist_dir, no_verify, capsys):
    status, out, err = run_cli(capsys, "train", "--train-on-all", "--model-dir", str(model_dir), "--data-dir",
                               str(tiny_mnist_dir), *FAST)
    assert status == 0 and "'global_step': 20" in out
    one_line_error(capsys, ["train", "--train-on-all", "--eval-every", "10", "--model-dir", str(model_dir),
                            "--data-dir", str(tiny_mnist_dir), *FAST], "eval-every needs the validation split",
                   status=2)  # a check across settings (TrainConfig's), said as the parser's error


# -- every bad input is one line, before any expensive work ---------------------------------------


def test_a_model_dir_that_is_a_file_or_inside_one(tmp_path, tiny_mnist_dir, no_verify, capsys):
    (tmp_path / "file").write_text("not a directory")
    for command in (["train", *FAST], ["evaluate"], ["report"], ["export"], ["predict", "0"]):
        one_line_error(capsys, [command[0], "--model-dir", str(tmp_path / "file"), "--data-dir", str(tiny_mnist_dir),
                                *command[1:]], f"--model-dir {tmp_path / 'file'} is a file")
    one_line_error(capsys, ["train", "--model-dir", str(tmp_path / "file" / "model"), "--data-dir",
                            str(tiny_mnist_dir), *FAST],
                   f"--model-dir {tmp_path / 'file' / 'model'} is inside {tmp_path / 'file'}, which is a file")


def test_the_default_model_dir_is_named_as_relative_to_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["predict", "0"], f"no model in {tmp_path / 'runs/mnist_convnet_model'}: the default "
                   f"--model-dir runs/mnist_convnet_model is relative to the current folder ({tmp_path})")


def test_serve_ports_and_hosts_it_cannot_listen_on(small_model, monkeypatch, capsys):
    pytest.importorskip("uvicorn")
    import socket

    for port, message in (("99999", "must be a TCP port, 0-65535"), ("-1", "must be a TCP port"),
                          ("http", "not a number")):
        one_line_error(capsys, ["serve", "--model-dir", str(small_model), "--port", port], message, status=2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line_error(capsys, ["serve", "--model-dir", str(small_model), "--port", str(port)],
                       f"cannot listen on 127.0.0.1:{port}: port {port} is in use by another program")
    def no_such_host(*args, **kwargs):  # the resolver's answer, without asking a DNS server
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    one_line_error(capsys, ["serve", "--model-dir", str(small_model), "--host", "no-such-host.invalid"],
                   "cannot listen on --host 'no-such-host.invalid': unknown host (Name or service not known)")


def test_a_source_dir_that_is_missing_is_an_error_even_with_the_data_cached(tmp_path, tiny_mnist_dir, no_verify,
                                                                            capsys):
    assert main(["download", "--data-dir", str(tiny_mnist_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"MNIST is ready in {tiny_mnist_dir}"
    one_line_error(capsys, ["download", "--data-dir", str(tiny_mnist_dir), "--source-dir", str(tmp_path / "nope")],
                   f"--source-dir {tmp_path / 'nope'} does not exist")
    (tmp_path / "file").write_text("")
    one_line_error(capsys, ["download", "--data-dir", str(tiny_mnist_dir), "--source-dir", str(tmp_path / "file")],
                   f"--source-dir {tmp_path / 'file'} is a file")


def test_a_data_dir_that_cannot_be_created(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)  # root ignores permission bits, so say it as the OS would
    one_line_error(capsys, ["download", "--data-dir", str(tmp_path / "locked")],
                   f"cannot create data directory {tmp_path / 'locked'}: Permission denied; pass another --data-dir")


@pytest.mark.parametrize("command", ["report", "export"])
def test_outputs_that_cannot_be_written_fail_before_any_work(command, small_model, tiny_mnist_dir, no_verify, tmp_path,
                                                           monkeypatch, capsys):
    import cnn_mnist.use.export
    import cnn_mnist.use.report

    def expensive(*args, **kwargs):
        raise AssertionError("the output should have been checked first")

    monkeypatch.setattr(cnn_mnist.use.report, "evaluate_test_set", expensive)
    monkeypatch.setattr(cnn_mnist.use.export, "Predictor", expensive)
    (tmp_path / "notes.txt").write_text("a file")
    base = [command, "--model-dir", str(small_model), "--data-dir", str(tiny_mnist_dir)]
    inside_a_file = tmp_path / "notes.txt" / ("report" if command == "report" else "model.onnx")
    expected = (f"--output {inside_a_file} is inside {tmp_path / 'notes.txt'}, which is a file" if command == "report"
                else f"--output {inside_a_file} cannot be written: {tmp_path / 'notes.txt'} is a file")
    one_line_error(capsys, [*base, "--output", str(inside_a_file)], expected)
    if command == "export":
        # a name without a suffix is the web site's folder, which must be new or empty
        one_line_error(capsys, [*base, "--output", str(tmp_path)], f"--output {tmp_path} exists and is not empty")
        one_line_error(capsys, [*base, "--format", "onnx", "--output", str(tmp_path)],
                       f"--output {tmp_path} is a directory")
    else:
        one_line_error(capsys, [*base, "--output", str(tmp_path / "notes.txt")],
                       f"--output {tmp_path / 'notes.txt'} is a file")


def test_export_takes_its_format_from_the_output_name(small_model, tmp_path, capsys):
    from safetensors.torch import load_file

    status, out, _ = run_cli(capsys, "export", "--model-dir", str(small_model), "--output",
                             str(tmp_path / "w.safetensors"), "--json")
    result = json.loads(out)
    assert status == 0 and result["format"] == "safetensors" and result["path"] == str(tmp_path / "w.safetensors")
    assert result["checkpoint"] == f"model.ckpt-{SMALL_MODEL_STEPS}.pt"
    assert "conv1.weight" in load_file(tmp_path / "w.safetensors")
    one_line_error(capsys, ["export", "--model-dir", str(small_model), "--format", "onnx", "--output",
                            str(tmp_path / "w.safetensors")], "--format onnx but --output")


def test_ctrl_c_says_whether_a_checkpoint_was_saved(monkeypatch, capsys):
    from cnn_mnist.cli import parser
    from cnn_mnist.errors import TrainingInterrupted

    for saved, expected in ((True, "interrupted at global step 42; a checkpoint of it was saved"),
                            (False, "aborted at global step 42 by a second Ctrl-C, without saving")):
        def stopped(args, saved=saved):
            raise TrainingInterrupted(42, saved=saved)

        monkeypatch.setattr(parser, "build_parser", functools.partial(_parser_running, stopped))
        one_line_error(capsys, [], expected, status=130)


def _parser_running(function):
    from cnn_mnist.cli.parser import _Parser

    parser = _Parser(prog="cnn-mnist")
    parser.set_defaults(command=function, quiet=False, verbose=False)
    return parser


# -- one interface --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["-q", "evaluate"], ["evaluate", "-q"], ["--quiet", "predict", "0"],
                                  ["predict", "0", "--quiet"]])
def test_quiet_goes_before_or_after_the_command(argv):
    assert parse_arguments(argv).quiet is True and parse_arguments(argv).verbose is False


def test_verbose_and_quiet_together_are_refused(capsys):
    assert parse_arguments(["-v", "train"]).verbose is True
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["-q", "train", "-v"])
    assert exit_info.value.code == 2 and "contradict" in capsys.readouterr().err


def test_train_prints_json_with_json(model_dir, tiny_mnist_dir, no_verify, capsys):
    status, out, _ = run_cli(capsys, "train", "--model-dir", str(model_dir), "--data-dir", str(tiny_mnist_dir), *FAST,
                             "--json")
    assert status == 0 and set(json.loads(out)) == {"accuracy", "loss", "global_step"}


def test_the_top_level_help_names_every_command(capsys):
    from cnn_mnist.cli import COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(f"    {name} " in help_text and name in help_text.split("commands:")[0] for name in COMMANDS)


def test_every_command_that_prints_a_result_takes_json():
    from cnn_mnist.cli import COMMANDS

    for name in COMMANDS:
        if name != "serve":  # it prints no result: it serves until stopped
            assert parse_arguments([name, "--json", *(["0"] if name in ("predict", "explain") else [])]).json is True


HELP_SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"


@pytest.mark.parametrize("command", ["", "download", "train", "evaluate", "predict", "explain", "report", "export",
                                     "serve"])
def test_help_matches_its_snapshot(command, monkeypatch, capsys):
    """Every flag, default and wording of --help, as a user sees it. A change to the interface shows
    here; after a deliberate one, rewrite the snapshots: CNN_MNIST_UPDATE_SNAPSHOTS=1 pytest -k help."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("argparse lays help out differently in each Python version; the snapshots are 3.11's")
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit):
        main([*([command] if command else []), "--help"])
    help_text = capsys.readouterr().out
    snapshot = HELP_SNAPSHOTS / f"{command or 'cnn-mnist'}.txt"
    if os.environ.get("CNN_MNIST_UPDATE_SNAPSHOTS") == "1":
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(help_text)
    assert help_text == snapshot.read_text()


def test_an_unknown_flag_points_to_its_commands_help(capsys):
    err = one_line_error(capsys, ["train", "--bogus"], "--bogus", status=2)
    assert err == "cnn-mnist: error: train: unrecognized arguments: --bogus (see: cnn-mnist train --help)"


def test_a_flag_is_never_read_as_the_start_of_a_longer_one(capsys, tmp_path):
    # argparse's default read the start of a flag as the flag: before --data existed, `train --data my_pictures`
    # was --data-dir and downloaded MNIST into the folder; `train --model m` would be --model-dir
    model = tmp_path / "m"
    err = one_line_error(capsys, ["train", "--model", str(model)], "unrecognized arguments: --model", status=2)
    assert err.startswith("cnn-mnist: error: train: ") and not model.exists()
    one_line_error(capsys, ["train", "--learning", "0.1"], "unrecognized arguments: --learning", status=2)
    one_line_error(capsys, ["evaluate", "--model", str(tmp_path)], "unrecognized arguments: --model", status=2)


def test_every_other_parser_in_the_repository_takes_whole_flags_only():
    """The benchmarks' and examples' parsers too: each is built with allow_abbrev=False."""
    import ast

    built = []
    for path in sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                built.append((path.name, keywords.get("allow_abbrev", True)))
    assert len(built) >= 15 and [name for name, abbreviations in built if abbreviations] == []


def test_verbose_turns_on_this_packages_debug_lines_only(tmp_path, capsys):
    package, root = logging.getLogger("cnn_mnist"), logging.getLogger()
    before = (package.level, root.level)
    try:
        main(["-v", "download", "--source-dir", str(tmp_path / "nope")])
        assert package.level == logging.DEBUG and root.level != logging.DEBUG
    finally:
        package.setLevel(before[0])
        root.setLevel(before[1])
    capsys.readouterr()


def test_log_lines_say_what_the_command_does(small_model_copy, tiny_mnist_dir, no_verify, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert main(["evaluate", "--model-dir", str(small_model_copy), "--data-dir", str(tiny_mnist_dir)]) == 0
    assert f"Saving dict for global step {SMALL_MODEL_STEPS}" in caplog.text and "Using config" not in caplog.text
    caplog.clear()
    assert main(["report", "--model-dir", str(small_model_copy), "--data-dir", str(tiny_mnist_dir), "--output",
                 str(tmp_path / "report")]) == 0
    assert f"Evaluated for global step {SMALL_MODEL_STEPS}" in caplog.text
    assert "Saving dict" not in caplog.text and "Using config" not in caplog.text
    capsys.readouterr()


def test_export_refuses_a_suffix_it_cannot_read_a_format_from(small_model, tmp_path, capsys):
    one_line_error(capsys, ["export", "--model-dir", str(small_model), "--output", str(tmp_path / "weights.bin")],
                   "cannot tell the format from --output")


def test_predict_prints_no_table_when_every_input_failed(small_model, tmp_path, capsys):
    status, out, err = run_cli(capsys, "predict", "--model-dir", str(small_model), str(tmp_path / "missing.png"))
    assert status == 1 and out == "" and "missing.png: file not found" in err


def test_ctrl_c_stops_serve_cleanly(small_model, monkeypatch, capsys):
    uvicorn = pytest.importorskip("uvicorn")

    def stopped_by_ctrl_c(self, sockets):
        raise KeyboardInterrupt  # what uvicorn does after its own shutdown on SIGINT

    monkeypatch.setattr(uvicorn.Server, "run", stopped_by_ctrl_c)
    assert main(["serve", "--model-dir", str(small_model), "--port", "0"]) == 0
    assert capsys.readouterr().err == ""
