"""CelebA 8x face super-resolution pairs (SRFlow's setting) and SR pairs from any image folder.

Layout. ``root`` is the ``img_align_celeba`` folder (the 178x218 aligned JPEGs) or its parent. The
official split file ``list_eval_partition.txt`` (lines ``000001.jpg 0``; 0 = train, 1 = val,
2 = test) is looked for in the parent / ``root``, and in ``Eval/`` beside it (the Google-Drive
layout); Kaggle's ``list_eval_partition.csv`` (``image_id,partition``) is accepted too, as is
Kaggle's doubled ``img_align_celeba/img_align_celeba/`` folder.

Without a partition file the split is deterministic by sorted file name: with ``n`` images and
``k = ceil(n / 10)``, the **last k are ``test``, the k before them ``val``** and the rest ``train``.
(For the full 202,599 images that is 182,079 / 20,260 / 20,260 rather than the official
162,770 / 19,867 / 19,962; use the official file for comparable numbers.)

Pipeline (like SRFlow): the aligned 178x218 image is centre-cropped to its largest centred square
(178x178), resized to ``hr_size`` with Pillow bicubic (antialiased), optionally flipped left-right,
and the LR image is the MATLAB-compatible bicubic ``imresize(hr, 1/scale)`` rounded half-up and
clipped to uint8 (:func:`attnflow.data.common.make_sr_pair`). Items are
``(hr uint8 [3, hr, hr], lr uint8 [3, hr/scale, hr/scale])``; ``flip`` defaults to True for
``train`` only (a random flip of both images, drawn from torch's global RNG).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .common import DataError, SRPairs, check_sr_sizes, list_images

__all__ = ["CelebASR", "SRFolder", "read_celeba_partition", "CELEBA_SPLITS"]

CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}
_EXTS = (".jpg", ".jpeg", ".png")
_PARTITION_NAMES = ("list_eval_partition.txt", "list_eval_partition.csv")


def read_celeba_partition(path: str | os.PathLike) -> dict[str, int]:
    """``{file name: 0 | 1 | 2}`` from ``list_eval_partition.txt`` (or Kaggle's ``.csv``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CelebA partition file {path}: not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"CelebA partition file {path}: cannot be read as text ({err})") from err
    out: dict[str, int] = {}
    is_csv = path.suffix.lower() == ".csv"
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(",") if is_csv else line.split()
        if is_csv and lineno == 1 and fields[-1].strip().lower() == "partition":
            continue  # header
        if len(fields) != 2 or fields[1].strip() not in ("0", "1", "2"):
            raise DataError(
                f"CelebA partition file {path}, line {lineno}: expected '<name>.jpg 0|1|2' "
                f"(0 train, 1 val, 2 test), got {line[:80]!r}"
            )
        out[fields[0].strip()] = int(fields[1])
    if not out:
        raise DataError(f"CelebA partition file {path}: empty (expected lines '<name>.jpg 0|1|2')")
    return out


def _image_names(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(_EXTS))


def _locate(root: Path) -> tuple[Path, Path | None]:
    """``(image folder, partition file or None)`` for a CelebA root (see module docstring)."""
    if not root.is_dir():
        raise DataError(f"CelebA root {root}: not a directory")
    if (root / "img_align_celeba").is_dir():
        img_dir, meta_dirs = root / "img_align_celeba", [root, root / "Eval", root / "Anno"]
    else:
        img_dir, meta_dirs = root, [root, root.parent, root.parent / "Eval"]
    if not _image_names(img_dir) and (img_dir / "img_align_celeba").is_dir():
        img_dir = img_dir / "img_align_celeba"  # Kaggle's doubled folder
    partition = next(
        (d / n for d in meta_dirs for n in _PARTITION_NAMES if (d / n).is_file()), None
    )
    return img_dir, partition


class CelebASR(SRPairs):
    """CelebA HR/LR pairs: ``(hr uint8 [3, hr, hr], lr uint8 [3, hr/scale, hr/scale])``.

    Args:
        root: ``img_align_celeba`` or its parent (see the module docstring).
        split: ``"train"``, ``"val"`` (or ``"valid"``) or ``"test"``.
        hr_size: HR side (160 in the paper); must be divisible by ``scale``.
        scale: SR factor (8 in the paper).
        flip: random left-right flip of both images; default True for train only.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        hr_size: int = 160,
        scale: int = 8,
        flip: bool | None = None,
    ):
        split = _SPLIT_ALIASES.get(split, split)
        if split not in CELEBA_SPLITS:
            raise ValueError(f"CelebA: unknown split {split!r}; valid splits: train, val, test")
        self.hr_size, self.scale = check_sr_sizes(hr_size, scale)
        self.root = Path(root)
        img_dir, partition = _locate(self.root)
        names = _image_names(img_dir)
        if not names:
            raise DataError(
                f"CelebA image folder {img_dir}: no .jpg/.png images (expected the aligned "
                f"178x218 JPEGs of img_align_celeba)"
            )
        if partition is not None:
            parts = read_celeba_partition(partition)
            wanted = [n for n, p in sorted(parts.items()) if p == CELEBA_SPLITS[split]]
            present = set(names)
            missing = [n for n in wanted if n not in present]
            if missing:
                raise DataError(
                    f"CelebA image {img_dir / missing[0]}: listed in {partition} for split "
                    f"{split!r} but missing ({len(missing)} of {len(wanted)} missing)"
                )
            self.partition_file: Path | None = partition
        else:
            n = len(names)
            k = math.ceil(n / 10)
            bounds = {"train": (0, n - 2 * k), "val": (n - 2 * k, n - k), "test": (n - k, n)}
            lo, hi = bounds[split]
            wanted = names[max(lo, 0) : max(hi, 0)]
            self.partition_file = None
        if not wanted:
            raise DataError(
                f"CelebA root {self.root}: split {split!r} is empty ({len(names)} images in "
                f"{img_dir}; " + (f"partition file {partition})" if partition else
                                  "without a partition file the last 10% are test, the 10% before val)")
            )
        self.image_dir = img_dir
        self.split = split
        self._setup_pairs([img_dir / n for n in wanted], self.hr_size, self.scale,
                          (split == "train") if flip is None else bool(flip))


class SRFolder(SRPairs):
    """SR pairs from any folder of HR images (recursive): centre square crop, Pillow bicubic to
    ``hr_size``, LR by MATLAB bicubic. Items as :class:`CelebASR`."""

    def __init__(
        self,
        root: str | os.PathLike,
        hr_size: int = 160,
        scale: int = 8,
        flip: bool = False,
    ):
        self.root = Path(root)
        self._setup_pairs(list_images(self.root, "SR image folder"), hr_size, scale, flip)
