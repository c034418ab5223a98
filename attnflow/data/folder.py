"""Any folder of images: every png/jpg/jpeg/bmp/webp/tif(f) file under ``root``, recursively.

Files are sorted by their path relative to ``root``; class sub-folders are not interpreted (this
is for unconditional generative models). Images are converted to RGB (``channels=3``) or greyscale
``L`` (``channels=1``). With ``image_size`` every image is resized with Pillow bicubic (antialiased)
so that it covers the target, keeping its aspect ratio, then centre-cropped to it. Without
``image_size`` images are returned at their own size; ``.image_size`` is then the size of the
first image (:meth:`ImageFolder.check_common_size` checks that every image has it, which batching
needs; :func:`attnflow.data.dataset_from_config` calls it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .common import DataError, as_size, list_images, load_image, resize_cover_crop, to_tensor

__all__ = ["ImageFolder"]


class ImageFolder(Dataset):
    """Images under ``root`` as ``uint8 [channels, H, W]``; unreadable files raise DataError."""

    def __init__(
        self,
        root: str | os.PathLike,
        channels: int = 3,
        image_size: int | tuple[int, int] | None = None,
        flip: bool = False,
    ):
        if channels not in (1, 3):
            raise ValueError(f"ImageFolder: channels must be 1 or 3, got {channels!r}")
        self.root = Path(root)
        self.files = list_images(self.root, "image folder")
        self.channels = channels
        self.mode = "RGB" if channels == 3 else "L"
        self.target_size = as_size(image_size, "image_size") if image_size is not None else None
        self.flip = bool(flip)
        if self.target_size is not None:
            self.image_size = self.target_size
        else:
            w, h = load_image(self.files[0], self.mode).size
            self.image_size = (h, w)

    def check_common_size(self) -> tuple[int, int]:
        """``(H, W)`` shared by every image (read from the file headers, which is fast); a
        DataError naming two files of different sizes otherwise."""
        if self.target_size is not None:
            return self.target_size
        first = None
        for path in self.files:
            try:
                with Image.open(path) as img:
                    w, h = img.size
            except (OSError, ValueError, SyntaxError):
                load_image(path, self.mode)  # raises the DataError that names the file
                raise  # pragma: no cover
            if first is None:
                first = (path, (h, w))
            elif (h, w) != first[1]:
                raise DataError(
                    f"image folder {self.root}: images of different sizes ({first[0].name} is "
                    f"{first[1][1]}x{first[1][0]}, {path.name} is {w}x{h}) cannot be batched; set "
                    f"data.options.image_size (e.g. --set data.options.image_size={min(first[1])}) to resize them"
                )
        return first[1]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        img = load_image(self.files[i], self.mode)
        if self.target_size is not None:
            img = resize_cover_crop(img, self.target_size, "bicubic")
        x = to_tensor(np.asarray(img))
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1).contiguous()
        return x

