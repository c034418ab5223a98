"""Paired image translation in the pix2pix layout: one image per pair, the two halves side by side.

The data sets shipped for pix2pix (Isola et al. 2017: ``cityscapes``, ``facades``, ``maps``,
``edges2shoes``, ...) store each pair as **one** JPEG, ``A | B``: the left half is image A, the
right half image B, each ``W/2`` wide::

    root/train/1.jpg    root/val/1.jpg    root/test/1.jpg    (any names; png works too)

:func:`attnflow.data.get_dataset` (name ``pix2pix``) reads ``root/<split>`` (or, when ``root`` has
no train/val/test folder at all, ``root`` itself for every split, with a warning; see
:func:`attnflow.data.common.split_folder`); :class:`Pix2PixPairs` takes that folder.

**Direction** follows pix2pix's ``--direction``: ``AtoB`` (the default, as in pix2pix) makes the
LEFT half the condition (the label map) and the RIGHT half the target photo; ``BtoA`` the other way
round. Which one a data set needs depends on how it was packed: pix2pix's Cityscapes copy
(512x256, photo | colour label) translates label -> photo with ``BtoA``; ``facades`` (photo | label)
too; ``edges2shoes`` (edges | photo) with ``AtoB``.

Items are those of the other translation datasets (:mod:`attnflow.data.cityscapes`):
``(photo uint8 [3, S, S], label)``, each half resized to ``size`` (photo: Pillow bicubic; label:
nearest neighbour), ``flip`` flipping both halves alike. ``label_mode="color"`` gives the label half
as it is (``uint8 [3, S, S]``); ``"onehot"`` snaps every label pixel to the nearest colour of the
palette (:func:`attnflow.data.cityscapes.label_palette`: the Cityscapes colours for ``classes=34``,
the default) and one-hots the ids (``float32 [classes, S, S]``). pix2pix's label halves are JPEG'd,
so some pixels (about 9% of Cityscapes' are more than 30 RGB units from every palette colour)
are not a palette colour: the share snapped among the first few images is measured once, at
construction (``.snapped_share``), and said in a warning when not 0.

An image of odd width (not two equal halves), a missing or unreadable file, or a folder without
images is a :class:`DataError` naming the file and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .cityscapes import (
    CITYSCAPES_NUM_IDS,
    SNAP_SAMPLE,
    _flip_pair,
    check_label_mode,
    color_label_tensor,
    set_pair_attributes,
)
from .common import DataError, as_size, list_images, load_image, resize_image, to_tensor

__all__ = ["Pix2PixPairs", "DIRECTIONS"]

#: pix2pix's ``--direction`` values: which half is the condition (A -> B: the left one)
DIRECTIONS = ("AtoB", "BtoA")


def check_direction(direction: str) -> str:
    """``AtoB`` or ``BtoA`` (any letter case); a ValueError naming the valid values otherwise."""
    for valid in DIRECTIONS:
        if isinstance(direction, str) and direction.lower() == valid.lower():
            return valid
    raise ValueError(
        f"pix2pix: direction must be one of {', '.join(DIRECTIONS)} (AtoB: left half = condition, "
        f"right half = photo), got {direction!r}"
    )


def _check_width(path: Path, width: int, height: int) -> None:
    if width % 2:
        raise DataError(
            f"pix2pix image {path}: width {width} is odd (image {width}x{height}); expected two halves "
            f"side by side, A | B, each width/2 wide (e.g. 512x256 for two 256x256 images)"
        )


class Pix2PixPairs(Dataset):
    """``(photo, label)`` pairs from side-by-side ``A | B`` images in ``root`` (see module docstring).

    Args:
        root: the folder of one split (e.g. ``facades/train``); images found recursively.
        size: int or ``(H, W)``, the size each half is resized to.
        direction: ``AtoB`` (left half = condition, right = photo) or ``BtoA``.
        label_mode: ``color`` (the label half, uint8) or ``onehot`` (palette-snapped ids, float32).
        classes: one-hot classes (``onehot`` only): 34 = the Cityscapes palette, 2..16 the
            synthetic-pairs palette.
        flip: flip both halves left-right together with probability 1/2.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | tuple[int, int] = 256,
        direction: str = "AtoB",
        label_mode: str = "color",
        classes: int = CITYSCAPES_NUM_IDS,
        flip: bool = False,
    ):
        self.root = Path(root)
        self.size = as_size(size, "size")
        self.direction = check_direction(direction)
        self.label_mode = check_label_mode(label_mode, f"pix2pix data {self.root}")
        self.files = list_images(self.root, "pix2pix folder")
        for path in self.files:  # headers only (fast): a bad file stops the run now, not mid-training
            self._check_header(path)
        self.flip = bool(flip)
        set_pair_attributes(self, label_mode, classes, f"pix2pix data {self.root}",
                            lambda: [self._read(i)[2] for i in range(min(SNAP_SAMPLE, len(self.files)))])

    @staticmethod
    def _check_header(path: Path) -> None:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, ValueError, SyntaxError):
            load_image(path, "RGB")  # raises the DataError that names the file
            raise  # pragma: no cover
        _check_width(path, width, height)

    def halves(self, i: int) -> tuple[Image.Image, Image.Image]:
        """``(condition, photo)`` halves of item ``i`` at their stored size, per ``direction``."""
        return self.pair_halves(self.files[i], self.direction)

    @staticmethod
    def pair_halves(path: Path, direction: str) -> tuple[Image.Image, Image.Image]:
        """``(condition, photo)`` halves of one pair image, per ``direction`` (AtoB: left, right)."""
        img = load_image(path, "RGB")
        width, height = img.size
        _check_width(path, width, height)
        left, right = img.crop((0, 0, width // 2, height)), img.crop((width // 2, 0, width, height))
        return (left, right) if check_direction(direction) == "AtoB" else (right, left)

    @staticmethod
    def condition_half(path: Path, direction: str) -> Image.Image:
        """The condition (label) half of one pair image (``attnflow translate --pairs``)."""
        return Pix2PixPairs.pair_halves(Path(path), direction)[0]

    def _read(self, i: int) -> tuple[Tensor, Tensor, np.ndarray | None]:
        cond, photo = self.halves(i)
        labels, dist = color_label_tensor(cond, self.size, self.label_mode, self.classes or 0)
        return to_tensor(np.asarray(resize_image(photo, self.size, "bicubic"))), labels, dist

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        photo, labels, _ = self._read(i)
        return _flip_pair(photo, labels, self.flip)
