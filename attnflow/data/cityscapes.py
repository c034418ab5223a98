"""Label-to-photo pairs: Cityscapes, any paired folders, and the label maps' colours and ids.

**Cityscapes cannot be redistributed**: it must be downloaded by each user after registering at
https://www.cityscapes-dataset.com (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``).
Nothing here downloads it; :mod:`attnflow.data.synthetic` generates a stand-in for tests and
demos.

:class:`CityscapesPairs` reads the official layout::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png      (photo)
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_color.png          (label_mode="color")
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png       (label_mode="onehot")

Photos are resized with Pillow bicubic (antialiased) to ``size x size`` (Full-Glow uses 256x256,
which changes the 2:1 aspect ratio), labels with nearest neighbour. Items are
``(photo uint8 [3, S, S], labels)`` with labels ``uint8 [3, S, S]`` (the colour image, alpha
dropped) or, for ``"onehot"``, ``float32 [34, S, S]``: label ids 0..33 one-hot; **any other id
(e.g. 255, or -1 "license plate" stored as 255) gives an all-zero vector**, so "no label" stays
distinct from id 0 ("unlabeled"). A photo without its label file, or a label file without its
photo, is a :class:`DataError` naming the file.

:class:`PairedFolders` reads ``root/A/*`` (label images) and ``root/B/*`` (photos) paired by file
stem (the path relative to ``A`` / ``B`` without extension), e.g. ``A/0001.png`` <-> ``B/0001.jpg``.
Its ``label_mode="onehot"`` (and that of :class:`attnflow.data.Pix2PixPairs`) turns *colour* label
images into class ids by :func:`snap_to_palette`: each pixel becomes the id of the nearest colour of
:func:`label_palette` (the Cityscapes colours for 34 classes, the synthetic-pairs colours for 2..16),
so JPEG'd labels still give ids; the share of pixels that were not exactly a palette colour is
reported once per dataset (:func:`report_snapping`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..images import CITYSCAPES_COLORS, SYNTHETIC_PALETTE
from .common import (
    IMAGE_EXTENSIONS,
    DataError,
    as_size,
    load_image,
    resize_image,
    to_tensor,
)

__all__ = [
    "CityscapesPairs",
    "PairedFolders",
    "labels_to_onehot",
    "read_label_map",
    "label_palette",
    "snap_to_palette",
    "color_label_tensor",
    "report_snapping",
    "CITYSCAPES_NUM_IDS",
    "LABEL_MODES",
]

CITYSCAPES_NUM_IDS = 34
CITYSCAPES_SPLITS = ("train", "val", "test")
_LABEL_SUFFIX = {"color": "_gtFine_color.png", "onehot": "_gtFine_labelIds.png"}
_PHOTO_SUFFIX = "_leftImg8bit.png"
LABEL_MODES = ("color", "onehot")
_ID_MODES = ("L", "I", "I;16")  # single-channel label images: the pixel values are class ids
#: label images sampled at construction to measure how many pixels palette snapping changes
SNAP_SAMPLE = 4
#: RGB distance beyond which a snapped pixel is counted as far from every palette colour
FAR_FROM_PALETTE = 30.0


def labels_to_onehot(ids: Tensor, num_classes: int) -> Tensor:
    """Integer label map ``[H, W]`` -> ``float32 [num_classes, H, W]``; ids outside
    ``0..num_classes-1`` give all-zero vectors."""
    ids = ids.long()
    valid = (ids >= 0) & (ids < num_classes)
    out = torch.zeros(num_classes, *ids.shape, dtype=torch.float32)
    out.scatter_(0, ids.clamp(0, num_classes - 1).unsqueeze(0), valid.unsqueeze(0).float())
    return out


def load_label_ids(path: Path, hint: str = "") -> Image.Image:
    """A single-channel label-id image (mode L/P/I); a clear DataError otherwise (``hint`` is
    added to the message, e.g. why this file must hold label ids)."""
    if not path.is_file():
        raise DataError(f"label file {path}: not found")
    try:
        with Image.open(path) as img:
            img.load()
            img = img.copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"label file {path}: cannot be read as an image ({err})") from err
    if img.mode not in ("L", "P", "I", "I;16"):
        raise DataError(
            f"label file {path}: {hint}expected a single-channel label-id PNG (mode L), got mode {img.mode}"
        )
    return img


def read_label_map(
    path: Path, size: tuple[int, int], label_mode: str, classes: int = CITYSCAPES_NUM_IDS, hint: str = ""
) -> Tensor:
    """One label file resized (nearest) to ``size``: ``label_mode="color"``, an RGB image as uint8
    ``[3, H, W]``; ``"onehot"``, a label-id PNG as float32 ``[classes, H, W]`` (ids outside
    ``0..classes-1`` give all-zero vectors). ``hint`` is added to the message of a wrong file."""
    if label_mode == "color":
        return to_tensor(np.asarray(resize_image(load_image(path, "RGB"), size, "nearest")))
    ids = np.asarray(resize_image(load_label_ids(Path(path), hint), size, "nearest")).astype(np.int64)
    return labels_to_onehot(torch.from_numpy(ids), classes)


def _flip_pair(a: Tensor, b: Tensor, flip: bool) -> tuple[Tensor, Tensor]:
    if flip and torch.rand(()) < 0.5:
        return a.flip(-1).contiguous(), b.flip(-1).contiguous()
    return a, b


# ------------------------------------------------------------------------ colour labels -> ids
def check_label_mode(label_mode: str, what: str) -> str:
    """``label_mode`` if it is ``color`` or ``onehot``; a ValueError naming ``what`` otherwise."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"{what}: label_mode must be 'color' or 'onehot', got {label_mode!r}")
    return label_mode


