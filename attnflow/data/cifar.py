"""CIFAR-10 from the official "python version" pickles (``cifar-10-python.tar.gz``, extracted).

``root`` is the ``cifar-10-batches-py`` folder or its parent. Train = ``data_batch_1`` ..
``data_batch_5`` (50,000 images), test = ``test_batch`` (10,000). Each batch is a pickled dict with
``b"data"`` (uint8 ``N x 3072``: 1024 red, 1024 green, 1024 blue values, row-major 32x32) and
``b"labels"`` (N ints 0..9).

Security: pickles can run arbitrary code when loaded, so the batches are read with a restricted
unpickler (:class:`SafeCifarUnpickler`) that resolves only the globals a numpy-array pickle needs:
``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` (``ndarray``
reconstruction), ``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.numeric._frombuffer``
(protocol-5 array pickles) and ``_codecs.encode`` (how Python 3 writes ``bytes`` in protocol 2).
None of these runs code from the file. Any other global raises :class:`DataError`.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .common import DataError, RandomHFlip, RandomShift, check_split

__all__ = ["CIFAR10", "SafeCifarUnpickler", "load_cifar_batch", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)


def _numpy_core(submodule: str):
    """``numpy._core.<submodule>`` (numpy >= 2) or ``numpy.core.<submodule>`` (numpy 1.x)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{submodule}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeCifarUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays (see the module docstring); ``path`` is for errors."""

    def __init__(self, file, path: str | os.PathLike = "<stream>", **kwargs):
        kwargs.setdefault("encoding", "bytes")
        super().__init__(file, **kwargs)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError as err:
            raise DataError(
                f"CIFAR-10 batch {self._path}: refusing to unpickle global {module}.{name}; a "
                f"CIFAR-10 python batch only contains numpy arrays, lists and bytes"
            ) from err

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"CIFAR-10 batch {self._path}: unexpected persistent id in pickle")


def load_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from one CIFAR-10 python batch file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path}: not found (expected a pickled dict from cifar-10-batches-py)")
    raw = path.read_bytes()
    try:
        obj = SafeCifarUnpickler(io.BytesIO(raw), path=path, encoding="bytes").load()
    except DataError:
        raise
    except Exception as err:  # truncated / garbage pickles raise many different types
        raise DataError(
            f"CIFAR-10 batch {path}: not a readable pickle ({type(err).__name__}: {err}); expected "
            f"the python version of CIFAR-10 (cifar-10-python.tar.gz)"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 batch {path}: expected a pickled dict, got {type(obj).__name__}")

    def get(key: str) -> Any:
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise DataError(
            f"CIFAR-10 batch {path}: missing key b{key!r}; expected keys b'data' and b'labels', "
            f"found {sorted(map(repr, obj.keys()))}"
        )

    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR-10 batch {path}: b'data' must be a uint8 N x 3072 array, got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"CIFAR-10 batch {path}: b'labels' is not a list of integers") from err
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"CIFAR-10 batch {path}: {labels.size} labels for {data.shape[0]} images "
            "(b'labels' must have one entry per row of b'data')"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 batch {path}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _find_root(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "test_batch").is_file() or (cand / "data_batch_1").is_file():
            return cand
    raise DataError(
        f"CIFAR-10 root {root}: no data_batch_1..5 / test_batch found there or in "
        f"{root / 'cifar-10-batches-py'} (expected the extracted cifar-10-python.tar.gz)"
    )


class CIFAR10(Dataset):
    """CIFAR-10 from the python pickles: items ``uint8 [3, 32, 32]``; ``.labels`` int64 tensor.

    ``shift`` (pixels) adds mARFlow's random shift (:class:`~attnflow.data.common.RandomShift`),
    then ``flip`` a random left-right flip, in the reference's order (training only; off by default).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", flip: bool = False, shift: int = 0):
        check_split(split, ("train", "test"), "CIFAR-10")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"CIFAR-10 root {root}: not a directory")
        folder = _find_root(root)
        images, labels = [], []
        for name in _TRAIN_FILES if split == "train" else _TEST_FILES:
            x, y = load_cifar_batch(folder / name)
            images.append(x)
            labels.append(y)
        self.root = folder
        self.split = split
        self.images = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))
        self.labels = torch.from_numpy(np.concatenate(labels))
        self.flip = RandomHFlip() if flip else None
        self.shift = RandomShift(int(shift)) if shift else None
        self.channels = 3
        self.image_size = (32, 32)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        x = self.images[i]
        if self.shift is not None:
            x = self.shift(x)
        if self.flip is not None:
            x = self.flip(x)
        return x
