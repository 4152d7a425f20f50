"""benchmarks/gpu_speed.py as the GPU check runs it, here on the CPU with --quick: a section that
fails is recorded and the others still bring their figures back; a rerun keeps what is done."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speed.py"


def gpu_speed(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.real_data
def test_one_failing_section_loses_only_its_own_figures_and_a_rerun_keeps_the_rest(tmp_path):
    out = tmp_path / "gpu_speed.json"
    first = gpu_speed("--sections", "tutorial,best", "--fail", "tutorial", "--json", str(out), cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    sections = json.loads(out.read_text())["sections"]
    assert sections["tutorial"]["error"].startswith("RuntimeError: --fail tutorial")
    assert "result" not in sections["tutorial"]
    best = sections["best"]
    assert best["result"]["preset"] == "best" and best["result"]["steps"] == 20
    assert 0 <= best["result"]["accuracy"] <= 1 and best["result"]["training_s"] > 0
    assert "tutorial: RuntimeError" in first.stdout and "best: 20 steps" in first.stdout

    rerun = gpu_speed("--sections", "tutorial,best", "--skip-done", "--json", str(out), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    again = json.loads(out.read_text())["sections"]
    assert again["best"] == best  # kept, not measured again
    assert again["tutorial"]["result"]["preset"] == "tutorial"
    assert "best (" not in rerun.stdout  # the rerun printed no line for a section it did not run


@pytest.mark.real_data
def test_a_section_that_would_end_past_the_budget_is_skipped_and_says_why(tmp_path):
    out = tmp_path / "gpu_speed.json"
    result = gpu_speed("--sections", "tutorial", "--budget-s", "-1", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    skipped = json.loads(out.read_text())["sections"]["tutorial"]
    assert skipped["skipped"].startswith("time budget") and "result" not in skipped
    assert "tutorial: time budget" in result.stdout
