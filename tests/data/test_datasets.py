"""Data loaders on tiny files written into tmp_path (valid and corrupt), bundled sets, factory."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnflow.data import (
    CIFAR10,
    DATASETS,
    BundledMNIST,
    BundledSR,
    CelebASR,
    CenterCrop,
    CityscapesPairs,
    Compose,
    DataError,
    GreyToRGB,
    ImageFolder,
    MNISTIdx,
    PadTo,
    PairedFolders,
    RandomHFlip,
    Resize,
    SRFolder,
    SyntheticPairs,
    bundled_sr_images,
    get_dataset,
    read_idx,
    write_synthetic_pairs,
)
from attnflow.data.bundled import BUNDLED_SR_NAMES, bundled_mnist_arrays, bundled_mnist_indices
from attnflow.data.common import center_crop_square, to_uint8
from attnflow.evaluation.imresize import imresize


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB uint8 image (so JPEG keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


# ------------------------------------------------------------------------------- bundled MNIST
def test_bundled_mnist_split():
    images, labels = bundled_mnist_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    tr, te = bundled_mnist_indices("train"), bundled_mnist_indices("test")
    assert len(tr) == 4500 and len(te) == 500
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 5000
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        assert (labels[tr] == c).sum() == 450 and (labels[te] == c).sum() == 50
        np.testing.assert_array_equal(np.sort(te[labels[te] == c]), idx[-50:])  # last 50 per class
    np.testing.assert_array_equal(te, bundled_mnist_indices("test"))  # deterministic

    train, test = BundledMNIST("train"), BundledMNIST("test")
    assert len(train) == 4500 and len(test) == 500
    assert torch.bincount(test.labels).tolist() == [50] * 10
    x = train[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 28, 28)
    assert train.channels == 1 and train.image_size == (28, 28)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    torch.testing.assert_close(BundledMNIST("test")[7], test[7])
    with pytest.raises(ValueError, match="valid splits: train, test"):
        BundledMNIST("val")


def test_bundled_mnist_pad_and_rgb():
    d = BundledMNIST("test", pad_to=32, grey_to_rgb=True)
    x = d[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert d.channels == 3 and d.image_size == (32, 32)
    plain = BundledMNIST("test")[3]
    torch.testing.assert_close(x[:, 2:30, 2:30], plain.expand(3, 28, 28))
    assert x[:, :2].sum() == 0 and x[:, 30:].sum() == 0 and x[:, :, :2].sum() == 0
    with pytest.raises(ValueError, match="smaller"):
        BundledMNIST("test", pad_to=20)


# --------------------------------------------------------------------------------- bundled SR
def test_bundled_sr_images_offline():
    imgs = bundled_sr_images()
    assert len(imgs) == len(BUNDLED_SR_NAMES) == 8
    for im in imgs:
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3


def test_bundled_sr_pairs():
    tr = BundledSR("train", hr_size=32, scale=4)
    te = BundledSR("test", hr_size=32, scale=4, flip=False)
    assert tr.flip and not te.flip
    assert not set(tr.crops) & set(te.crops)
    assert abs(len(te) / (len(tr) + len(te)) - 0.2) < 0.01
    hr, lr = te[5]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8)
    assert hr.dtype == lr.dtype == torch.uint8
    torch.testing.assert_close(lr, to_uint8(imresize(hr.double(), 1 / 4)))
    torch.testing.assert_close(BundledSR("test", hr_size=32, scale=4, flip=False)[5][0], hr)
    full = BundledSR("test")  # paper geometry 160 -> 20
    h, lo = full[0]
    assert h.shape == (3, 160, 160) and lo.shape == (3, 20, 20) and full.lr_size == (20, 20)
    with pytest.raises(ValueError, match="not divisible"):
        BundledSR("train", hr_size=30, scale=8)


# --------------------------------------------------------------------------------- MNIST idx
def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    if magic is None:
        magic = 0x0800 | arr.ndim
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


@pytest.fixture()
def mnist_root(tmp_path):
    rng = np.random.default_rng(1)
    tr = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(tr)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(6, dtype=np.uint8))))
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(te))  # the other common spelling
    return tmp_path, tr, te


def test_mnist_idx_reads(mnist_root):
    root, tr, te = mnist_root
    np.testing.assert_array_equal(read_idx(root / "train-images-idx3-ubyte.gz", "images"), tr)
    np.testing.assert_array_equal(read_idx(root / "train-labels-idx1-ubyte.gz", "labels"), np.arange(6))
    d = MNISTIdx(root, "train", pad_to=32, grey_to_rgb=True)
    assert len(d) == 6 and d[2].shape == (3, 32, 32) and d[2].dtype == torch.uint8
    np.testing.assert_array_equal(d[2][0, 2:30, 2:30].numpy(), tr[2])
    assert d.labels.tolist() == list(range(6))
    t = MNISTIdx(root, "test")
    assert len(t) == 3 and t.labels is None and t[0].shape == (1, 28, 28)
    np.testing.assert_array_equal(t[1][0].numpy(), te[1])
    assert get_dataset("mnist-idx", root, "test").image_size == (28, 28)


def test_mnist_idx_errors(tmp_path, mnist_root):
    root, tr, _ = mnist_root
    bad = tmp_path / "bad"
    bad.mkdir()
    p = bad / "train-images-idx3-ubyte"
    p.write_bytes(idx_bytes(tr, magic=1234))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected magic 2051 \(images\), got 1234"):
        MNISTIdx(bad, "train")
    p.write_bytes(idx_bytes(tr)[:-100])
    with pytest.raises(DataError, match="truncated") as e:
        MNISTIdx(bad, "train")
    assert str(p) in str(e.value)
    p.write_bytes(idx_bytes(tr) + b"xx")
    with pytest.raises(DataError, match="trailing"):
        read_idx(p)
    with pytest.raises(DataError, match="expected magic 2049"):
        read_idx(root / "train-images-idx3-ubyte.gz", "labels")
    gz = bad / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(tr))[:-30])
    with pytest.raises(DataError, match="gzip"):
        MNISTIdx(bad, "test")
    with pytest.raises(DataError, match="not found"):
        read_idx(bad / "nope")
    (bad / "x").write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match="too short"):
        read_idx(bad / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no train image file"):
        MNISTIdx(empty, "train")
    (bad / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    p.write_bytes(idx_bytes(tr))
    with pytest.raises(DataError, match="5 labels for 6 images"):
        MNISTIdx(bad, "train")


# --------------------------------------------------------------------------------------- CIFAR
def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


@pytest.fixture()
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batches[name] = cifar_batch(2, k)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    return tmp_path, batches


def test_cifar_reads(cifar_root):
    root, batches = cifar_root
    tr = CIFAR10(root, "train")
    te = get_dataset("cifar10", root / "cifar-10-batches-py", "test")
    assert len(tr) == 10 and len(te) == 2
    assert tr.channels == 3 and tr.image_size == (32, 32)
    x = te[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    row = batches["test_batch"][b"data"][1]
    np.testing.assert_array_equal(x[0].flatten().numpy(), row[:1024])  # red plane first
    np.testing.assert_array_equal(x[2].flatten().numpy(), row[2048:])
    assert te.labels.tolist() == batches["test_batch"][b"labels"]
    np.testing.assert_array_equal(tr[3].numpy().reshape(-1), batches["data_batch_2"][b"data"][1])


def test_cifar_legacy_and_protocol5_pickles(cifar_root):
    root, batches = cifar_root
    folder = root / "cifar-10-batches-py"
    raw = pickle.dumps(batches["test_batch"], protocol=2)
    # the real files were written by numpy 1.x: globals live in numpy.core.multiarray
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    if legacy != raw:
        (folder / "test_batch").write_bytes(legacy)
        assert len(CIFAR10(root, "test")) == 2
    (folder / "test_batch").write_bytes(pickle.dumps(batches["test_batch"], protocol=5))
    np.testing.assert_array_equal(
        CIFAR10(root, "test")[0].numpy().reshape(-1), batches["test_batch"][b"data"][0]
    )


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"echo pwned > {self.target}",))


def test_cifar_refuses_malicious_pickle(cifar_root):
    root, batches = cifar_root
    target = root / "pwned.txt"
    evil = dict(batches["test_batch"])
    evil[b"labels"] = _Evil(str(target))
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|os|nt)\.system") as e:
        CIFAR10(root, "test")
    assert str(path) in str(e.value)
    assert not target.exists()
    path.write_bytes(pickle.dumps({b"data": eval}, protocol=2))  # builtins.eval
    with pytest.raises(DataError, match=r"refusing to unpickle global (builtins|__builtin__)\.eval"):
        CIFAR10(root, "test")


def test_cifar_errors(cifar_root, tmp_path):
    root, batches = cifar_root
    path = root / "cifar-10-batches-py" / "test_batch"
    bad = dict(batches["test_batch"])
    bad[b"images"] = bad.pop(b"data")
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="missing key b'data'"):
        CIFAR10(root, "test")
    bad = {**batches["test_batch"], b"data": np.zeros((2, 100), np.uint8)}
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="uint8 N x 3072"):
        CIFAR10(root, "test")
    bad = {**batches["test_batch"], b"labels": [1, 2, 3]}
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="3 labels for 2 images"):
        CIFAR10(root, "test")
    path.write_bytes(pickle.dumps(batches["test_batch"], protocol=2)[:500])
    with pytest.raises(DataError, match="not a readable pickle"):
        CIFAR10(root, "test")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: not found"):
        CIFAR10(root, "train")
    with pytest.raises(DataError, match="no data_batch"):
        CIFAR10(_empty(tmp_path), "train")


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty_dir"
    d.mkdir(exist_ok=True)
    return d


# ----------------------------------------------------------------------------- image folders
def test_image_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgb(20, 30, 1)).save(tmp_path / "b.png")
    Image.fromarray(rgb(20, 30, 2)).save(tmp_path / "sub" / "a.jpg", quality=95)
    Image.fromarray(rgb(40, 20, 3)).convert("L").save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    d = ImageFolder(tmp_path)
    assert [p.name for p in d.files] == ["b.png", "c.bmp", "a.jpg"]  # sorted by relative path
    assert d[0].shape == (3, 20, 30) and d[0].dtype == torch.uint8
    np.testing.assert_array_equal(d[0].permute(1, 2, 0).numpy(), rgb(20, 30, 1))
    assert d[1].shape == (3, 40, 20)  # grey -> RGB
    g = ImageFolder(tmp_path, channels=1, image_size=16)
    assert all(g[i].shape == (1, 16, 16) for i in range(3)) and g.image_size == (16, 16)
    r = get_dataset("folder", tmp_path, image_size=(8, 12), flip=True)
    assert r[2].shape == (3, 8, 12)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(empty)
    with pytest.raises(DataError, match="not a directory"):
        ImageFolder(tmp_path / "missing")
    good = tmp_path / "imgs"
    good.mkdir()
    Image.fromarray(rgb(8, 8)).save(good / "a.png")
    (good / "b.png").write_bytes(b"\x89PNG garbage, not an image")
    d = ImageFolder(good)
    with pytest.raises(DataError, match="b.png: cannot be read as an image") as e:
        d[1]
    assert str(good / "b.png") in str(e.value)
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(good, channels=2)


# ------------------------------------------------------------------------------------- CelebA
@pytest.fixture()
def celeba_root(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rgb(218, 178, i)).save(folder / f"{i + 1:06d}.jpg", quality=95)
    return tmp_path / "celeba"


def test_celeba_default_split_and_pipeline(celeba_root):
    tr = CelebASR(celeba_root, "train", hr_size=32, scale=4)
    va = CelebASR(celeba_root, "val", hr_size=32, scale=4)
    te = CelebASR(celeba_root / "img_align_celeba", "test", hr_size=32, scale=4)
    # 12 images, k = ceil(12 / 10) = 2: last 2 test, 2 before val, first 8 train
    assert [p.name for p in te.files] == ["000011.jpg", "000012.jpg"]
    assert [p.name for p in va.files] == ["000009.jpg", "000010.jpg"]
    assert len(tr) == 8 and tr.flip and not te.flip
    hr, lr = te[0]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8) and hr.dtype == lr.dtype == torch.uint8
    torch.testing.assert_close(lr, to_uint8(imresize(hr.double(), 1 / 4)))
    with Image.open(te.files[0]) as img:
        crop = center_crop_square(img.convert("RGB"))
        assert crop.size == (178, 178)
        ref = np.asarray(crop.resize((32, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(hr.permute(1, 2, 0).numpy(), ref)
    # flipped pairs: both flipped, relation kept
    flipped = CelebASR(celeba_root, "test", hr_size=32, scale=4, flip=True)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        h2, l2 = flipped[0]
        torch.testing.assert_close(l2, to_uint8(imresize(h2.double(), 1 / 4)))
        seen.add(torch.equal(h2, hr.flip(-1)) and not torch.equal(h2, hr))
        assert torch.equal(h2, hr) or torch.equal(h2, hr.flip(-1))
    assert seen == {True, False}
    full = CelebASR(celeba_root, "test")
    assert full[0][0].shape == (3, 160, 160) and full[0][1].shape == (3, 20, 20)
    with pytest.raises(ValueError, match="not divisible by scale=8"):
        CelebASR(celeba_root, "test", hr_size=100, scale=8)
    with pytest.raises(ValueError, match="valid splits"):
        CelebASR(celeba_root, "holdout")


def test_celeba_partition_file(celeba_root):
    lines = [f"{i + 1:06d}.jpg {0 if i < 6 else (1 if i < 9 else 2)}" for i in range(12)]
    (celeba_root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    te = CelebASR(celeba_root, "test", hr_size=16, scale=8)
    assert [p.name for p in te.files] == ["000010.jpg", "000011.jpg", "000012.jpg"]
    assert len(CelebASR(celeba_root / "img_align_celeba", "train", hr_size=16, scale=8)) == 6
    assert len(get_dataset("celeba", celeba_root, "val", image_size=16, scale=8)) == 3
    (celeba_root / "list_eval_partition.txt").write_text("\n".join(lines + ["000099.jpg 2"]))
    with pytest.raises(DataError, match="000099.jpg: listed in .*list_eval_partition.txt"):
        CelebASR(celeba_root, "test", hr_size=16, scale=8)
    (celeba_root / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(DataError, match="line 1: expected"):
        CelebASR(celeba_root, "test", hr_size=16, scale=8)


def test_celeba_errors(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match="no .jpg/.png images"):
        CelebASR(tmp_path, "train")
    with pytest.raises(DataError, match="not a directory"):
        CelebASR(tmp_path / "nope", "train")
    few = tmp_path / "few"
    few.mkdir()
    Image.fromarray(rgb(218, 178)).save(few / "000001.jpg")
    with pytest.raises(DataError, match="split 'val' is empty"):
        CelebASR(few, "val", hr_size=16, scale=8)


def test_sr_folder(tmp_path):
    Image.fromarray(rgb(50, 70)).save(tmp_path / "x.png")
    d = SRFolder(tmp_path, hr_size=24, scale=3)
    hr, lr = d[0]
    assert hr.shape == (3, 24, 24) and lr.shape == (3, 8, 8)
    torch.testing.assert_close(lr, to_uint8(imresize(hr.double(), 1 / 3)))
    assert get_dataset("sr-folder", tmp_path, image_size=16, scale=4)[0][1].shape == (3, 4, 4)


# --------------------------------------------------------------------------------- Cityscapes
def make_cityscapes(root: Path, split: str = "train", n: int = 2) -> None:
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bonn"
        stem = f"{city}_000000_{i:06d}"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(32, 64, i)).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        ids = np.full((32, 64), 255, np.uint8)
        ids[:, :32] = 7  # road on the left half, "no label" (255) on the right
        ids[:8, :32] = 26  # a car in the top-left
        Image.fromarray(ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
        color = np.zeros((32, 64, 4), np.uint8)
        color[..., :3] = (128, 64, 128)
        color[..., 3] = 255
        Image.fromarray(color).save(root / "gtFine" / split / city / f"{stem}_gtFine_color.png")


def test_cityscapes(tmp_path):
    make_cityscapes(tmp_path)
    d = CityscapesPairs(tmp_path, "train", size=16)
    assert len(d) == 2 and d.channels == 3 and d.cond_channels == 3
    photo, lab = d[0]
    assert photo.shape == (3, 16, 16) and photo.dtype == torch.uint8
    assert lab.shape == (3, 16, 16) and lab.dtype == torch.uint8
    assert lab[:, 0, 0].tolist() == [128, 64, 128]  # RGBA colour image -> RGB
    o = get_dataset("cityscapes", tmp_path, "train", image_size=16, label_mode="onehot")
    photo, one = o[1]
    assert one.shape == (34, 16, 16) and one.dtype == torch.float32 and o.cond_channels == 34
    assert torch.equal(one.sum(0)[:, :8], torch.ones(16, 8))
    assert torch.equal(one.sum(0)[:, 8:], torch.zeros(16, 8))  # id 255 -> all zeros
    assert one[7, 15, 0] == 1 and one[26, 0, 0] == 1 and one[7, 0, 0] == 0


def test_cityscapes_missing_files(tmp_path):
    make_cityscapes(tmp_path)
    lab = tmp_path / "gtFine" / "train" / "bonn" / "bonn_000000_000001_gtFine_color.png"
    lab.unlink()
    with pytest.raises(DataError, match="bonn_000000_000001_leftImg8bit.png: label file .*gtFine_color.png not found"):
        CityscapesPairs(tmp_path, "train", size=16)
    assert len(CityscapesPairs(tmp_path, "train", size=16, label_mode="onehot")) == 2
    (tmp_path / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000001_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match="bonn_000000_000001_gtFine_labelIds.png: photo .* not found"):
        CityscapesPairs(tmp_path, "train", size=16, label_mode="onehot")
    with pytest.raises(DataError, match="not found"):
        CityscapesPairs(tmp_path, "val", size=16)
    with pytest.raises(ValueError, match="label_mode"):
        CityscapesPairs(tmp_path, "train", label_mode="ids")


# --------------------------------------------------------------------- paired and synthetic pairs
def test_synthetic_pairs():
    d = SyntheticPairs(4, size=32, seed=3)
    photo, lab = d[1]
    assert photo.shape == lab.shape == (3, 32, 32) and photo.dtype == lab.dtype == torch.uint8
    again = SyntheticPairs(10, size=32, seed=3)[1]  # item i does not depend on n
    assert torch.equal(again[0], photo) and torch.equal(again[1], lab)
    other = SyntheticPairs(4, size=32, seed=4)[1]
    assert not torch.equal(other[0], photo)
    assert not torch.equal(SyntheticPairs(4, size=32, seed=3, split="test")[1][0], photo)
    oh = SyntheticPairs(4, size=32, seed=3, classes=5, label_mode="onehot")
    _, one = oh[1]
    assert one.shape == (5, 32, 32) and torch.equal(one.sum(0), torch.ones(32, 32))
    assert oh.cond_channels == 5
    # learnable: within a class the photo is close to that class's colour, across classes it differs
    from attnflow.data.synthetic import _photo_style, synthetic_pair

    base, _ = _photo_style()
    photo_np, ids = synthetic_pair(1, 64, 3, 8)
    for c in np.unique(ids):
        mean = photo_np[ids == c].astype(float).mean(0)
        assert np.abs(mean - base[c]).max() < 30
    with pytest.raises(ValueError, match="classes"):
        SyntheticPairs(2, classes=1)


def test_paired_folders(tmp_path):
    write_synthetic_pairs(tmp_path / "pairs", 3, size=32, seed=1)
    p = PairedFolders(tmp_path / "pairs", size=32)
    s = SyntheticPairs(3, size=32, seed=1)
    assert len(p) == 3 and p.cond_channels == 3
    for i in range(3):
        assert torch.equal(p[i][0], s[i][0]) and torch.equal(p[i][1], s[i][1])
    assert get_dataset("pairs", tmp_path / "pairs", image_size=16)[0][0].shape == (3, 16, 16)
    (tmp_path / "pairs" / "A" / "00002.png").unlink()
    with pytest.raises(DataError, match=r"B/00002.png: no label image"):
        PairedFolders(tmp_path / "pairs", size=32)
    (tmp_path / "pairs" / "B" / "00002.png").unlink()
    (tmp_path / "pairs" / "B" / "00001.png").unlink()
    with pytest.raises(DataError, match=r"A/00001.png: no photo"):
        PairedFolders(tmp_path / "pairs", size=32)
    with pytest.raises(DataError, match="not found"):
        PairedFolders(tmp_path / "nothing")


# ------------------------------------------------------------------------------------ transforms
def test_transforms():
    x = torch.arange(2 * 3 * 5, dtype=torch.uint8).view(1, 6, 5)
    p = PadTo(8)(x)
    assert p.shape == (1, 8, 8) and torch.equal(p[:, 1:7, 1:6], x) and p.sum() == x.sum()
    assert GreyToRGB()(x).shape == (3, 6, 5)
    assert torch.equal(CenterCrop((2, 3))(x), x[:, 2:4, 1:4])
    img = torch.from_numpy(rgb(20, 30).transpose(2, 0, 1).copy())
    assert Resize((10, 15))(img).shape == (3, 10, 15)
    assert RandomHFlip(p=1.0)(x).equal(x.flip(-1)) and RandomHFlip(p=0.0)(x).equal(x)
    c = Compose([PadTo(8), GreyToRGB(), None])
    assert c(x).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="larger"):
        PadTo(4)(x)


# ------------------------------------------------------------------------------------- factory
def test_get_dataset_names_and_errors(tmp_path):
    assert set(DATASETS) >= {
        "mnist", "mnist-idx", "cifar10", "folder", "celeba", "celeba-bundled",
        "cityscapes", "pairs", "synthetic-pairs",
    }
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: mnist, mnist-idx"):
        get_dataset("imagenet")
    with pytest.raises(ValueError, match="needs root"):
        get_dataset("cifar10")
    with pytest.raises(ValueError, match="option 'label_mode' is not supported; valid options: flip, grey_to_rgb, pad_to"):
        get_dataset("mnist", label_mode="color")
    d = get_dataset("mnist", None, "test", pad_to=32, grey_to_rgb=True)
    assert len(d) == 500 and d[0].shape == (3, 32, 32)
    sr = get_dataset("celeba-bundled", split="test", image_size=32, scale=4)
    assert sr.image_size == (32, 32) and sr[0][1].shape == (3, 8, 8)
    syn = get_dataset("synthetic-pairs", split="test", image_size=16, n=5, seed=2)
    assert len(syn) == 5 and syn[0][0].shape == (3, 16, 16)
    assert len(get_dataset("synthetic-pairs", split="train", image_size=16)) == 512
    with pytest.raises(DataError):
        get_dataset("folder", tmp_path)  # empty folder


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from attnflow.data.common import load_image

    levels = np.array([[0, 257, 32896], [65535, 514, 1000]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG (mode I;16)
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    grey = np.asarray(load_image(tmp_path / "deep.png", "L"))
    np.testing.assert_array_equal(grey, [[0, 1, 128], [255, 2, 4]])  # v / 257, rounded
    rgb = np.asarray(load_image(tmp_path / "deep.png", "RGB"))
    assert rgb.shape == (2, 3, 3) and (rgb[..., 0] == grey).all()


def test_a_folder_without_the_split_says_which_images_it_uses(tmp_path):
    from attnflow.data import dataset_from_config

    for i in range(2):
        Image.fromarray(rgb(8, 8, i)).save(tmp_path / f"{i}.png")
    with pytest.warns(UserWarning, match=r"no train/val/test folders: the 'test' split is every image of"):
        d = dataset_from_config({"name": "folder", "root": str(tmp_path)}, "test", (3, 8, 8))
    assert len(d) == 2
    (tmp_path / "test").mkdir()
    Image.fromarray(rgb(8, 8, 5)).save(tmp_path / "test" / "t.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a test/ folder: no warning
        assert len(dataset_from_config({"name": "folder", "root": str(tmp_path)}, "test", (3, 8, 8))) == 1


def test_a_folder_of_mixed_sizes_without_image_size_is_a_clear_error(tmp_path):
    from attnflow.data import DataError, dataset_from_config

    Image.fromarray(rgb(20, 30, 0)).save(tmp_path / "a.png")
    Image.fromarray(rgb(28, 28, 1)).save(tmp_path / "b.png")
    cfg = {"name": "folder", "root": str(tmp_path), "options": {"image_size": None}}
    with pytest.raises(DataError, match=r"a.png is 30x20, b.png is 28x28\) cannot be batched; set data.options.image_size"):
        dataset_from_config(cfg, "train", (3, 28, 28))
    with pytest.raises(DataError, match=r"3x20x30 and 3x28x28\), the model takes 3x28x28; .* --convert"):
        dataset_from_config({**cfg, "options": {}}, "train", (3, 28, 28))  # never resized silently
    converted = dataset_from_config({**cfg, "options": {}}, "train", (3, 28, 28), convert=True)
    assert converted[0].shape == (3, 28, 28) and "converted to 3x28x28" in converted.converted


def test_random_shift_is_the_reference_shift():
    """mARFlow's ShiftTransform(3): edge padding, a move of -3..2 pixels along one axis."""
    from attnflow.data.common import RandomShift

    x = torch.arange(6 * 7, dtype=torch.uint8).view(1, 6, 7)
    seen = set()
    torch.manual_seed(0)
    for _ in range(400):
        y = RandomShift(3)(x)
        assert y.shape == x.shape and y.dtype == torch.uint8
        found = None
        for dim in (-1, -2):
            n = x.shape[dim]
            for move in range(-3, 3):
                idx = (torch.arange(n) + move).clamp(0, n - 1)
                if torch.equal(y, x.index_select(dim, idx)):
                    found = (dim, move) if move else (0, 0)
        assert found is not None
        seen.add(found)
    expected = {(0, 0)} | {(d, m) for d in (-1, -2) for m in (-3, -2, -1, 1, 2)}
    assert seen == expected  # every move of the reference's range, on both axes, nothing else
    assert RandomShift(0)(x) is x
    with pytest.raises(ValueError, match="pixels must be an int >= 0"):
        RandomShift(-1)


def test_cifar_shift_only_for_training(cifar_root):
    from attnflow.config import load_preset
    from attnflow.data import dataset_from_config

    data_cfg = {**load_preset("cifar10-3-4-96-none")["data"], "root": str(cifar_root[0])}
    assert data_cfg["options"] == {"shift": 3} and data_cfg["flip"]
    train, test = dataset_from_config(data_cfg, "train", augment=True), dataset_from_config(data_cfg, "test")
    assert dataset_from_config(data_cfg, "train").shift is None  # evaluating the training split
    assert train.shift is not None and train.shift.pixels == 3 and train.flip is not None
    assert test.shift is None and test.flip is None
    torch.manual_seed(0)
    moved = sum(not torch.equal(train[0], train.images[0]) for _ in range(20))
    assert moved > 10