def check_classes_count(classes: int, what: str) -> int:
    """``classes`` as an int >= 2; a ValueError naming ``what`` otherwise."""
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or int(classes) < 2:
        raise ValueError(f"{what}: classes must be an integer >= 2 (34 for Cityscapes ids), got {classes!r}")
    return int(classes)


def label_palette(classes: int) -> np.ndarray:
    """The colour of each class id, ``uint8 [classes, 3]``, as :func:`attnflow.images.label_colors`
    draws one-hot maps: :data:`CITYSCAPES_COLORS` for 34 classes (Cityscapes label ids 0..33),
    ``SYNTHETIC_PALETTE[:classes]`` for 2..16 classes (:mod:`attnflow.data.synthetic`)."""
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if int(classes) == CITYSCAPES_NUM_IDS:
            return CITYSCAPES_COLORS
        if 2 <= int(classes) <= len(SYNTHETIC_PALETTE):
            return SYNTHETIC_PALETTE[: int(classes)]
    raise ValueError(
        f"classes={classes!r}: colour label images can be turned into ids only with a known palette: "
        f"classes=34 (the Cityscapes colours) or 2..{len(SYNTHETIC_PALETTE)} (the synthetic-pairs colours)"
    )


def snap_to_palette(rgb: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ids of a colour label image: each pixel of ``rgb`` (``uint8 H x W x 3``) gets the id of
    the nearest colour of ``palette`` (``[K, 3]``, Euclidean RGB distance). On a tie, and for a
    colour several ids share (Cityscapes ids 0..4 are all black, 17 and 18 the same grey), the
    lowest id wins. Returns ``(ids int64 [H, W], distance float32 [H, W])``: distance 0 where the
    pixel was exactly a palette colour, so ``(distance > 0).mean()`` is the share snapped."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"snap_to_palette: expected an H x W x 3 image, got shape {rgb.shape}")
    flat = rgb.reshape(-1, 3).astype(np.int64)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    colours, inverse = np.unique(codes, return_inverse=True)  # a JPEG has far fewer colours than pixels
    unique = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float64)
    pal = np.asarray(palette, np.float64)
    # |u - p|^2 as one matrix product; every term is an integer below 2^20, so float64 is exact
    d2 = (unique * unique).sum(1)[:, None] - 2.0 * unique @ pal.T + (pal * pal).sum(1)[None, :]
    best = d2.argmin(1)  # argmin takes the first minimum: the lowest id
    dist = np.sqrt(d2[np.arange(len(colours)), best]).astype(np.float32)
    inverse = inverse.reshape(-1)
    return best[inverse].reshape(rgb.shape[:2]), dist[inverse].reshape(rgb.shape[:2])


