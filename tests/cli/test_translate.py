"""The label-to-photo command line: train translate-demo, translate, evaluate (subprocesses), errors."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from torch.utils.data import DataLoader

from attnflow.cli import build_parser, main
from attnflow.config import DEFAULTS, load_preset, merge
from attnflow.data import dataset_from_config as make_dataset
from attnflow.data import write_synthetic_pairs
from attnflow.evaluation import evaluate_bpd
from attnflow.images import CITYSCAPES_COLORS
from attnflow.models import build_model
from attnflow.training import load_model
from attnflow.training.checkpoint import save_checkpoint

# One OpenMP thread: these models are tiny, and two threads on a busy 2-core machine can be 100x
# slower (oversubscription). Nothing here depends on the thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


attnflow = run_cli


def write_cityscapes(root, split="val", n=3, size=(24, 48)):
    """A tiny Cityscapes tree: photos, colour labels and label ids for ``n`` frames."""
    rng = np.random.default_rng(0)
    for i in range(n):
        city = ("aachen", "bonn")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        photo_dir, label_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        photo_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(photo_dir / f"{stem}_leftImg8bit.png")
        ids = np.repeat(np.repeat(rng.integers(0, 34, (size[0] // 4, size[1] // 4), dtype=np.uint8), 4, 0), 4, 1)
        Image.fromarray(ids, mode="L").save(label_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(CITYSCAPES_COLORS[ids]).save(label_dir / f"{stem}_gtFine_color.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``attnflow train --preset translate-demo`` for 2 steps (with evaluation and samples)."""
    out = tmp_path_factory.mktemp("translate-demo")
    proc = attnflow("train", "--preset", "translate-demo", "--steps", "2", "--out", str(out), "--no-progress")
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 2 and math.isfinite(summary["test_bpd"])
    assert (out / "samples" / "step_0000002_t0.70.png").is_file()
    return out / "checkpoints" / "last.pt"


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_translate_a_folder_and_a_file(trained, tmp_path):
    labels = write_synthetic_pairs(tmp_path / "pairs", n=2, size=20, seed=3) / "A"
    out1, out2, out3 = tmp_path / "o1", tmp_path / "o2", tmp_path / "o3"
    proc = attnflow("translate", str(trained), str(labels), "--temperature", "0.7", "--samples", "3",
                    "--out", str(out1), "--seed", "1", "--save-labels")
    summary = json.loads(proc.stdout)
    names = sorted(p.name for p in out1.iterdir())
    assert names == sorted(
        [f"0000{i}_t0.70_s{s}.png" for i in range(2) for s in range(3)] + ["00000_labels.png", "00001_labels.png"]
    )
    assert summary["inputs"] == 2 and len(summary["files"]) == 8
    assert _pixels(out1 / "00000_t0.70_s0.png").shape == (32, 32, 3)
    # the label map is resized with nearest neighbour: only palette colours survive
    lab = _pixels(out1 / "00000_labels.png").reshape(-1, 3)
    src = _pixels(labels / "00000.png").reshape(-1, 3)
    assert {tuple(c) for c in lab} <= {tuple(c) for c in src}
    # same seed, same photos; several different photos per label map
    attnflow("translate", str(trained), str(labels), "--samples", "3", "--out", str(out2), "--seed", "1")
    for name in names:
        if "_t0.70_" in name:
            assert np.array_equal(_pixels(out1 / name), _pixels(out2 / name))
    assert not np.array_equal(_pixels(out1 / "00000_t0.70_s0.png"), _pixels(out1 / "00000_t0.70_s1.png"))
    # a single file, in process this time
    assert main(["translate", str(trained), str(labels / "00001.png"), "--samples", "1", "--out", str(out3),
                 "--temperature", "0.5"]) == 0
    assert [p.name for p in out3.iterdir()] == ["00001_t0.50_s0.png"]


