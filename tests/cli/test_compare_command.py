"""attnflow compare as a user runs it: a killed comparison continues; --jobs 2 gives the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, run_cli

TINY = [
    "--set", "model.levels=1", "--set", "model.hidden=4", "--set", "model.blocks=1",
    "--set", "model.components=2", "--set", "model.prior_hidden=4", "--set", "model.prior_layers=1",
    "--set", "model.steps=1", "--set", "train.batch_size=8", "--set", "train.eval_batch_size=50",
    "--set", "train.eval_max_batches=1", "--set", "train.n_samples=2",
    "--set", "train.sample_temperatures=[0.7]", "--set", "train.warmup_steps=1", "--set", "train.log_every=1",
]


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _bpd(out: Path) -> dict:
    return {r["variant"]: r["test_bpd"] for r in json.loads((out / "comparison.json").read_text())["variants"]}


def test_a_killed_compare_continues_and_leaves_finished_runs_alone(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--preset", "mnist", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
            "--set", "train.eval_every=2", "--set", "train.checkpoint_every=5",
            "--variants", "a=attention=none", "b=attention=imap,train.steps=400"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "attnflow.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:  # kill it once run a finished and run b has a checkpoint, before b finishes
        while not ((out / "a/seed_0.json").is_file() and (out / "b/seed_0/checkpoints/last.pt").is_file()):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "b/seed_0.json").exists(), "b finished before the kill; make it longer"
    finished = _files(out / "a")
    stopped_at = torch_step(out / "b/seed_0/checkpoints/last.pt")
    assert 0 < stopped_at < 400
    run_cli(*args)
    assert _files(out / "a") == finished  # the finished run was not touched
    result = json.loads((out / "b/seed_0.json").read_text())
    assert result["steps"] == 400
    steps = [json.loads(line)["step"] for line in (out / "b/seed_0/metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 401))  # resumed where it stopped: every step once
    assert "| a |" in (out / "comparison.md").read_text() and "| b |" in (out / "comparison.md").read_text()


def torch_step(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True)["step"])


def test_jobs_two_gives_the_sequential_numbers(tmp_path):
    common = ["--preset", "mnist", "--steps", "2", "--no-progress", *TINY, "--set", "train.eval_every=2",
              "--attentions", "none", "itrans", "--set", "model.patches=4", "--seeds", "2"]
    run_cli("compare", *common, "--out", str(tmp_path / "seq"))
    proc = run_cli("compare", *common, "--out", str(tmp_path / "par"), "--jobs", "2")
    assert _bpd(tmp_path / "seq") == _bpd(tmp_path / "par")
    if len(os.sched_getaffinity(0)) >= 2:
        assert "2 at a time, 1 thread(s) each" in proc.stderr


def test_bad_options_are_one_line(tmp_path):
    for extra, message in (
        (["--variants", "a=", "--attentions", "none"], "give --variants or axes"),
        (["--variants", "a=", "--baseline", "z"], "--baseline 'z' is not a variant"),
        (["--variants", "nokey"], "expected NAME=KEY=VALUE"),
        (["--attentions", "none", "bogus"], "attention must be one of"),
    ):
        proc = run_cli("compare", "--preset", "mnist", "--steps", "1", "--out", str(tmp_path / "x"), *TINY,
                       *extra, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
