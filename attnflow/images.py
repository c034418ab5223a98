"""Pictures: image files and sample grids (written with Pillow), and the colours of label maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "save_grid",
    "save_image",
    "to_uint8_hwc",
    "load_image",
    "label_colors",
    "CITYSCAPES_COLORS",
    "SYNTHETIC_PALETTE",
]


def to_uint8_hwc(img: Tensor) -> np.ndarray:
    """``[C, H, W]`` (uint8, or float already in 0..255) -> ``H x W x C`` uint8 array."""
    if img.dim() != 3:
        raise ValueError(f"expected an image [C, H, W], got shape {tuple(img.shape)}")
    if img.dtype != torch.uint8:
        img = img.detach().float().round().clamp(0, 255).to(torch.uint8)
    arr = img.cpu().permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def save_image(img: Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_hwc(img)).save(path)
    return path


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Tile ``[N, C, H, W]`` images (uint8 or 0..255 floats) into one PNG, ``nrow`` per row."""
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        tile = to_uint8_hwc(images[i])
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[y : y + h, x : x + w] = tile.reshape(h, w, c)
    return save_image(torch.from_numpy(grid).permute(2, 0, 1), path)


def load_image(path: str | Path, channels: int = 3) -> Tensor:
    """An image file as uint8 ``[C, H, W]`` (RGB or grey); a clear error if it cannot be read."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)


#: Cityscapes label id (0..33) -> colour, from cityscapesScripts ``labels.py`` (for pictures only).
CITYSCAPES_COLORS = np.array(
    [
        (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
        (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
        (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
        (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
        (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)



#: Synthetic-pairs label colours (class 0 = background first); Cityscapes-like, all distinct.
SYNTHETIC_PALETTE = np.array(
    [
        (0, 0, 0), (128, 64, 128), (70, 70, 70), (107, 142, 35), (70, 130, 180),
        (220, 20, 60), (0, 0, 142), (250, 170, 30), (244, 35, 232), (152, 251, 152),
        (190, 153, 153), (153, 153, 153), (220, 220, 0), (255, 0, 0), (0, 60, 100),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)


def label_colors(labels: Tensor, label_mode: str) -> Tensor:
    """Label maps as uint8 RGB ``[B, 3, H, W]``: colour maps as they are; one-hot maps through the
    Cityscapes palette (34 classes) or the synthetic-pairs palette (argmax; no class -> black)."""
    if label_mode == "color":
        return labels.round().clamp(0, 255).to(torch.uint8)
    k = labels.shape[1]
    palette = CITYSCAPES_COLORS if k == len(CITYSCAPES_COLORS) else SYNTHETIC_PALETTE
    if k > len(palette):  # many classes: a deterministic spread of colours
        rng = np.random.default_rng(0)
        palette = np.concatenate([palette, rng.integers(0, 256, (k - len(palette), 3), dtype=np.uint8)])
    table = torch.cat([torch.from_numpy(palette[:k].copy()), torch.zeros(1, 3, dtype=torch.uint8)])
    ids = torch.where(labels.amax(1) > 0.5, labels.argmax(1), torch.full_like(labels.argmax(1), k))
    return table[ids].permute(0, 3, 1, 2).contiguous()