def color_label_tensor(
    img: Image.Image, size: tuple[int, int], label_mode: str, classes: int
) -> tuple[Tensor, np.ndarray | None]:
    """A colour label image resized (nearest neighbour, so only its own colours survive) to ``size``:
    ``label_mode="color"``, ``uint8 [3, H, W]``; ``"onehot"``, snapped to :func:`label_palette`
    and one-hot, ``float32 [classes, H, W]``. Also returns the snapping distances (``None`` for
    ``color``) for :func:`report_snapping`."""
    arr = np.asarray(resize_image(img if img.mode == "RGB" else img.convert("RGB"), size, "nearest"))
    if label_mode == "color":
        return to_tensor(arr), None
    ids, dist = snap_to_palette(arr, label_palette(classes))
    return labels_to_onehot(torch.from_numpy(ids), classes), dist


def report_snapping(what: str, distances: Sequence[np.ndarray | None], classes: int) -> float | None:
    """The share of label pixels that palette snapping changed, over ``distances`` (from
    :func:`color_label_tensor`, ``None`` for label-id images); a warning when it is not 0. Datasets
    call it once, on their first few label images, so it is said once per dataset, not per item.
    ``None`` when no colour label image was among them."""
    dists = [d for d in distances if d is not None]
    if not dists:
        return None
    total = sum(d.size for d in dists)
    share = sum(int((d > 0).sum()) for d in dists) / total
    if share > 0:
        far = sum(int((d > FAR_FROM_PALETTE).sum()) for d in dists) / total
        palette = "Cityscapes" if classes == CITYSCAPES_NUM_IDS else f"{classes}-colour synthetic-pairs"
        hint = (
            f"; so many far pixels suggest another palette (classes={classes} means the {palette} colours)"
            if far > 0.25 else " (lossy JPEG labels do this)"
        )
        warnings.warn(
            f"{what}: {share:.1%} of the label pixels of the first {len(dists)} label image(s) are not "
            f"exactly a colour of the {palette} palette and were snapped to the nearest one "
            f"({far:.1%} are more than {FAR_FROM_PALETTE:g} RGB units from every colour){hint}",
            UserWarning,
            stacklevel=3,
        )
    return share


def set_pair_attributes(dataset, label_mode: str, classes: int, what: str, snap_distances) -> None:
    """The attributes every label -> photo dataset of colour label images has (``channels``,
    ``image_size``, ``classes``, ``cond_channels``, ``cond_size``, ``snapped_share``); for one-hot
    labels, ``snap_distances()`` (the snapping distances of the first few label maps) gives the
    share of snapped pixels, reported once."""
    dataset.classes = check_classes_count(classes, what) if label_mode == "onehot" else None
    dataset.channels = 3
    dataset.image_size = dataset.size
    dataset.cond_channels = 3 if label_mode == "color" else dataset.classes
    dataset.cond_size = dataset.size
    dataset.snapped_share = None
    if label_mode == "onehot":
        dataset.snapped_share = report_snapping(what, snap_distances(), dataset.classes)