def test_translate_errors_name_the_file(trained, tmp_path, capsys):
    folder = tmp_path / "labels"
    write_synthetic_pairs(tmp_path / "pairs", n=1, size=16)
    folder.mkdir()
    (folder / "a_good.png").write_bytes((tmp_path / "pairs" / "A" / "00000.png").read_bytes())
    (folder / "b_broken.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"
    proc = attnflow("translate", str(trained), str(folder), "--out", str(out), check=False)
    assert proc.returncode == 2
    assert "b_broken.png" in proc.stderr and "cannot be read" in proc.stderr
    assert not out.exists()  # every file is read before anything is sampled
    assert main(["translate", str(trained), str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["translate", str(trained), str(folder), "--glob", "*_color.png", "--out", str(out)]) == 2
    assert "no image file matches --glob" in capsys.readouterr().err
    assert main(["translate", str(trained), str(folder), "--samples", "0"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err


def test_evaluate_prints_conditional_bits_per_dim(trained, tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    proc = attnflow("evaluate", str(trained), "--data", "cityscapes", "--data-dir", str(root),
                    "--split", "val", "--batch-size", "2")
    result = json.loads(proc.stdout)
    assert result["data"] == "cityscapes" and result["split"] == "val" and result["images"] == 3
    # the same number in process: the mean of -log2 p(photo | labels) / D (+ 8) with the same noise
    model, config, _ = load_model(trained)
    data_cfg = {**config["data"], "name": "cityscapes", "root": str(root)}
    loader = DataLoader(make_dataset(data_cfg, "val"), batch_size=2, shuffle=False)
    torch.manual_seed(0)
    assert result["bits_per_dim"] == pytest.approx(evaluate_bpd(model, loader), rel=1e-5)
    # ... and it is the conditional bits/dim, not the training objective (which adds lambda log p(a))
    photo, labels = next(iter(loader))
    x, a = photo.float(), labels.float()
    with torch.no_grad():
        torch.manual_seed(0)
        cond = model.bits_per_dim((x, a))
        torch.manual_seed(0)
        objective = model.objective((x, a))
        torch.manual_seed(0)
        d = x[0].numel()
        direct = -model.log_prob(x, a) / (d * math.log(2))
    assert torch.allclose(cond, direct, rtol=1e-6)
    assert (objective - cond.mean()).abs() > 1e-6


def test_onehot_models_read_label_id_pngs(tmp_path, capsys):
    m = dict(backbone="fullglow", image_shape=[3, 8, 8], levels=2, steps=1, hidden=8, prior="gaussian",
             attention="itrans", patches=[4, 1], heads=2,
             cond=dict(label_mode="onehot", classes=5, cond_hidden=4, cond_mlp=[4]))
    config = merge(DEFAULTS, {"model": m, "data": {"name": "synthetic-pairs"}})
    model = build_model(config)
    ckpt = save_checkpoint({"model": model.state_dict(), "config": config, "step": 0}, tmp_path / "onehot.pt")
    Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6) % 7, mode="L").save(tmp_path / "ids.png")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert main(["translate", str(ckpt), str(tmp_path / "ids.png"), "--samples", "2", "--out",
                 str(tmp_path / "o"), "--save-labels"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ids_labels.png", "ids_t0.70_s0.png", "ids_t0.70_s1.png"]
    capsys.readouterr()
    assert main(["translate", str(ckpt), str(tmp_path / "rgb.png"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "rgb.png" in err and "label-id PNG" in err and "mode RGB" in err


def test_translate_refuses_other_checkpoints(tmp_path, capsys):
    config = load_preset("mnist")
    config["model"].update(hidden=4, blocks=1, components=2, steps=1, levels=1, prior="gaussian")
    model = build_model(config)
    ckpt = save_checkpoint({"model": model.state_dict(), "config": config, "step": 0}, tmp_path / "mnist.pt")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "l.png")
    assert main(["translate", str(ckpt), str(tmp_path / "l.png")]) == 2
    assert "needs a fullglow" in capsys.readouterr().err


def test_translate_help_lists_the_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["translate"].format_help()
    for opt in ("--temperature", "--samples", "--out", "--device", "--seed", "--glob"):
        assert opt in text
