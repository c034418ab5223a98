"""The pix2pix layout (side-by-side A | B images in root/<split>/) and palette-snapped one-hot labels
for it and for paired A/B folders, on tiny folders written from the synthetic pair generator."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from attnflow.config import load_preset
from attnflow.data import (
    DataError,
    PairedFolders,
    Pix2PixPairs,
    SyntheticPairs,
    dataset_from_config,
    get_dataset,
    write_synthetic_pairs,
)
from attnflow.data.cityscapes import label_palette, snap_to_palette
from attnflow.data.synthetic import synthetic_pair
from attnflow.images import CITYSCAPES_COLORS, SYNTHETIC_PALETTE

#: synthetic class -> a Cityscapes label id (road, building, vegetation, sky, person, car, ...),
#: so a folder can hold Cityscapes-coloured labels that snap back to known ids
CITYSCAPES_IDS = np.array([0, 7, 11, 21, 23, 24, 26, 19])


def write_pix2pix(
    root: Path,
    n: int = 3,
    size: int = 32,
    seed: int = 0,
    classes: int = 8,
    splits: tuple[str, ...] = ("train", "val", "test"),
    ext: str = "png",
    palette: np.ndarray = SYNTHETIC_PALETTE,
) -> Path:
    """``root/<split>/<i>.<ext>``: synthetic pairs as pix2pix's Cityscapes copy packs them,
    photo | colour label (so label -> photo is ``BtoA``); ``palette[ids]`` colours the labels."""
    for split in splits:
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo, ids = synthetic_pair(i, size, seed, classes, split)
            Image.fromarray(np.concatenate([photo, palette[ids]], axis=1)).save(root / split / f"{i}.{ext}")
    return root


def train_tiny_translate_demo(root: Path, out: Path):
    """``attnflow train --preset translate-demo`` on the pix2pix folder ``root`` (BtoA), tiny, 2 steps."""
    tiny = ["--set", "model.levels=1", "--set", "model.steps=1", "--set", "model.hidden=8",
            "--set", "model.cond.cond_hidden=4", "--set", "train.batch_size=2", "--set", "train.eval_batch_size=4",
            "--set", "train.n_samples=2"]
    return run_cli("train", "--preset", "translate-demo", "--set", "data.name=pix2pix",
                   "--set", "data.options.direction=BtoA", "--data-dir", str(root), "--steps", "2",
                   *tiny, "--out", str(out), "--no-progress")


def away_from_boundaries(ids: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels whose ``(2r+1)^2`` neighbourhood holds a single class."""
    padded = np.pad(ids, r, mode="edge")
    h, w = ids.shape
    same = np.ones_like(ids, dtype=bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy : dy + h, dx : dx + w] == ids
    return same


