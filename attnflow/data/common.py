"""Shared pieces of the data package: the error type, image I/O and small transforms.

Conventions (all loaders follow them):

* images are ``torch.uint8`` tensors ``[C, H, W]`` holding integer pixel values 0..255; the model
  dequantises, nothing here scales to [0, 1];
* conditional datasets return ``(target_uint8, condition)``;
* every dataset has ``.channels`` and ``.image_size == (H, W)``;
* a missing or corrupt file raises :class:`DataError` naming the path and the expected format.

Transforms are small callables on ``uint8 [C, H, W]`` tensors. Random ones (:class:`RandomHFlip`)
draw from torch's global RNG, which :class:`torch.utils.data.DataLoader` seeds per worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "GreyDigits",
    "SRPairs",
    "DataError",
    "IMAGE_EXTENSIONS",
    "Compose",
    "PadTo",
    "GreyToRGB",
    "RandomHFlip",
    "RandomShift",
    "CenterCrop",
    "Resize",
    "as_size",
    "to_uint8",
    "to_tensor",
    "load_image",
    "list_images",
    "center_crop_square",
    "resize_image",
    "resize_cover_crop",
    "check_sr_sizes",
    "make_sr_pair",
    "check_split",
    "SPLIT_NAMES",
    "split_folder",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """A dataset file is missing, unreadable or not in the expected format."""


def check_split(split: str, valid: Sequence[str], dataset: str) -> str:
    """Return ``split`` if it is one of ``valid``; otherwise a ValueError listing them."""
    if split not in valid:
        raise ValueError(f"{dataset}: unknown split {split!r}; valid splits: {', '.join(valid)}")
    return split


#: the split folder names a folder-based dataset may have under its root
SPLIT_NAMES = ("train", "val", "test")


def split_folder(root: str | os.PathLike, split: str, what: str, marker: str | None = None) -> tuple[Path, bool]:
    """``(folder, whole_root)``: the folder that holds ``split`` of a folder-based dataset.

    * ``root/split`` when it is a folder (and holds ``marker``, e.g. ``A`` for paired folders);
    * ``root`` itself when ``root`` has no split folder at all (none of :data:`SPLIT_NAMES`):
      every split is then the same images, said with a warning and ``whole_root=True``, so a result
      can say so;
    * otherwise a :class:`DataError` (a typo such as ``tset``, or a ``test`` split asked of a root
      that has only ``train/``): training images never leak into another split.
    """
    import warnings

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} {root}: not a directory")
    sub = root / split
    if sub.is_dir() and (marker is None or (sub / marker).is_dir()):
        return sub, False
    present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if present or split not in SPLIT_NAMES:
        has = f"its split folders are {', '.join(present)}" if present else "it has no split folder"
        hint = ("use one of those (--split to evaluate, --set data.test_split=... to train)" if present
                else f"use one of {', '.join(SPLIT_NAMES)}")
        raise DataError(f"{what} {root}: no {split!r} split ({root / split} is not a folder; {has}); {hint}")
    warnings.warn(
        f"{what} {root} has no train/val/test folders: the {split!r} split is every image of {root}, "
        f"the same images for every split (make {root}/train and {root}/test to hold images out)",
        UserWarning,
        stacklevel=3,
    )
    return root, True


def as_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``16 -> (16, 16)``; ``(h, w) -> (h, w)``; positive integers only."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(v) for v in size)
        if any(isinstance(v, bool) or int(v) != v for v in size):
            raise ValueError(f"{name} must be an int or a pair of ints, got {size!r}")
    else:
        raise ValueError(f"{name} must be an int or a pair of ints (H, W), got {size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def to_uint8(x: Tensor) -> Tensor:
    """Round (half away from zero, like MATLAB's ``uint8()`` for non-negative values) and clip."""
    return x.add(0.5).floor_().clamp_(0, 255).to(torch.uint8)


def to_tensor(array: np.ndarray) -> Tensor:
    """``uint8`` array ``HxW`` or ``HxWxC`` -> ``uint8`` tensor ``[C, H, W]`` (contiguous)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC array, got shape {array.shape}")
    out = np.ascontiguousarray(array.transpose(2, 0, 1))
    if not out.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        out = out.copy()
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------- I/O
def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Open and fully decode an image, converted to ``mode`` ("RGB" or "L").

    Raises :class:`DataError` naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path}: not found (expected a png/jpg/jpeg/bmp/webp/tif image)")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == mode:
                return img.copy()
            if img.mode.startswith("I"):  # 16/32-bit greyscale: scale to 8 bits (Pillow would clip)
                return _scaled_to_8_bits(img).convert(mode)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # palette with transparency: go through RGBA (alpha dropped)
            return img.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"image file {path}: cannot be read as an image "
            f"(expected png/jpg/jpeg/bmp/webp/tif): {err}"
        ) from err


def _scaled_to_8_bits(img: Image.Image) -> Image.Image:
    """A 16-bit (``I;16*``) or 32-bit integer (``I``) greyscale image as 8-bit ``L``: values are
    divided by 257 (65535 -> 255); an ``I`` image whose values all fit in 0..255 is kept as is."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode != "I" or arr.max(initial=0) > 255:
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.floor(arr + 0.5), 0, 255).astype(np.uint8), "L")


