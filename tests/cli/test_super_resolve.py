"""The super-resolution command line as a user runs it (subprocesses): train the sr-demo preset for
two steps, super-resolve a folder, evaluate on a folder of HR images. The error cases go through
the same ``attnflow.cli.main`` in-process (exit code and stderr), which saves interpreter starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


run = run_cli


def run_inprocess(capsys, *args: str) -> tuple[int, str, str]:
    from attnflow.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _image(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    img = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """sr-demo with L=4 levels (full SRFlow layout: LR sides must be even), shrunk (K=1, one RRDB
    block) and trained for 2 steps."""
    out = tmp_path_factory.mktemp("sr") / "run"
    run(
        "train", "--preset", "sr-demo", "--steps", "2", "--out", str(out), "--no-progress",
        "--set", "model.levels=4", "--set", "model.steps=1", "--set", "model.cond.blocks=1",
        "--set", "model.cond.taps=[0]", "--set", "train.batch_size=4",
        "--set", "train.eval_batch_size=4", "--set", "train.eval_max_batches=1",
        "--set", "train.n_samples=2",
    )
    ckpt = out / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    assert list((out / "samples").glob("*.png"))
    return ckpt


def test_super_resolve_folder(checkpoint, tmp_path):
    inputs = tmp_path / "lr"
    _image(inputs / "face.png", 8, 8, 0)
    _image(inputs / "sub" / "wide.jpg", 6, 10, 1)  # any even LR size, not the training size
    out = tmp_path / "sr"
    proc = run("super-resolve", str(checkpoint), str(inputs), "--temperature", "0.5", "0.8",
               "--samples", "2", "--out", str(out), "--seed", "1")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["written"] == 8 and summary["scale"] == 8
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == sorted(  # the outputs mirror the input folder
        f"{n}_t{t}_s{s}.png" for n in ("face", "sub/wide") for t in ("0.50", "0.80") for s in (0, 1)
    )
    assert Image.open(out / "face_t0.80_s1.png").size == (64, 64)
    assert Image.open(out / "sub" / "wide_t0.50_s0.png").size == (80, 48)  # (W, H) = 8 x (10, 6)
    # a single file works too
    proc = run("super-resolve", str(checkpoint), str(inputs / "face.png"), "--samples", "1",
               "--out", str(tmp_path / "one"))
    assert (tmp_path / "one" / "face_t0.80_s0.png").is_file()


def test_super_resolve_clear_errors(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad"
    _image(bad / "ok.png", 8, 8, 0)
    (bad / "broken.png").write_bytes(b"this is not a png")
    code, _, err = run_inprocess(capsys, "super-resolve", str(checkpoint), str(bad), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "broken.png" in err and "cannot be read" in err

    odd = tmp_path / "odd"
    _image(odd / "odd.png", 7, 8, 0)
    code, _, err = run_inprocess(capsys, "super-resolve", str(checkpoint), str(odd), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "odd.png" in err and "multiples of 2" in err and "7x8" in err
    assert not (tmp_path / "o").exists()  # nothing written when an input is bad

    code, _, err = run_inprocess(capsys, "super-resolve", str(checkpoint), str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err

    code, _, err = run_inprocess(capsys, "evaluate", str(checkpoint), "--data", "mnist", "--max-batches", "1")
    assert code == 2 and "(HR, LR) pairs" in err


def test_evaluate_on_a_folder(checkpoint, tmp_path):
    hr = tmp_path / "hr"
    for i in range(3):
        _image(hr / f"{i}.png", 80, 72, i)  # centre-cropped and resized to the model's 64x64
    out = tmp_path / "eval"
    proc = run("evaluate", str(checkpoint), "--data", "sr-folder", "--data-dir", str(hr),
               "--temperatures", "0.5", "0.9", "--batch-size", "2", "--max-batches", "1",
               "--out", str(out))
    text = proc.stdout
    result = json.loads(text[: text.index("\n}\n") + 2])
    assert result["images"] == 2 and result["temperatures"] == [0.5, 0.9]
    assert set(result["mean"]) == {"psnr", "ssim", "ssim_uniform", "lr_psnr"}
    assert result["conditional_bits_per_dim"] > 0
    assert "LPIPS omitted" in result["lpips"] and "--alexnet" in result["lpips"]
    assert "| **mean** |" in text and "| 0.50 |" in text
    assert (out / "sr_eval.json").is_file() and (out / "sr_eval.md").is_file()
    assert (out / "examples_t0.90.png").is_file()


def test_parser_lists_super_resolve():
    from attnflow.cli import build_parser

    args = build_parser().parse_args(["super-resolve", "c.pt", "img.png", "--temperature", "0.7"])
    assert args.temperature == [0.7] and args.samples == 4 and args.func.__name__ == "cmd_super_resolve"
