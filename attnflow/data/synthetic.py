"""Synthetic label-map / photo pairs, generated from a seed: a stand-in for Cityscapes in tests and
the translation demo (results on them say nothing about Cityscapes).

:class:`SyntheticPairs` generates the pairs in memory; :func:`write_synthetic_pairs` writes them in
the paired-folder layout (``A/`` labels, ``B/`` photos) that :class:`~attnflow.data.PairedFolders`
reads back exactly.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..images import SYNTHETIC_PALETTE
from .cityscapes import _flip_pair, labels_to_onehot
from .common import as_size, to_tensor

__all__ = ["SyntheticPairs", "synthetic_pair", "write_synthetic_pairs"]


_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=1)
def _photo_style() -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-class photo base colours and texture amplitudes (independent of any seed)."""
    rng = np.random.default_rng(20220619)
    base = rng.uniform(40, 215, size=(len(SYNTHETIC_PALETTE), 3))
    base[0] = (120, 130, 140)  # background: grey-blue "sky/road"
    amp = rng.uniform(6, 24, size=len(SYNTHETIC_PALETTE))
    return base, amp


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def synthetic_pair(index: int, size: int = 64, seed: int = 0, classes: int = 8, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ``(photo uint8 HxWx3, label ids int64 HxW)``; deterministic in its arguments."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"synthetic pairs: unknown split {split!r}; valid: train, val, test")
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM[split], int(index)])
    s = int(size)
    ids = np.zeros((s, s), dtype=np.int64)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    for _ in range(int(rng.integers(2, 6))):
        c = int(rng.integers(1, classes))
        cy, cx = rng.uniform(0, s, size=2)
        hy, hx = rng.uniform(s / 10, s / 3, size=2)
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)
        else:
            mask = ((yy - cy) / hy) ** 2 + ((xx - cx) / hx) ** 2 <= 1.0
        ids[mask] = c
    base, amp = _photo_style()
    texture = _smooth_noise(rng, s, max(2, s // 8))[:, :, None]
    angle = rng.uniform(0, 2 * np.pi)
    shading = 1.0 + 0.25 * ((np.cos(angle) * (xx - s / 2) + np.sin(angle) * (yy - s / 2)) / s)
    photo = base[ids] * shading[:, :, None] + amp[ids][:, :, None] * texture
    photo += rng.normal(0.0, 3.0, size=photo.shape)
    return np.clip(np.round(photo), 0, 255).astype(np.uint8), ids


def _check_classes(classes: int) -> int:
    if isinstance(classes, bool) or int(classes) != classes or not 2 <= int(classes) <= len(SYNTHETIC_PALETTE):
        raise ValueError(f"synthetic pairs: classes must be an integer in 2..{len(SYNTHETIC_PALETTE)}, got {classes!r}")
    return int(classes)


class SyntheticPairs(Dataset):
    """In-memory synthetic label-map -> photo pairs (tests/demos only; see module docstring).

    Each item ``i`` is generated from ``(seed, split, i)`` alone, so it does not depend on ``n``.
    Label maps: a background class plus 2-5 random rectangles/ellipses of classes
    ``1..classes-1``, coloured with :data:`SYNTHETIC_PALETTE`. Photos: a fixed base colour per
    class, a smooth random texture of class-dependent strength, a random linear shading and a
    little pixel noise. Items: ``(photo uint8 [3, S, S], label uint8 [3, S, S])`` or, with
    ``label_mode="onehot"``, ``(photo, float32 [classes, S, S])``.
    """

    def __init__(
        self,
        n: int,
        size: int = 64,
        seed: int = 0,
        classes: int = 8,
        label_mode: str = "color",
        split: str = "train",
        flip: bool = False,
    ):
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise ValueError(f"synthetic pairs: n must be a positive integer, got {n!r}")
        if label_mode not in ("color", "onehot"):
            raise ValueError(f"synthetic pairs: label_mode must be 'color' or 'onehot', got {label_mode!r}")
        if split not in _SPLIT_STREAM:
            raise ValueError(f"synthetic pairs: unknown split {split!r}; valid: train, val, test")
        self.n = int(n)
        self.size = as_size(size, "size")
        if self.size[0] != self.size[1]:
            raise ValueError(f"synthetic pairs: size must be square, got {size!r}")
        self.seed = int(seed)
        self.classes = _check_classes(classes)
        self.label_mode = label_mode
        self.split = split
        self.flip = bool(flip)
        self.channels = 3
        self.image_size = self.size
        self.cond_channels = 3 if label_mode == "color" else self.classes
        self.cond_size = self.size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} synthetic pairs")
        i = i % self.n
        photo, ids = synthetic_pair(i, self.size[0], self.seed, self.classes, self.split)
        if self.label_mode == "color":
            lab = to_tensor(SYNTHETIC_PALETTE[ids])
        else:
            lab = labels_to_onehot(torch.from_numpy(ids), self.classes)
        return _flip_pair(to_tensor(photo), lab, self.flip)


def write_synthetic_pairs(
    directory: str | os.PathLike,
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: int = 8,
    split: str = "train",
) -> Path:
    """Write ``n`` synthetic pairs in the :class:`PairedFolders` layout: ``directory/A/00000.png``
    (colour label map) and ``directory/B/00000.png`` (photo), lossless PNG, so that
    ``PairedFolders(directory, size)[i] == SyntheticPairs(n, size, seed, classes)[i]``."""
    directory = Path(directory)
    classes = _check_classes(classes)
    (directory / "A").mkdir(parents=True, exist_ok=True)
    (directory / "B").mkdir(parents=True, exist_ok=True)
    for i in range(int(n)):
        photo, ids = synthetic_pair(i, int(size), seed, classes, split)
        Image.fromarray(SYNTHETIC_PALETTE[ids]).save(directory / "A" / f"{i:05d}.png")
        Image.fromarray(photo).save(directory / "B" / f"{i:05d}.png")
    return directory