def list_images(root: str | os.PathLike, what: str = "image folder") -> list[Path]:
    """All image files under ``root`` (recursive, sorted by relative path).

    Raises :class:`DataError` when ``root`` is not a directory or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} {root}: not a directory")
    files = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(
            f"{what} {root}: no images found (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)} files)"
        )
    return files


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def resize_image(img: Image.Image, size: tuple[int, int], resample: str = "bicubic") -> Image.Image:
    """Pillow resize to ``size = (H, W)`` (Pillow antialiases when it reduces)."""
    h, w = size
    if img.size == (w, h):
        return img.copy()
    try:
        method = _RESAMPLE[resample]
    except KeyError as err:
        raise ValueError(f"unknown resample {resample!r}; valid: {sorted(_RESAMPLE)}") from err
    return img.resize((w, h), method)


def center_crop_square(img: Image.Image) -> Image.Image:
    """The largest centred square of a Pillow image."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def resize_cover_crop(img: Image.Image, size: tuple[int, int], resample: str) -> Image.Image:
    """Resize so the image covers ``size`` (aspect kept), then centre-crop to it."""
    th, tw = size
    w, h = img.size
    if (w, h) != (tw, th):
        ratio = max(tw / w, th / h)
        nw, nh = max(tw, round(w * ratio)), max(th, round(h * ratio))
        img = resize_image(img, (nh, nw), resample)
        w, h = img.size
    left, top = (w - tw) // 2, (h - th) // 2
    return img.crop((left, top, left + tw, top + th))


# -------------------------------------------------------------------------------------- transforms
class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Iterable[Callable[[Tensor], Tensor]]):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class PadTo:
    """Zero-pad ``[C, H, W]`` to ``size`` (int or (H, W)), centred (extra pixel at bottom/right)."""

    def __init__(self, size: int | Sequence[int]):
        self.size = as_size(size, "pad_to")

    def __call__(self, x: Tensor) -> Tensor:
        th, tw = self.size
        h, w = x.shape[-2:]
        if h > th or w > tw:
            raise ValueError(f"PadTo{self.size}: image {h}x{w} is larger than the target")
        top, left = (th - h) // 2, (tw - w) // 2
        return torch.nn.functional.pad(x, (left, tw - w - left, top, th - h - top))

    def __repr__(self) -> str:
        return f"PadTo({self.size})"


class GreyToRGB:
    """Repeat a single channel three times; 3-channel input passes through."""

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-3] == 1:
            return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
        if x.shape[-3] == 3:
            return x
        raise ValueError(f"GreyToRGB: expected 1 or 3 channels, got shape {tuple(x.shape)}")

    def __repr__(self) -> str:
        return "GreyToRGB()"


class RandomShift:
    """mARFlow's CIFAR-10 augmentation (``ShiftTransform(pixels)`` of visinf/mar-scf): pad the image
    by ``pixels`` on every side replicating the edge pixels, then crop the original size at an offset
    drawn from ``0 .. 2*pixels - 1`` along one axis (horizontal or vertical with probability 1/2), the
    other axis centred. The image thus moves by ``-pixels .. pixels - 1`` pixels along one axis (the
    reference's range is one short of symmetric; kept as it is). Torch's global RNG; ``uint8 [C, H, W]``.
    """

    def __init__(self, pixels: int):
        if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
            raise ValueError(f"RandomShift: pixels must be an int >= 0, got {pixels!r}")
        self.pixels = pixels

    def __call__(self, x: Tensor) -> Tensor:
        if self.pixels == 0:
            return x
        move = int(torch.randint(0, 2 * self.pixels, ())) - self.pixels
        dim = -1 if torch.rand(()) < 0.5 else -2  # the reference shifts the width or the height
        n = x.shape[dim]
        index = (torch.arange(n) + move).clamp_(0, n - 1)  # edge padding, then the crop
        return x.index_select(dim, index).contiguous()

    def __repr__(self) -> str:
        return f"RandomShift({self.pixels})"


