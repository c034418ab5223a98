"""The rrdb SR network from the command line as a user runs it: train ``sr-demo-rrdb`` (tiny),
evaluate it (PSNR, SSIM, LR-PSNR: one deterministic row), then start an ``sr-demo`` SRFlow from its
checkpoint with the encoder frozen for half of the run; bad ``model.cond.pretrained`` values end
in one line and exit code 2 (in-process, through the same ``attnflow.cli.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

TINY_RRDB = ["--set", "model.cond.features=8", "--set", "model.cond.blocks=1", "--set", "model.cond.growth=4",
             "--set", "train.batch_size=4", "--set", "train.eval_batch_size=4",
             "--set", "train.eval_max_batches=1", "--set", "train.n_samples=2"]
TINY_SR = [*TINY_RRDB, "--set", "model.cond.taps=[0]", "--set", "model.steps=1", "--set", "model.hidden=8"]


def _json(text: str) -> dict:
    return json.loads(text[text.index("{"): text.rindex("}") + 1])


@pytest.fixture(scope="module")
def rrdb_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rrdb") / "run"
    proc = run_cli("train", "--preset", "sr-demo-rrdb", "--steps", "3", "--out", str(out), "--no-progress",
                   *TINY_RRDB)
    summary = _json(proc.stdout)
    assert summary["test_psnr"] > 0 and "test_bpd" not in summary
    assert list((out / "samples").glob("*.png"))
    return out / "checkpoints" / "last.pt"


def test_evaluate_reports_psnr_ssim_and_lr_psnr(rrdb_checkpoint, tmp_path):
    proc = run_cli("evaluate", str(rrdb_checkpoint), "--max-batches", "1", "--batch-size", "4",
                   "--out", str(tmp_path / "eval"))
    result = _json(proc.stdout.split("\n\nSuper-resolution")[0])
    assert result["deterministic"] is True and result["temperatures"] == [0.0]
    assert "conditional_bits_per_dim" not in result
    for key in ("psnr", "ssim", "ssim_uniform", "lr_psnr"):
        assert result["mean"][key] == result["per_temperature"][0][key]
    assert result["mean"]["psnr"] > 0
    assert "| **mean** |" in proc.stdout and "deterministic prediction" in proc.stdout
    assert (tmp_path / "eval" / "sr_eval.json").is_file()


def test_srflow_starts_from_the_rrdb_checkpoint(rrdb_checkpoint, tmp_path):
    proc = run_cli("train", "--preset", "sr-demo", "--steps", "2", "--out", str(tmp_path / "sr"), "--no-progress",
                   *TINY_SR, "--set", f"model.cond.pretrained={rrdb_checkpoint}",
                   "--set", "train.freeze_conditioner_until=0.5")
    summary = _json(proc.stdout)
    assert summary["pretrained"] == [str(rrdb_checkpoint)] and summary["conditioner_frozen_steps"] == 1


def test_bad_pretrained_values_are_one_line_errors(rrdb_checkpoint, tmp_path, capsys):
    from attnflow.cli import main

    base = ["train", "--preset", "sr-demo", "--steps", "1", "--no-progress", *TINY_SR]
    cases = [
        (tmp_path / "missing.pt", "does not exist"),
        (tmp_path, "is a directory"),
    ]
    for i, (path, match) in enumerate(cases):
        code = main([*base, "--out", str(tmp_path / f"run{i}"), "--set", f"model.cond.pretrained={path}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    # the encoder is wider than the checkpoint's: the shapes are named
    code = main([*base, "--out", str(tmp_path / "wide"), "--set", "model.cond.features=16",
                 "--set", f"model.cond.pretrained={rrdb_checkpoint}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "of another shape" in err, err
