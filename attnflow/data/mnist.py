"""MNIST (and MNIST-format, e.g. Fashion-MNIST) from the original idx files, plain or gzipped.

The idx format: a 4-byte big-endian magic ``0x00 0x00 TYPE NDIM`` (``2051 = 0x00000803``: uint8,
3 dims, images; ``2049 = 0x00000801``: uint8, 1 dim, labels), then ``NDIM`` big-endian uint32
sizes, then the data, row-major and big-endian. :func:`read_idx` checks the magic, the sizes and
that the file length is exactly header + data.

Files looked for in ``root`` (also ``root/raw`` and ``root/MNIST/raw``, torchvision's layout):
``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte`` (also spelled ``train-images.idx3-ubyte``),
each optionally ``.gz``; labels likewise (``*-labels-idx1-ubyte``), optional.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .common import DataError, GreyDigits, check_split

__all__ = ["read_idx", "MNISTIdx", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "find_idx_file"]

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# idx type code -> numpy big-endian dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_EXPECT = {"images": IDX_IMAGES_MAGIC, "labels": IDX_LABELS_MAGIC}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head == b"\x1f\x8b":  # gzip, whatever the name says
            try:
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"MNIST idx file {path}: corrupt or truncated gzip data ({err})") from err
        if path.suffix == ".gz":
            raise DataError(f"MNIST idx file {path}: named .gz but is not gzip data")
        return f.read()


def read_idx(path: str | os.PathLike, expect: str | None = None) -> np.ndarray:
    """Read an idx file (gzipped or not) into a numpy array (native byte order).

    Args:
        path: the file.
        expect: ``"images"`` (magic 2051, uint8 N x H x W), ``"labels"`` (magic 2049, uint8 N) or
            None (any valid idx file).

    Raises:
        DataError: missing file, bad magic, unknown type code, or length not matching the header.
    """
    path = Path(path)
    if expect is not None and expect not in _EXPECT:
        raise ValueError(f"read_idx: expect must be 'images', 'labels' or None, got {expect!r}")
    if not path.is_file():
        raise DataError(f"MNIST idx file {path}: not found")
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"MNIST idx file {path}: {len(data)} bytes, too short for an idx header")
    magic = int.from_bytes(data[:4], "big")
    if expect is not None and magic != _EXPECT[expect]:
        raise DataError(
            f"MNIST idx file {path}: expected magic {_EXPECT[expect]} ({expect}), got {magic}"
        )
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(
            f"MNIST idx file {path}: not an idx file (magic {magic}; expected 0x0000TTDD with "
            f"type TT in {{08,09,0B,0C,0D,0E}} and DD >= 1 dims, e.g. 2051 for images, 2049 for labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"MNIST idx file {path}: truncated header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected_len = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected_len:
        raise DataError(
            f"MNIST idx file {path}: header says dims {dims} ({expected_len} bytes in all) but the "
            f"file has {len(data)} bytes ({'truncated' if len(data) < expected_len else 'trailing data'})"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


_SPELLINGS = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def find_idx_file(root: str | os.PathLike, split: str, kind: str) -> Path | None:
    """The first existing idx file for ``split``/``kind`` under ``root`` (see module doc), or None."""
    root = Path(root)
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in _SPELLINGS[(split, kind)]:
            for suffix in ("", ".gz"):
                p = folder / (name + suffix)
                if p.is_file():
                    return p
    return None


class MNISTIdx(GreyDigits):
    """MNIST from idx files in ``root``: items ``uint8 [1 or 3, 28 or pad_to, 28 or pad_to]``.

    ``.labels`` is an int64 tensor when the matching label file exists, else None.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        pad_to: int | None = None,
        grey_to_rgb: bool = False,
        flip: bool = False,
    ):
        check_split(split, ("train", "test"), "MNIST idx")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"MNIST root {root}: not a directory")
        path = find_idx_file(root, split, "images")
        if path is None:
            names = " or ".join(f"{n}[.gz]" for n in _SPELLINGS[(split, "images")])
            raise DataError(f"MNIST root {root}: no {split} image file ({names}) found")
        images = read_idx(path, "images")
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"MNIST idx file {path}: expected uint8 N x H x W images, got {images.dtype} {images.shape}")
        self.path = path
        self.labels = None
        label_path = find_idx_file(root, split, "labels")
        if label_path is not None:
            labels = read_idx(label_path, "labels")
            if labels.shape != (images.shape[0],):
                raise DataError(
                    f"MNIST idx file {label_path}: {labels.shape[0]} labels for {images.shape[0]} "
                    f"images in {path}"
                )
            self.labels = torch.from_numpy(labels.astype(np.int64))
        self.split = split
        self._setup_digits(torch.from_numpy(images.copy()).unsqueeze(1), pad_to, grey_to_rgb, flip)