class CityscapesPairs(Dataset):
    """Cityscapes ``(photo, labels)`` pairs from the official folders (see module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        size: int | tuple[int, int] = 256,
        label_mode: str = "color",
        flip: bool = False,
    ):
        if split not in CITYSCAPES_SPLITS:
            raise ValueError(f"Cityscapes: unknown split {split!r}; valid splits: {', '.join(CITYSCAPES_SPLITS)}")
        if label_mode not in _LABEL_SUFFIX:
            raise ValueError(f"Cityscapes: label_mode must be 'color' or 'onehot', got {label_mode!r}")
        self.root = Path(root)
        self.size = as_size(size, "size")
        photo_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        for d, what in ((photo_dir, "photos (leftImg8bit)"), (label_dir, "labels (gtFine)")):
            if not d.is_dir():
                raise DataError(f"Cityscapes folder {d}: not found (expected the {what} of split {split!r})")
        suffix = _LABEL_SUFFIX[label_mode]
        photos = {
            p.relative_to(photo_dir).as_posix()[: -len(_PHOTO_SUFFIX)]: p
            for p in photo_dir.glob(f"*/*{_PHOTO_SUFFIX}")
        }
        labels = {
            p.relative_to(label_dir).as_posix()[: -len(suffix)]: p
            for p in label_dir.glob(f"*/*{suffix}")
        }
        if not photos:
            raise DataError(f"Cityscapes folder {photo_dir}: no */*{_PHOTO_SUFFIX} photos found")
        for key in sorted(photos):
            if key not in labels:
                raise DataError(
                    f"Cityscapes photo {photos[key]}: label file {label_dir / (key + suffix)} not found"
                )
        for key in sorted(labels):
            if key not in photos:
                raise DataError(
                    f"Cityscapes label file {labels[key]}: photo {photo_dir / (key + _PHOTO_SUFFIX)} not found"
                )
        self.pairs = [(photos[k], labels[k]) for k in sorted(photos)]
        self.split = split
        self.label_mode = label_mode
        self.flip = bool(flip)
        self.channels = 3
        self.image_size = self.size
        self.cond_channels = 3 if label_mode == "color" else CITYSCAPES_NUM_IDS
        self.cond_size = self.size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        photo_path, label_path = self.pairs[i]
        photo = to_tensor(np.asarray(resize_image(load_image(photo_path, "RGB"), self.size, "bicubic")))
        return _flip_pair(photo, read_label_map(label_path, self.size, self.label_mode), self.flip)


def _stem_index(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            key = p.relative_to(folder).with_suffix("").as_posix()
            if key in out:
                raise DataError(f"paired folder {folder}: two files with the stem {key!r}: {out[key]} and {p}")
            out[key] = p
    return out


class PairedFolders(Dataset):
    """``(photo uint8 [3, S, S], label)`` from ``root/B`` photos and ``root/A`` label images paired
    by file stem. Photos: Pillow bicubic; labels: nearest neighbour.

    ``label_mode="color"``: the label image as RGB, ``uint8 [3, S, S]``. ``"onehot"``:
    ``float32 [classes, S, S]``; colour label images are snapped to :func:`label_palette`
    (``classes=34``: the Cityscapes colours, as the Cityscapes presets use; 2..16: the
    synthetic-pairs colours), single-channel ones (mode L/I) are read as label ids, ids outside
    ``0..classes-1`` giving all-zero vectors. ``.snapped_share``: the share of label pixels of the
    first few colour label images that were not exactly a palette colour (``None`` for ``color``),
    also said in a warning when not 0.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | tuple[int, int] = 256,
        label_mode: str = "color",
        classes: int = CITYSCAPES_NUM_IDS,
        flip: bool = False,
    ):
        self.root = Path(root)
        self.size = as_size(size, "size")
        self.label_mode = check_label_mode(label_mode, f"paired folders {self.root}")
        a_dir, b_dir = self.root / "A", self.root / "B"
        for d, what in ((a_dir, "label images"), (b_dir, "photos")):
            if not d.is_dir():
                raise DataError(f"paired folder {d}: not found (expected {what} in root/A and root/B)")
        labels, photos = _stem_index(a_dir), _stem_index(b_dir)
        if not photos and not labels:
            raise DataError(f"paired folders {a_dir} and {b_dir}: no images found")
        for key in sorted(photos):
            if key not in labels:
                raise DataError(f"paired photo {photos[key]}: no label image {a_dir / key}.* found")
        for key in sorted(labels):
            if key not in photos:
                raise DataError(f"paired label image {labels[key]}: no photo {b_dir / key}.* found")
        self.pairs = [(photos[k], labels[k]) for k in sorted(photos)]
        self.flip = bool(flip)
        set_pair_attributes(self, label_mode, classes, f"paired folders {self.root}",
                            lambda: [self._labels(label)[1] for _, label in self.pairs[:SNAP_SAMPLE]])

    def _labels(self, path: Path) -> tuple[Tensor, np.ndarray | None]:
        if self.label_mode == "onehot" and _stored_mode(path) in _ID_MODES:
            return read_label_map(path, self.size, "onehot", self.classes), None
        return color_label_tensor(load_image(path, "RGB"), self.size, self.label_mode, self.classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        photo_path, label_path = self.pairs[i]
        photo = to_tensor(np.asarray(resize_image(load_image(photo_path, "RGB"), self.size, "bicubic")))
        return _flip_pair(photo, self._labels(label_path)[0], self.flip)


def _stored_mode(path: Path) -> str | None:
    """The Pillow mode an image file is stored in (header only); ``None`` when it cannot be opened
    (reading it then raises the DataError that names the file)."""
    try:
        with Image.open(path) as img:
            return img.mode
    except (OSError, ValueError, SyntaxError):
        return None
