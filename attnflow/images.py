"""Image files: grids of samples and single images, written with Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["save_grid", "save_image", "to_uint8_hwc", "load_image"]


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
