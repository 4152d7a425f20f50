"""kill -9 a training run at random moments, half of them while a checkpoint is being written,
resume after each, and compare the final weights with an uninterrupted run's, bit for bit.
The mid-save kills are forced: those lives' saves wait 1 s before each fsync, so the kill lands
while the checkpoint's temporary file exists, on any machine.

Each life is a fresh process training through Estimator.train (momentum SGD, dropout, frequent
checkpoints, 1 thread). After every kill, each checkpoint on disk must load (checksum included):
no partial file ever sits under a checkpoint name. Temporary files left by a kill must be gone
after the next start. Prints a table and a JSON line; exits 1 if anything differs.

Usage: python benchmarks/kill_resume.py [--kills 10] [--steps 300] [--every 5] [--data-dir D]
(default data: the real MNIST, downloaded on first use; the test suite passes a tiny synthetic set)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnn_mnist.training.checkpoints import list_checkpoints, load_checkpoint

TRAINER = """
import logging, sys, torch
logging.basicConfig(level=logging.INFO)  # "Training from global step N." says where each life began
torch.set_num_threads(1)  # bit-exact resume needs a fixed thread count
from cnn_mnist import Estimator, ModelParams, RunConfig, numpy_input_fn
from cnn_mnist.data.datasets import load_mnist
model_dir, data_dir, steps, every = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5] == "slow-saves":  # each fsync waits 1 s: a save's temporary file sits there that long
    import os, time
    fsync = os.fsync
    os.fsync = lambda fd: (time.sleep(1.0), fsync(fd))[1]
mnist = load_mnist(data_dir, download=data_dir is None)
estimator = Estimator(model_dir=model_dir, params=ModelParams(optimizer="momentum", learning_rate=0.01),
                      config=RunConfig(save_checkpoints_steps=every, keep_checkpoint_max=3))
estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=20, num_epochs=None),
                max_steps=steps)
"""


def start(model_dir: Path, data_dir: str | None, steps: int, every: int, slow_saves: bool = False) -> subprocess.Popen:
    log = tempfile.TemporaryFile()  # the life's log, read back after it ends
    process = subprocess.Popen([sys.executable, "-c", TRAINER, str(model_dir), data_dir or "", str(steps), str(every),
                                "slow-saves" if slow_saves else "-"], stdout=subprocess.DEVNULL, stderr=log)
    process.log = log
    return process


def began_at(process: subprocess.Popen) -> int | None:
    """The global step the life started training from, if it got that far."""
    process.log.seek(0)
    found = re.findall(rb"Training from global step (\d+)", process.log.read())
    return int(found[0]) if found else None


def temporaries(model_dir: Path) -> set[str]:
    return {name for name in os.listdir(model_dir) if name.startswith(".model.ckpt-")} if model_dir.is_dir() else set()


def newest_step(model_dir: Path) -> int:
    found = list_checkpoints(model_dir)
    return found[-1][0] if found else 0


def final_state(model_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(model_dir)[-1][1])


def run_with_kills(model_dir: Path, data_dir: str | None, steps: int, every: int, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    report = {"kills": 0, "kills_while_saving": 0, "temporaries_left_by_kills": 0, "checkpoints_checked": 0,
              "began_at": []}
    for life in range(kills):
        before = temporaries(model_dir)
        # Every other life is killed mid-save, forced: its saves wait 1 s before their fsync, so the
        # kill lands while the temporary file is there however loaded the machine is.
        process = start(model_dir, data_dir, steps, every, slow_saves=bool(life % 2))
        if life % 2:  # wait for a save in progress: a temporary file this life created
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline and not temporaries(model_dir) - before:
                time.sleep(0.0005)
            saving = process.poll() is None and bool(temporaries(model_dir) - before)
        else:  # a random moment within the life's first 1-3 checkpoint intervals, so every life is cut short
            # Counted in steps, not seconds: a time window would let a fast machine train to the
            # end before the tenth kill.
            while process.poll() is None and began_at(process) is None:
                time.sleep(0.005)
            target = (began_at(process) or 0) + every * rng.randint(1, 3)
            while process.poll() is None and newest_step(model_dir) < target:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.01))  # somewhere in the steps after that save
            saving = False
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            report["kills"] += 1
            report["kills_while_saving"] += saving
        process.wait()
        report["began_at"].append(began_at(process))
        report["temporaries_left_by_kills"] += len(temporaries(model_dir) - before)
        for _, path in list_checkpoints(model_dir):  # raises on any partial or damaged file
            load_checkpoint(path)
            report["checkpoints_checked"] += 1
    newest = list_checkpoints(model_dir)[-1][0] if list_checkpoints(model_dir) else 0
    last = start(model_dir, data_dir, steps, every)
    if last.wait() != 0:
        raise RuntimeError(f"the final resumed run failed (exit {last.returncode})")
    report["began_at"].append(began_at(last))
    report["resumed_from_newest"] = report["began_at"][-1] == newest > 0
    report["temporaries_after_resume"] = len(temporaries(model_dir))
    return report


def compare(model_dir: Path, reference_dir: Path, steps: int) -> dict:
    """Weights and momentum buffers bit for bit, and the position in the data order."""
    ours, theirs = final_state(model_dir), final_state(reference_dir)
    differing = [name for name, tensor in theirs["network"].items() if not torch.equal(tensor, ours["network"][name])]
    differing += [f"momentum {index}" for index, values in theirs["optimizer"]["state"].items()
                  if not torch.equal(values["momentum_buffer"], ours["optimizer"]["state"][index]["momentum_buffer"])]
    return {"global_step": ours["global_step"], "reference_step": theirs["global_step"], "target": steps,
            "weights_identical": not differing, "differing": differing,
            "input_identical": ours["input"] == theirs["input"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=5, help="steps between checkpoints")
    parser.add_argument("--data-dir", help="MNIST directory (default: the package's cache)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        reference, killed = Path(work) / "reference", Path(work) / "killed"
        started = time.perf_counter()
        if start(reference, args.data_dir, args.steps, args.every).wait() != 0:
            raise RuntimeError("the uninterrupted reference run failed")
        report = run_with_kills(killed, args.data_dir, args.steps, args.every, args.kills, args.seed)
        report.update(compare(killed, reference, args.steps))
        report["seconds"] = round(time.perf_counter() - started, 1)
    ok = (report["weights_identical"] and report["input_identical"] and report["global_step"] == args.steps
          and report["temporaries_after_resume"] == 0 and report["resumed_from_newest"]
          and report["kills"] == args.kills  # every life was cut short, so the last one had to resume
          and report["kills_while_saving"] == args.kills // 2)  # forced: every other life
    for key in ("kills", "kills_while_saving", "temporaries_left_by_kills", "checkpoints_checked",
                "temporaries_after_resume", "began_at", "resumed_from_newest", "global_step", "weights_identical",
                "input_identical", "seconds"):
        print(f"{key:<28} {report[key]}")
    print(json.dumps({"benchmark": "kill_resume", "ok": ok, **report}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