class RandomHFlip:
    """Flip left-right with probability ``p`` (torch's global RNG)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x: Tensor) -> Tensor:
        if torch.rand(()) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class CenterCrop:
    """Crop the centre ``size`` (int or (H, W)) of ``[C, H, W]``."""

    def __init__(self, size: int | Sequence[int]):
        self.size = as_size(size, "crop size")

    def __call__(self, x: Tensor) -> Tensor:
        th, tw = self.size
        h, w = x.shape[-2:]
        if h < th or w < tw:
            raise ValueError(f"CenterCrop{self.size}: image {h}x{w} is smaller than the crop")
        top, left = (h - th) // 2, (w - tw) // 2
        return x[..., top : top + th, left : left + tw]

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class Resize:
    """Pillow resize of a ``uint8 [C, H, W]`` tensor (C = 1 or 3) to ``size`` (int or (H, W))."""

    def __init__(self, size: int | Sequence[int], resample: str = "bicubic"):
        self.size = as_size(size, "resize size")
        if resample not in _RESAMPLE:
            raise ValueError(f"unknown resample {resample!r}; valid: {sorted(_RESAMPLE)}")
        self.resample = resample

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"Resize: expected uint8 [1 or 3, H, W], got {x.dtype} {tuple(x.shape)}")
        arr = x.permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[:, :, 0] if x.shape[0] == 1 else arr)
        return to_tensor(np.asarray(resize_image(img, self.size, self.resample)))

    def __repr__(self) -> str:
        return f"Resize({self.size}, {self.resample!r})"


# ------------------------------------------------------------------------------ super-resolution
def make_sr_pair(
    img: Image.Image, hr_size: int, scale: int, flip: bool = False
) -> tuple[Tensor, Tensor]:
    """SRFlow-style pair from one image: centre square crop -> Pillow bicubic to ``hr_size`` ->
    optional left-right flip -> LR = MATLAB-bicubic ``imresize(HR, 1/scale)`` rounded to uint8.

    Returns ``(hr uint8 [3, hr, hr], lr uint8 [3, hr/scale, hr/scale])``. The LR image is always
    computed from the (flipped) HR image, so ``lr == to_uint8(imresize(hr.double(), 1/scale))``.
    """
    from ..evaluation.imresize import imresize

    if img.mode != "RGB":
        img = img.convert("RGB")
    img = resize_image(center_crop_square(img), (hr_size, hr_size), "bicubic")
    hr = to_tensor(np.asarray(img))
    if flip:
        hr = hr.flip(-1).contiguous()
    lr = to_uint8(imresize(hr.double(), 1.0 / scale))
    return hr, lr


def check_sr_sizes(hr_size: int, scale: int) -> tuple[int, int]:
    """Validate the SR geometry: ``hr_size`` divisible by ``scale``; returns them as ints."""
    if isinstance(scale, bool) or int(scale) != scale or int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(hr_size, bool) or int(hr_size) != hr_size or int(hr_size) < 1:
        raise ValueError(f"hr_size must be a positive integer, got {hr_size!r}")
    hr_size, scale = int(hr_size), int(scale)
    if hr_size % scale != 0:
        raise ValueError(
            f"hr_size={hr_size} is not divisible by scale={scale}; the low-resolution image "
            f"would not have an integer size (e.g. use hr_size={hr_size // scale * scale or scale})"
        )
    return hr_size, scale


class GreyDigits(Dataset):
    """Base of the MNIST datasets: ``uint8 [N, 1, H, W]`` images served with the paper's
    transforms (centred zero padding to ``pad_to``, grey -> 3 channels, random horizontal flip)."""

    def _setup_digits(
        self, images: Tensor, pad_to: int | None, grey_to_rgb: bool, flip: bool
    ) -> None:
        self.images = images
        h, w = images.shape[2], images.shape[3]
        self.pad = PadTo(pad_to) if pad_to is not None else None
        if self.pad is not None and (self.pad.size[0] < h or self.pad.size[1] < w):
            raise ValueError(f"pad_to={pad_to} is smaller than the {h}x{w} images")
        self.grey = GreyToRGB() if grey_to_rgb else None
        self.flip = RandomHFlip() if flip else None
        self.channels = 3 if grey_to_rgb else 1
        self.image_size = self.pad.size if self.pad is not None else (h, w)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        x = self.images[i]
        for transform in (self.pad, self.grey, self.flip):
            if transform is not None:
                x = transform(x)
        return x


class SRPairs(Dataset):
    """Base of the super-resolution datasets: image files served as ``(hr, lr)`` uint8 pairs
    (centre square crop, Pillow bicubic to ``hr_size``, LR by MATLAB bicubic; optional flip)."""

    def _setup_pairs(self, files: list, hr_size: int, scale: int, flip: bool) -> None:
        self.hr_size, self.scale = check_sr_sizes(hr_size, scale)
        self.files = files
        self.flip = bool(flip)
        self.channels = 3
        self.image_size = (self.hr_size, self.hr_size)
        self.lr_size = (self.hr_size // self.scale, self.hr_size // self.scale)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = load_image(self.files[i], "RGB")
        flip = self.flip and bool(torch.rand(()) < 0.5)
        return make_sr_pair(img, self.hr_size, self.scale, flip)