@contextlib.contextmanager
def no_warnings():
    """A context in which any warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------------------------- layout
def test_halves_and_direction(tmp_path):
    root = write_pix2pix(tmp_path / "p2p", n=3, size=32, seed=1)
    syn = SyntheticPairs(3, size=32, seed=1, split="val")
    btoa = get_dataset("pix2pix", root, "val", image_size=32, direction="BtoA")
    atob = get_dataset("pix2pix", root, "val", image_size=32)  # AtoB, pix2pix's default
    assert isinstance(btoa, Pix2PixPairs) and btoa.whole_root is False and btoa.root == root / "val"
    assert len(btoa) == len(atob) == 3 and atob.direction == "AtoB"
    assert (btoa.channels, btoa.image_size, btoa.cond_channels, btoa.cond_size) == (3, (32, 32), 3, (32, 32))
    assert btoa.snapped_share is None and [p.name for p in btoa.files] == ["0.png", "1.png", "2.png"]
    for i in range(3):
        photo, label = btoa[i]
        assert photo.dtype == label.dtype == torch.uint8 and photo.shape == label.shape == (3, 32, 32)
        assert torch.equal(photo, syn[i][0]) and torch.equal(label, syn[i][1])  # right half = label
        left, right = atob[i]  # AtoB: the left half (the photo here) is the condition
        assert torch.equal(left, syn[i][1]) and torch.equal(right, syn[i][0])
    # resized halves: the photo bicubic, the label nearest (only its own colours survive)
    small = get_dataset("pix2pix", root, "train", image_size=(16, 24), direction="btoa")
    photo, label = small[0]
    assert small.direction == "BtoA" and photo.shape == label.shape == (3, 16, 24)
    colours = {tuple(c) for c in label.permute(1, 2, 0).reshape(-1, 3).tolist()}
    assert colours <= {tuple(c) for c in SYNTHETIC_PALETTE.tolist()}


def test_flip_applies_to_both_halves_alike(tmp_path):
    root = write_pix2pix(tmp_path / "p2p", n=1, size=16, splits=("train",))
    plain = Pix2PixPairs(root / "train", size=16, direction="BtoA")[0]
    flipping = Pix2PixPairs(root / "train", size=16, direction="BtoA", flip=True)
    seen = set()
    for _ in range(20):
        photo, label = flipping[0]
        flipped = torch.equal(photo, plain[0].flip(-1))
        assert flipped or torch.equal(photo, plain[0])
        assert torch.equal(label, plain[1].flip(-1) if flipped else plain[1])
        seen.add(flipped)
    assert seen == {True, False}


# -------------------------------------------------------------------------------- snapping
def test_onehot_from_lossless_labels_recovers_the_ids(tmp_path):
    root = write_pix2pix(tmp_path / "p2p", n=3, size=32, seed=2, classes=6, splits=("test",))
    with no_warnings():
        d = get_dataset("pix2pix", root, "test", image_size=32, direction="BtoA", label_mode="onehot", classes=6)
    assert d.snapped_share == 0.0 and d.cond_channels == 6
    for i in range(3):
        photo, one = d[i]
        _, ids = synthetic_pair(i, 32, 2, 6, "test")
        assert one.dtype == torch.float32 and one.shape == (6, 32, 32)
        assert torch.equal(one.sum(0), torch.ones(32, 32)) and torch.equal(one.argmax(0), torch.from_numpy(ids))


def test_onehot_from_jpeg_labels_snaps_and_says_so_once(tmp_path):
    """JPEG blurs colours (most of all at class boundaries, by chroma subsampling): snapping
    recovers the ids away from the boundaries, and the share snapped is said once."""
    root = write_pix2pix(tmp_path / "p2p", n=3, size=64, seed=3, splits=("train",), ext="jpg",
                         palette=CITYSCAPES_COLORS[CITYSCAPES_IDS])
    with pytest.warns(UserWarning, match=r"% of the label pixels of the first 3 label image\(s\) are not exactly") as rec:
        d = Pix2PixPairs(root / "train", size=64, direction="BtoA", label_mode="onehot")  # classes=34
    assert len(rec) == 1 and "Cityscapes palette" in str(rec[0].message)
    assert 0.1 < d.snapped_share <= 1 and d.cond_channels == 34
    with no_warnings():  # reading items says nothing more
        items = [d[i] for i in range(3)]
    for i, (_, one) in enumerate(items):
        _, ids = synthetic_pair(i, 64, 3, 8, "train")
        assert torch.equal(one.sum(0), torch.ones(64, 64))
        right = one.argmax(0).numpy() == CITYSCAPES_IDS[ids]
        assert right.mean() > 0.9 and right[away_from_boundaries(ids)].mean() > 0.99


def test_snapping_maps_a_shared_colour_to_its_first_id():
    ids, dist = snap_to_palette(CITYSCAPES_COLORS[None], label_palette(34))
    expected = np.arange(34)
    expected[1:5] = 0  # ids 0..4 are all black
    expected[18] = 17  # polegroup has pole's grey
    assert np.array_equal(ids[0], expected) and not dist.any()
    ids, dist = snap_to_palette(np.array([[[10, 60, 95], [120, 70, 128]]], np.uint8), label_palette(34))
    assert ids.tolist() == [[28, 7]] and dist[0, 0] == pytest.approx(math.sqrt(10**2 + 5**2))
    with pytest.raises(ValueError, match="classes=20: .* classes=34 .* or 2..16"):
        label_palette(20)


# ------------------------------------------------------------------------------------- errors
def test_bad_images_and_options_are_clear_errors(tmp_path):
    root = write_pix2pix(tmp_path / "p2p", n=2, size=16, splits=("train",))
    Image.fromarray(np.zeros((16, 33, 3), np.uint8)).save(root / "train" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png: width 33 is odd .* expected two halves side by side"):
        get_dataset("pix2pix", root, "train", image_size=16)
    (root / "train" / "odd.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"odd.png: cannot be read as an image"):
        Pix2PixPairs(root / "train", size=16)
    (root / "train" / "odd.png").unlink()
    with pytest.raises(ValueError, match=r"direction must be one of AtoB, BtoA .* got 'AB'"):
        get_dataset("pix2pix", root, "train", direction="AB")
    with pytest.raises(ValueError, match="label_mode must be 'color' or 'onehot'"):
        Pix2PixPairs(root / "train", label_mode="ids")
    with pytest.raises(DataError, match="no 'test' split"):
        get_dataset("pix2pix", root, "test")  # only train/: no silent fall-back to training images
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        Pix2PixPairs(tmp_path / "empty")
    with pytest.raises(DataError, match="not a directory"):
        Pix2PixPairs(tmp_path / "missing")


# --------------------------------------------------------------------------- paired folders
def test_paired_folders_onehot(tmp_path):
    root = write_synthetic_pairs(tmp_path / "pairs" / "train", 2, size=16, seed=4, classes=5)
    with no_warnings():
        p = get_dataset("pairs", tmp_path / "pairs", "train", image_size=16, label_mode="onehot", classes=5)
    assert p.snapped_share == 0.0 and p.cond_channels == 5
    ids = synthetic_pair(1, 16, 4, 5)[1]
    assert torch.equal(p[1][1].argmax(0), torch.from_numpy(ids)) and torch.equal(p[1][1].sum(0), torch.ones(16, 16))
    assert torch.equal(p[1][0], SyntheticPairs(2, size=16, seed=4, classes=5)[1][0])
    # single-channel label images are label ids, read as they are (no snapping)
    for f in (root / "A").iterdir():
        Image.fromarray(synthetic_pair(int(f.stem), 16, 4, 5)[1].astype(np.uint8), mode="L").save(f)
    ids_set = PairedFolders(root, size=16, label_mode="onehot", classes=5)
    assert ids_set.snapped_share is None and torch.equal(ids_set[1][1], p[1][1])
    with pytest.raises(ValueError, match="label_mode must be 'color' or 'onehot'"):
        PairedFolders(root, label_mode="ids")


@pytest.mark.parametrize("name", ["pairs", "pix2pix"])
def test_the_cityscapes_preset_data_section_reads_pairs_and_pix2pix(tmp_path, name):
    """--preset cityscapes-imap --set data.name=pairs|pix2pix --data-dir D needs no other setting
    (for colour labels; the one-hot variant below needs direction=BtoA for photo | label images)."""
    root = tmp_path / name
    palette = CITYSCAPES_COLORS[CITYSCAPES_IDS]
    if name == "pairs":
        for split in ("train", "val"):
            write_synthetic_pairs(root / split, 2, size=16, split=split)
            for f in (root / split / "A").iterdir():  # Cityscapes colours instead of the synthetic ones
                Image.fromarray(palette[synthetic_pair(int(f.stem), 16, 0, 8, split)[1]]).save(f)
    else:
        write_pix2pix(root, n=2, size=16, splits=("train", "val"), palette=palette)
    data_cfg = {**load_preset("cityscapes-imap")["data"], "name": name, "root": str(root)}
    assert data_cfg["options"] == {"image_size": 256, "label_mode": "color"} and data_cfg["test_split"] == "val"
    with no_warnings():
        train = dataset_from_config(data_cfg, "train")
        val = dataset_from_config(data_cfg, data_cfg["test_split"])
    assert val.root == root / "val" and len(train) == len(val) == 2 and val.cond_channels == 3
    photo, label = val[1]
    assert photo.shape == label.shape == (3, 256, 256) and label.dtype == torch.uint8
    # the presets' one-hot variant: label_mode=onehot snaps to the 34 Cityscapes ids by default
    onehot_cfg = {**data_cfg, "options": {**data_cfg["options"], "label_mode": "onehot"}}
    if name == "pix2pix":
        onehot_cfg["options"]["direction"] = "BtoA"
    with no_warnings():
        one = dataset_from_config(onehot_cfg, "val")
    ids = synthetic_pair(1, 16, 0, 8, "val")[1].repeat(16, 0).repeat(16, 1)  # nearest x16
    assert one.cond_channels == 34 and torch.equal(one[1][1].argmax(0), torch.from_numpy(CITYSCAPES_IDS[ids]))


# -------------------------------------------------------------------------------- command line
def test_train_evaluate_translate_on_a_pix2pix_folder(tmp_path):
    root = write_pix2pix(tmp_path / "p2p", n=4, size=32, splits=("train", "val", "test"))
    labels = tmp_path / "labels"
    labels.mkdir()
    with Image.open(root / "test" / "0.png") as img:
        img.crop((32, 0, 64, 32)).save(labels / "0.png")  # the label half (BtoA)
    out = tmp_path / "run"
    proc = train_tiny_translate_demo(root, out)
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 2 and math.isfinite(summary["test_bpd"])
    ckpt = out / "checkpoints" / "last.pt"
    result = json.loads(run_cli("evaluate", str(ckpt), "--batch-size", "2").stdout)
    assert result["data"] == "pix2pix" and result["split"] == "test" and result["images"] == 4
    assert math.isfinite(result["bits_per_dim"])
    made = json.loads(run_cli("translate", str(ckpt), str(labels), "--samples", "1", "--out", str(tmp_path / "o")).stdout)
    assert made["inputs"] == 1 and [Path(f).name for f in made["files"]] == ["0_t0.70_s0.png"]
    with Image.open(made["files"][0]) as img:
        assert img.size == (32, 32)


def test_a_copy_with_train_and_val_only_is_evaluated_on_val(tmp_path):
    """pix2pix's Cityscapes copy ships train/ and val/: the run's held-out split is val (said with a
    warning), metrics.jsonl labels it so, and evaluate without --split uses it."""
    root = write_pix2pix(tmp_path / "p2p", n=4, size=32, splits=("train", "val"))
    out = tmp_path / "run"
    proc = train_tiny_translate_demo(root, out)
    summary = json.loads(proc.stdout)
    assert summary["test_split"] == "val" and "no test/" in proc.stderr
    assert {json.loads(line)["split"] for line in (out / "metrics.jsonl").read_text().splitlines()} <= {"train", "val"}
    result = json.loads(run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--batch-size", "2").stdout)
    assert result["split"] == "val" and result["data_folder"] == str((root / "val").resolve())
    proc = run_cli("evaluate", str(out / "checkpoints" / "last.pt"), "--split", "test", check=False)
    assert proc.returncode == 2 and "train, val" in proc.stderr
    made = json.loads(run_cli("translate", str(out / "checkpoints" / "last.pt"), str(root / "val"), "--pairs",
                              "--samples", "1", "--out", str(tmp_path / "o")).stdout)
    assert made["inputs"] == 4 and "BtoA" in made["pairs"] and not made["warnings"]
    assert sorted(Path(f).name for f in made["files"]) == [f"{i}_t0.70_s0.png" for i in range(4)]


def test_translate_pairs_reads_the_condition_half(tmp_path):
    """``translate --pairs`` reads a pair image's condition half exactly as the label file alone."""
    from attnflow.cli.translate import _read
    from attnflow.config import DEFAULTS, merge
    from attnflow.models import build_model

    root = write_pix2pix(tmp_path / "p2p", n=1, size=16, splits=("val",))
    pair = root / "val" / "0.png"
    with Image.open(pair) as img:
        img.crop((16, 0, 32, 16)).save(tmp_path / "label.png")  # the right half: BtoA's condition
    model = build_model(merge(DEFAULTS, {"model": {"backbone": "fullglow", "image_shape": [3, 16, 16], "levels": 1,
                                                   "steps": 1, "hidden": 8, "cond": {"cond_hidden": 4}}}))
    assert torch.equal(_read(model, pair, "BtoA"), _read(model, tmp_path / "label.png"))
    assert not torch.equal(_read(model, pair, "AtoB"), _read(model, tmp_path / "label.png"))
