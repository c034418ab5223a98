"""The benchmark scripts this project's speed figures come from keep running: ``flops.py``,
``autocast_bpd.py``, ``step_sync.py`` and ``attention_kernels.py`` on tiny models, as subprocesses
(as they are run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from attnflow.config import apply_overrides, load_preset
from attnflow.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
        "model.prior_layers=1", "model.steps=1", "model.levels=1"]


def _script(name: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_flops_prints_a_step_and_its_rate():
    out = _script("flops.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    cells = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "2" and float(cells[3]) > 0 and float(cells[4]) > 0 and float(cells[5]) > 0


def test_autocast_bpd_compares_a_checkpoint_in_both_precisions(tmp_path):
    config = apply_overrides(load_preset("mnist"), [*TINY, "train.steps=2", "train.batch_size=4",
                                                    "train.eval_every=2", "train.eval_batch_size=8",
                                                    "train.eval_max_batches=1", "train.n_samples=2"])
    train(config, tmp_path / "run", progress=False)
    out = _script("autocast_bpd.py", str(tmp_path / "run/checkpoints/last.pt"), "--max-batches", "1",
                  "--batch-size", "8")
    cells = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "marflow" and cells[2] == "8"
    assert abs(float(cells[5])) < 0.05 and abs(float(cells[4]) - float(cells[3]) - float(cells[5])) < 1e-4


def test_step_sync_times_both_guards():
    out = _script("step_sync.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    rows = {r.strip("|").split("|")[0].strip(): r for r in out.strip().splitlines()[-2:]}
    assert set(rows) == {"host", "device"}
    assert all(float(r.strip("|").split("|")[1]) > 0 for r in rows.values())


def test_attention_kernels_times_both_paths_on_tensors_and_in_a_model():
    out = _script("attention_kernels.py", "--shapes", "2x32x30x8", "2x2x16x8", "--repeats", "1")
    rows = [r.strip("|").split("|") for r in out.strip().splitlines()[-2:]]
    assert [r[0].strip() for r in rows] == ["2x32x30x8", "2x2x16x8"]
    assert [r[-1].strip() for r in rows] == ["yes", "no"]  # 64 heads of 30 positions pay, 4 of 16 not
    assert all(float(c) > 0 for r in rows for c in r[2:8])
    out = _script("attention_kernels.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    rows = [r.strip("|").split("|") for r in out.strip().splitlines()[-2:]]
    assert [r[2].strip() for r in rows] == ["training step", "sampling batch"]
    assert all(float(c) > 0 for r in rows for c in r[3:6])
