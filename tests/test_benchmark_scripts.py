"""The scripts in ``benchmarks/`` keep running, as they are run (subprocesses, tiny settings):
``layers.py``, ``memory.py``, ``same_results.py``; ``device_check.sh``, which needs a GPU, is checked
statically (bash syntax, presets, paths, and every ``attnflow`` command line it runs parses).
``against.py`` has its own tests (``test_against.py``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TESTED = {"layers.py", "memory.py", "same_results.py", "device_check.sh", "against.py"}


def _script(name: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    return subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0


def test_every_script_is_tested():
    assert {p.name for p in BENCHMARKS.iterdir() if p.is_file()} == TESTED


def test_layers_times_every_layer_against_the_coupling_interleaved():
    out = _script("layers.py", "--shape", "2", "4", "4", "4", "--hidden", "8", "--repeats", "2", "--warmup", "0")
    rows = [_cells(r) for r in out.strip().splitlines()[-5:]]
    assert [r[0].split(" (")[0] for r in rows] == ["AffineCoupling", "IMap", "IMap", "ITrans", "ITrans"]
    assert rows[0][2] == "1.000" and rows[0][3] == "1.000-1.000"  # the coupling against itself
    for r in rows:
        low, high = (float(v) for v in r[3].split("-"))
        assert float(r[1]) > 0 and low <= float(r[2]) <= high


def test_memory_measures_both_backprop_modes_each_in_its_own_process():
    out = _script("memory.py", "--models", "fullglow", "--fullglow-size", "32", "--threads", "1")
    ordinary, invertible = (_cells(r) for r in out.strip().splitlines()[-2:])
    assert ordinary[0] == invertible[0] == "Full-Glow 2/8 32x32"
    assert (ordinary[2], invertible[2]) == ("ordinary", "invertible")
    assert ordinary[-1] == invertible[-1]  # the same loss: the forward is the ordinary one
    assert float(ordinary[5]) > 0 and float(invertible[5]) > 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs git and a checkout of the repository")
def test_same_results_compares_bits_per_dim_with_another_commit():
    """(Its worktree is ``against.py``'s, whose removal ``test_against.py`` checks.)"""
    out = _script("same_results.py", "--base", "HEAD", "--configs", "--presets", "mnist", "--batch", "2")
    row = next(_cells(line) for line in out.splitlines() if line.startswith("| mnist |"))
    assert row[1] == "2" and float(row[2]) > 0 and float(row[3]) >= 0 and float(row[4]) >= 0


def test_same_results_refuses_a_preset_without_bits_per_dim_before_any_checkout():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "same_results.py"), "--presets", "sr-demo-rrdb"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "not a flow: it has no bits/dim" in proc.stderr.splitlines()[-1]


def _device_check_lines() -> list[str]:
    """The script's logical lines (continuations joined, comments dropped)."""
    text = (BENCHMARKS / "device_check.sh").read_text().replace("\\\n", " ")
    return [line.split(" #")[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_device_check_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(BENCHMARKS / "device_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_device_check_runs_commands_that_exist():
    """Every ``af ...`` (``attnflow ...``) command line parses (``cuda`` read as ``cpu`` here), every
    preset exists, and the test stage runs the suite with ``--device cuda``."""
    from attnflow.cli import build_parser
    from attnflow.config import load_preset

    lines = _device_check_lines()
    commands = []
    for line in lines:
        words = shlex.split(line)
        if words[0] == "export":
            continue
        for i, word in enumerate(words):
            if word == "af" and i + 1 < len(words):
                args = list(words[i + 1:])
                args = args[: args.index("&&")] if "&&" in args else args
                commands.append([("cpu" if a == "cuda" else a) for a in args if not a.startswith("$@")])
    assert {c[0] for c in commands} >= {"train", "sample", "evaluate", "bench"}
    assert any("--compile" in c for c in commands if c[0] == "bench")
    for args in commands:
        try:
            build_parser().parse_args(args)
        except SystemExit as exit_:
            pytest.fail(f"device_check.sh: `attnflow {' '.join(args)}` does not parse (exit {exit_.code})")
    presets = {m for line in lines for m in re.findall(r"--preset (\S+)", line) if not m.startswith('"$')}
    presets |= {shlex.split(line)[1] for line in lines if line.strip().startswith("short_run ")}
    assert presets >= {"mnist", "sr-demo", "translate-demo"}
    for preset in presets:
        load_preset(preset)  # an unknown name raises
    tests = next(line for line in lines if "pytest" in line)
    assert "--device cuda" in tests and tests.rstrip().endswith(" tests")
