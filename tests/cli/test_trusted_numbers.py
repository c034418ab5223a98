"""No command exits 0 with a number computed on other data than the user meant, and none moves or
overwrites a folder the user did not name: the corners a researcher hits, run as a user would."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_MNIST, run_cli, tiny_mnist_config
from PIL import Image

from attnflow.config import load_preset
from attnflow.data import dataset_from_config, get_dataset
from attnflow.data.common import DataError

TINY = [arg for key in TINY_MNIST for arg in ("--set", key)]


def last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def write_digits(folder: Path, n: int, *, size=(28, 28), mode="L", seed=0) -> Path:
    """``n`` random images of ``size`` (H, W) in ``mode`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = () if mode == "L" else (3,)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, *channels), dtype=np.uint8), mode).save(folder / f"{i:03d}.png")
    return folder


def folder_run(tmp_path: Path, *extra: str) -> Path:
    """A tiny mnist-preset run on a folder ``data/flat`` (train 16, val 8, test 12) given as a
    relative ``--data-dir`` from ``tmp_path/a``; returns the run folder."""
    a = tmp_path / "a"
    for split, n in (("train", 16), ("val", 8), ("test", 12)):
        write_digits(a / "data" / "flat" / split, n, seed=n)
    out = a / "run"
    run_cli("train", "--preset", "mnist", "--set", "data.name=folder", "--data-dir", "data/flat",
            "--steps", "2", "--out", "run", "--no-progress", *TINY, "--set", "train.eval_every=2", *extra,
            cwd=a)
    return out


# ---------------------------------------------------------------------------------- data roots
def test_data_root_is_stored_absolute_and_every_result_says_what_it_read(tmp_path):
    out = folder_run(tmp_path)
    stored = yaml.safe_load((out / "config.yaml").read_text())
    root = Path(stored["data"]["root"])
    assert root.is_absolute() and root == (tmp_path / "a" / "data" / "flat").resolve()
    # another folder with its own data/flat: evaluate and resume from there still read the run's data
    b = tmp_path / "b"
    write_digits(b / "data" / "flat" / "test", 3)
    write_digits(b / "data" / "flat" / "train", 3)
    result = last_json(run_cli("evaluate", str(out / "checkpoints" / "last.pt"), cwd=b).stdout)
    assert result["images"] == 12 and result["split"] == "test" and result["partial"] is False
    assert result["data_root"] == str(root) and result["data_folder"] == str(root / "test")
    proc = run_cli("train", "--resume", "--out", str(out), "--steps", "3", "--no-progress", cwd=b)
    assert last_json(proc.stdout)["steps"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["root"] == str(root)
    partial = last_json(run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--max-batches", "1",
                                "--batch-size", "5", cwd=b).stdout)
    assert partial["images"] == 5 and partial["partial"] is True


def test_a_checkpoint_with_a_relative_data_root_needs_data_dir(tmp_path):
    out = folder_run(tmp_path)
    path = out / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    state["config"]["data"]["root"] = "data/flat"  # as runs stored it before roots were made absolute
    torch.save(state, path)
    proc = run_cli("evaluate", str(path), cwd=tmp_path / "a", check=False)
    assert proc.returncode == 2 and "relative" in proc.stderr and "--data-dir" in proc.stderr
    result = last_json(run_cli("evaluate", str(path), "--data-dir", "data/flat", cwd=tmp_path / "a").stdout)
    assert result["images"] == 12 and Path(result["data_root"]).is_absolute()


# ---------------------------------------------------------------------------------- the test split
def test_evaluate_uses_the_runs_test_split_and_labels_it(tmp_path):
    out = folder_run(tmp_path, "--set", "data.test_split=val")
    result = last_json(run_cli("evaluate", str(out / "checkpoints" / "last.pt")).stdout)
    assert result["split"] == "val" and result["images"] == 8
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records if "train" not in r["split"]} == {"val"}
    result = last_json(run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--split", "test").stdout)
    assert result["split"] == "test" and result["images"] == 12


def test_a_missing_or_misspelt_split_is_refused_naming_the_ones_there(tmp_path):
    out = folder_run(tmp_path)
    shutil.rmtree(tmp_path / "a" / "data" / "flat" / "test")
    for split in ("tset", "test"):
        proc = run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--split", split, check=False)
        assert proc.returncode == 2 and "train, val" in proc.stderr and "--split" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_training_images_never_join_another_split(tmp_path):
    root = tmp_path / "data"
    write_digits(root / "train", 5)
    with pytest.raises(DataError, match="no 'test' split"):
        get_dataset("folder", root, "test")
    flat = write_digits(tmp_path / "flat", 4)
    with pytest.warns(UserWarning, match="same images for every split"):
        assert len(get_dataset("folder", flat, "test")) == 4


def test_dummy_labels_are_refused_naming_split_val(tmp_path):
    from test_translate import write_cityscapes

    write_cityscapes(tmp_path, "val", n=2)
    write_cityscapes(tmp_path, "test", n=2)
    for path in (tmp_path / "gtFine" / "test").rglob("*.png"):  # the official test labels are dummies
        img = np.asarray(Image.open(path))
        Image.fromarray(np.zeros_like(img)).save(path)
    data = {**load_preset("cityscapes-imap")["data"], "root": str(tmp_path)}
    assert len(dataset_from_config(data, "val")) == 2
    with pytest.raises(DataError, match="--split val"):
        dataset_from_config(data, "test")


def test_evaluation_never_augments():
    mnist = {"name": "mnist", "flip": True}
    assert dataset_from_config(mnist, "train").flip is None  # evaluate --split train: as stored
    assert dataset_from_config(mnist, "train", augment=True).flip is not None  # the training loop
    assert dataset_from_config(mnist, "test", augment=True).flip is None


# ---------------------------------------------------------------------------------- n_bins
def test_n_bins_is_applied_in_the_data_pipeline():
    from attnflow.models import build_model

    config = tiny_mnist_config(1, "model.n_bins=32")
    data = dataset_from_config(config["data"], "test", n_bins=32)
    x = torch.stack([data[i] for i in range(8)])
    assert x.dtype == torch.uint8 and int(x.max()) <= 31
    full = dataset_from_config(config["data"], "test")
    y = torch.stack([full[i] for i in range(8)])
    assert torch.equal(x, torch.div(y, 8, rounding_mode="floor"))  # 5 bits: Glow's x // 2^(8-5)
    model = build_model(config).double()
    model.initialize(x.double())
    z, _ = model.preprocess(x.double())
    assert float(z.min()) >= -0.5 and float(z.max()) < 0.5
    with torch.no_grad():
        bpd = model.bits_per_dim(x.double())
    assert bpd.shape == (8,)
    samples = model.sample(4, temperature=0.5)
    assert int(samples.max()) <= 31
    pictures = model.to_pixels(samples)
    assert pictures.dtype == torch.uint8 and torch.equal(pictures, samples * 8 + 4)


def test_n_bins_run_trains_evaluates_and_samples_on_its_grid(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--preset", "mnist", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
            "--set", "model.n_bins=32", "--set", "train.eval_every=2")
    result = last_json(run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--max-batches", "1").stdout)
    assert result["n_bins"] == 32 and 0 < result["bits_per_dim"] < 8
    run_cli("sample", str(out / "checkpoints" / "last.pt"), "--n", "4", "--out", str(tmp_path / "s.png"),
            "--temperature", "1.0")
    pixels = np.asarray(Image.open(tmp_path / "s.png"))[3:-3, 3:-3]  # inside the grid's border
    values = np.unique(pixels[pixels > 0])
    assert values.max() > 31 and set(values % 8) == {4}  # bin centres of 32 levels, as 8-bit pictures


# ---------------------------------------------------------------------------------- shapes
def test_images_that_do_not_fit_the_model_are_refused_unless_converted(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--preset", "mnist", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
            "--set", "train.eval_every=2")
    ckpt = str(out / "checkpoints" / "last.pt")
    rgb = write_digits(tmp_path / "cifar", 4, size=(32, 32), mode="RGB")
    proc = run_cli("evaluate", ckpt, "--data", "folder", "--data-dir", str(rgb), check=False)
    assert proc.returncode == 2 and "1x28x28" in proc.stderr and "3x32x32" in proc.stderr
    assert "--convert" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    result = last_json(run_cli("evaluate", ckpt, "--data", "folder", "--data-dir", str(rgb), "--convert").stdout)
    assert "3x32x32" in result["converted"] and "1x28x28" in result["converted"] and result["images"] == 4
    mixed = write_digits(tmp_path / "mixed", 2, size=(28, 28))
    write_digits(tmp_path / "mixed" / "more", 1, size=(40, 30))
    proc = run_cli("evaluate", ckpt, "--data", "folder", "--data-dir", str(mixed), check=False)
    assert proc.returncode == 2 and "--convert" in proc.stderr
    same = write_digits(tmp_path / "same", 3)
    result = last_json(run_cli("evaluate", ckpt, "--data", "folder", "--data-dir", str(same)).stdout)
    assert result["images"] == 3 and "converted" not in result


# ---------------------------------------------------------------------------------- run folders
def test_resume_without_a_checkpoint_refuses_when_steps_were_logged(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--preset", "mnist", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
            "--set", "train.eval_every=2")
    metrics = (out / "metrics.jsonl").read_text()
    shutil.rmtree(out / "checkpoints")
    proc = run_cli("train", "--resume", "--out", str(out), "--no-progress", check=False)
    assert proc.returncode == 2 and "last.pt" in proc.stderr and "step 2" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == metrics


def test_overwrite_moves_only_a_run_folder_never_a_users_or_part_of_a_run(tmp_path):
    own = write_digits(tmp_path / "mine", 2)
    proc = run_cli("train", "--preset", "mnist", "--steps", "1", "--out", str(own), "--overwrite",
                   "--no-progress", *TINY, check=False)
    assert proc.returncode == 2 and "not an attnflow run" in proc.stderr
    assert sorted(p.name for p in own.iterdir()) == ["000.png", "001.png"]
    run = tmp_path / "run"
    run_cli("train", "--preset", "mnist", "--steps", "1", "--out", str(run), "--no-progress", *TINY)
    inner = run / "checkpoints"
    proc = run_cli("train", "--preset", "mnist", "--steps", "1", "--out", str(inner), "--overwrite",
                   "--no-progress", *TINY, check=False)
    assert proc.returncode == 2 and "inside the run" in proc.stderr
    assert (inner / "last.pt").is_file() and not list(tmp_path.glob("run/checkpoints.old-*"))
    proc = run_cli("demo", "--steps", "1", "--out", str(own), *TINY, check=False)
    assert proc.returncode == 2 and sorted(p.name for p in own.iterdir()) == ["000.png", "001.png"]
    run_cli("train", "--preset", "mnist", "--steps", "1", "--out", str(run), "--overwrite", "--no-progress", *TINY)
    assert len(list(tmp_path.glob("run.old-*"))) == 1


# ---------------------------------------------------------------------------------- compare
def test_compare_refuses_runs_whose_settings_no_longer_match(tmp_path):
    args = ["compare", "--preset", "mnist", "--steps", "2", "--out", str(tmp_path), "--no-progress",
            "--attentions", "none", *TINY, "--set", "train.eval_every=2"]
    run_cli(*args)
    stored = json.loads((tmp_path / "none" / "seed_0.json").read_text())
    assert stored["config"]["train"]["eval_max_batches"] == 1 and stored["config"]["train"]["steps"] == 2
    proc = run_cli(*args, "--set", "train.eval_max_batches=null", check=False)
    assert proc.returncode == 2 and "train.eval_max_batches" in proc.stderr
    proc = run_cli(*[a if a != "2" else "3" for a in args], check=False)
    assert proc.returncode == 2 and "train.steps" in proc.stderr
    run_cli(*args)  # the same settings: the table is rebuilt from the stored results


def test_warnings_module_is_quiet_for_split_folders(tmp_path):
    root = tmp_path / "d"
    write_digits(root / "test", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(get_dataset("folder", root, "test", channels=1)) == 2
