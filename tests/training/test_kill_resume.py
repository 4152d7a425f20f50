"""kill -9 at random moments (half of them mid-save, forced), resume each time: the final
weights equal an uninterrupted run's bit for bit, no partial checkpoint is ever loadable,
leftovers are cleaned.

Runs benchmarks/kill_resume.py as a user runs it, at CI size on the tiny synthetic MNIST (~70 s);
the script itself runs the longer version on the real data."""

import json
import subprocess
import sys
from pathlib import Path

KILL_RESUME = Path(__file__).resolve().parents[2] / "benchmarks" / "kill_resume.py"


def test_ten_kills_then_resume_give_the_uninterrupted_weights(tiny_mnist_dir):
    done = subprocess.run([sys.executable, str(KILL_RESUME), "--data-dir", str(tiny_mnist_dir), "--steps", "300",
                           "--every", "5", "--kills", "10"], capture_output=True, text=True, timeout=900)
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["kills"] == 10 and report["kills_while_saving"] == 5  # every other life, forced
    assert report["temporaries_left_by_kills"] >= 5 and report["temporaries_after_resume"] == 0
    assert report["resumed_from_newest"] and max(step or 0 for step in report["began_at"]) > 0
    assert report["weights_identical"] and report["input_identical"] and report["global_step"] == 300
    assert report["ok"] and done.returncode == 0, done.stderr[-2000:]
