"""Every command of the unconditional pipeline, run as a user would: through a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

TINY = [
    "--set", "model.hidden=8", "--set", "model.blocks=1", "--set", "model.components=2",
    "--set", "model.prior_hidden=4", "--set", "model.prior_layers=1", "--set", "model.steps=1",
    "--set", "train.batch_size=8", "--set", "train.eval_batch_size=50",
    "--set", "train.eval_max_batches=1", "--set", "train.n_samples=4",
    "--set", "train.sample_temperatures=[0.7]", "--set", "train.warmup_steps=1",
]


run = run_cli


def last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run("train", "--preset", "mnist", "--steps", "4", "--out", str(out), "--no-progress", *TINY,
        "--set", "train.eval_every=4")
    return out


def test_presets_lists_the_paper_configs():
    out = run("presets").stdout
    for name in ("mnist ", "mnist-3-4-96-imap", "mnist-3-2-48-itrans", "cifar10-3-4-256-none"):
        assert name in out


def test_train_writes_a_checkpoint_and_summary(trained):
    assert (trained / "checkpoints/last.pt").is_file()
    assert (trained / "metrics.jsonl").read_text().count('"test"') == 1


def test_train_resume_extends(trained, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    proc = run("train", "--resume", "--out", str(out), "--steps", "6", "--no-progress")
    assert last_json(proc.stdout)["steps"] == 6


def test_sample(trained, tmp_path):
    out = tmp_path / "grid.png"
    proc = run("sample", str(trained / "checkpoints/last.pt"), "--n", "9", "--temperature", "0.7",
               "--out", str(out), "--seed", "1")
    assert out.is_file() and last_json(proc.stdout)["n"] == 9
    from PIL import Image

    assert Image.open(out).size == (3 * 84 + 4 * 2, 3 * 84 + 4 * 2)  # 28 px digits shown 3x


def test_evaluate_bundled_and_folder(trained, tmp_path):
    proc = run("evaluate", str(trained / "checkpoints/last.pt"), "--max-batches", "1", "--batch-size", "20")
    result = last_json(proc.stdout)
    assert result["data"] == "mnist" and result["images"] == 20 and 0 < result["bits_per_dim"] < 12
    # a folder of the user's own 28x28 grey images
    import numpy as np
    from PIL import Image

    folder = tmp_path / "digits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    proc = run("evaluate", str(trained / "checkpoints/last.pt"), "--data", "folder", "--data-dir",
               str(folder), "--batch-size", "5")
    result = last_json(proc.stdout)
    assert result["data"] == "folder" and result["images"] == 5 and result["bits_per_dim"] > 0


def test_evaluate_missing_data_is_a_clear_error(trained, tmp_path):
    proc = run("evaluate", str(trained / "checkpoints/last.pt"), "--data", "mnist-idx", "--data-dir",
               str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_evaluate_fid_needs_weights_then_works_with_a_feature_network(trained, tmp_path):
    proc = run("evaluate", str(trained / "checkpoints/last.pt"), "--max-batches", "1", "--fid", check=False)
    assert proc.returncode == 2 and "Inception" in proc.stderr and "--inception" in proc.stderr

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

        def forward(self, x):
            return self.conv(x.float() / 255).mean((2, 3))

    path = tmp_path / "features.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Features()), str(path))
    proc = run("evaluate", str(trained / "checkpoints/last.pt"), "--max-batches", "1", "--fid",
               "--inception", str(path), "--fid-samples", "24", "--batch-size", "12")
    result = last_json(proc.stdout)
    assert result["fid"] > 0 and "kid_mean" in result and result["fid_samples"] == 24


def test_compare_writes_table_and_plot(tmp_path):
    proc = run("compare", "--preset", "mnist", "--steps", "2", "--out", str(tmp_path), "--no-progress",
               *TINY, "--set", "train.eval_every=2")
    result = last_json(proc.stdout)
    table = (tmp_path / "comparison.md").read_text()
    for kind in ("none", "imap", "itrans"):
        assert f"| {kind} |" in table
    assert (tmp_path / "comparison.png").is_file() and len(result["results"]) == 3


def test_bench_prints_a_table():
    proc = run("bench", "--preset", "mnist", *TINY, "--batch-size", "4", "--repeats", "1", "--warmup", "0")
    assert "train ms/step" in proc.stdout and "| mnist | imap |" in proc.stdout


def test_bad_preset_and_override_are_clear_errors():
    proc = run("train", "--preset", "nope", check=False)
    assert proc.returncode == 2 and "unknown preset 'nope'" in proc.stderr
    proc = run("train", "--set", "model.levelz=2", check=False)
    assert proc.returncode == 2 and "model.levelz" in proc.stderr


def test_demo_runs(tmp_path):
    proc = run("demo", "--steps", "2", "--out", str(tmp_path / "demo"), *TINY)
    assert "test bits/dim" in proc.stdout and (tmp_path / "demo/checkpoints/last.pt").is_file()


def test_ddp_two_gloo_processes(tmp_path):
    """torchrun with two CPU processes (gloo): ranks agree and rank 0 writes the checkpoint."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "attnflow.cli", "train",
         "--preset", "mnist", "--steps", "3", "--out", str(tmp_path), "--no-progress", *TINY,
         "--set", "train.eval_every=3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["step"] == 3
