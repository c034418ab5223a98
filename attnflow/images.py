"""Pictures: image files and sample grids (written with Pillow), and the colours of label maps.

Grids are for looking at: :func:`save_grid` shows every cell at 64 pixels or more on its short side
(integer nearest-neighbour upscaling) and can title the panels of each cell. :func:`save_image`
writes one image at its native size: those files are data (samples, translations), not pictures.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "save_grid",
    "grid_size",
    "max_grid_count",
    "MAX_GRID_PIXELS",
    "MIN_CELL",
    "temperature_label",
    "save_image",
    "to_uint8_hwc",
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


#: the largest grid (in pixels) written: Pillow's ``MAX_IMAGE_PIXELS``, above which Pillow opens a
#: picture only with a DecompressionBombWarning (and refuses one twice as large)
MAX_GRID_PIXELS = 89_478_485
#: the short side a grid cell is shown at, at least (small images are upscaled, nearest neighbour)
MIN_CELL = 64


def _cell_factor(h: int, w: int, min_cell: int | None) -> int:
    """The integer factor that brings the short side of an ``h x w`` cell to ``min_cell`` or more."""
    return max(1, math.ceil(min_cell / min(h, w))) if min_cell else 1


def _header_height(header: Sequence[str] | None) -> int:
    """The height of the title strip: the default font's tallest glyphs and 2 pixels either side."""
    return _font().getbbox("Ag|")[3] + 4 if header else 0


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def grid_size(
    n: int, h: int, w: int, *, nrow: int | None = None, padding: int = 2, min_cell: int | None = MIN_CELL,
    header: Sequence[str] | None = None,
) -> tuple[int, int]:
    """``(height, width)`` in pixels of :func:`save_grid`'s picture of ``n`` images of ``h x w``."""
    f = _cell_factor(h, w, min_cell)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    return _header_height(header) + rows * (h * f + padding) + padding, nrow * (w * f + padding) + padding


def max_grid_count(h: int, w: int, pixels: int = MAX_GRID_PIXELS, **grid) -> int:
    """The largest ``n`` whose :func:`grid_size` (same options) holds at most ``pixels`` pixels
    (0 if not even one image fits); the grid's area grows with ``n``, so a bisection finds it."""
    lo, hi = 0, 1
    while math.prod(grid_size(hi, h, w, **grid)) <= pixels:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if math.prod(grid_size(mid, h, w, **grid)) <= pixels else (lo, mid)
    return lo


def save_grid(
    images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2, *,
    min_cell: int | None = MIN_CELL, header: Sequence[str] | None = None,
) -> Path:
    """Tile ``[N, C, H, W]`` images (uint8 or 0..255 floats) into one picture, ``nrow`` per row.

    Cells whose short side is under ``min_cell`` pixels are upscaled by an integer factor (nearest
    neighbour, so pixels stay exact) until it is not: a grid is for looking at, and 28-pixel digits
    are too small to see (``min_cell=0`` keeps the native size). ``header``: titles of the panels
    side by side in each cell (e.g. ``("label", "sample")``; the cell width must split evenly),
    written in a strip above every grid column with Pillow's default font.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if header and w % len(header):
        raise ValueError(f"save_grid: {len(header)} titles for cells {w} pixels wide (they must split evenly)")
    f = _cell_factor(h, w, min_cell)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    top = _header_height(header)
    height, width = grid_size(n, h, w, nrow=nrow, padding=padding, min_cell=min_cell, header=header)
    grid = np.zeros((height, width, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        tile = to_uint8_hwc(images[i]).reshape(h, w, c)
        if f > 1:
            tile = tile.repeat(f, 0).repeat(f, 1)
        y, x = top + padding + r * (h * f + padding), padding + k * (w * f + padding)
        grid[y : y + h * f, x : x + w * f] = tile
    if header:
        _draw_header(grid, header, min(nrow, n), w * f, padding, top)
    return save_image(torch.from_numpy(grid).permute(2, 0, 1), path)


def _draw_header(grid: np.ndarray, header: Sequence[str], columns: int, cell_w: int, padding: int, top: int) -> None:
    """Write the panel titles, centred over each panel of each grid column, into ``grid[:top]``."""
    from PIL import ImageDraw

    strip = Image.new("L", (grid.shape[1], top))
    draw, font = ImageDraw.Draw(strip), _font()
    panel = cell_w // len(header)
    for k in range(columns):
        for j, title in enumerate(header):
            text = str(title)
            while text and draw.textlength(text, font=font) > panel - 2:  # too wide: cut it short
                text = text[:-1]
            x = padding + k * (cell_w + padding) + j * panel + (panel - draw.textlength(text, font=font)) / 2
            draw.text((x, 2), text, fill=255, font=font)
    grid[:top] = np.asarray(strip)[:, :, None]


def temperature_label(t: float) -> str:
    """``t`` for a file name: 2 decimals, more where ``t`` needs them (0.7 -> ``0.70``, 0.701 ->
    ``0.701``), so the names of distinct temperatures differ and say the exact value."""
    for decimals in range(2, 21):
        text = f"{t:.{decimals}f}"
        if float(text) == t:
            return text
    return repr(t)


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
