"""Binary masks that split a feature map into a conditioning part (1) and a transformed part (0).

All masks have shape ``[C, H, W]`` and dtype bool. ``parity`` 1 is the complement of parity 0, so
two attention layers with alternating parity together transform every entry.

- ``spatial``: checkerboard over positions, ``(i + j) % 2 == parity`` (same for every channel).
- ``channel``: the first ``C // 2`` channels (parity 0) or the rest (parity 1).
- ``spatial_channel``: the paper's 3D checkerboard, ``(c + i + j) % 2 == parity``.
- ``random``: a fixed, seeded half of all entries (``floor(C*H*W / 2)`` ones at parity 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK_KINDS = ("spatial", "channel", "spatial_channel", "random")

__all__ = ["MASK_KINDS", "make_mask", "check_mask_kind"]


def check_mask_kind(layer: str, kind: str, parity: int) -> None:
    """Raise ``ValueError`` for an unknown mask name or a parity other than 0/1."""
    if kind not in MASK_KINDS:
        raise ValueError(f"{layer}: unknown mask {kind!r}; expected one of {', '.join(MASK_KINDS)}")
    if parity not in (0, 1):
        raise ValueError(f"{layer}: parity must be 0 or 1, got {parity!r}")


def make_mask(
    kind: str,
    channels: int,
    height: int,
    width: int,
    parity: int = 0,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``[C, H, W]`` boolean mask ``M`` (True = kept/conditioning entry)."""
    check_mask_kind("make_mask", kind, parity)
    c = torch.arange(channels, device=device).view(-1, 1, 1)
    i = torch.arange(height, device=device).view(1, -1, 1)
    j = torch.arange(width, device=device).view(1, 1, -1)
    if kind == "spatial":
        mask = ((i + j) % 2 == 0).expand(channels, height, width)
    elif kind == "channel":
        mask = (c < channels // 2).expand(channels, height, width)
    elif kind == "spatial_channel":
        mask = (c + i + j) % 2 == 0
    else:  # random
        n = channels * height * width
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + n)
        perm = torch.randperm(n, generator=gen)
        flat = torch.zeros(n, dtype=torch.bool)
        flat[perm[: n // 2]] = True
        mask = flat.view(channels, height, width).to(device)
    mask = mask.contiguous()
    return mask if parity == 0 else ~mask
