"""Steps of flow with the paper's attention inserted at one of four positions (Fig. 5).

``pos1`` before actnorm, ``pos2`` after actnorm, ``pos3`` after the 1x1 conv, ``pos4`` after the
coupling. Successive attention layers alternate mask parity so both halves get attended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core import Flow, Sequential
from ..layers.attention import IMap, ITrans
from ..layers.masks import check_mask_kind

__all__ = ["ATTENTION_KINDS", "POSITIONS", "AttentionConfig", "make_step"]

ATTENTION_KINDS = ("none", "imap", "itrans")
POSITIONS = ("pos1", "pos2", "pos3", "pos4")


@dataclass
class AttentionConfig:
    """Which attention goes where. ``patches`` may be one int or one per level."""

    kind: str = "none"
    position: str = "pos3"
    mask: str = "spatial_channel"
    heads: int = 4
    patches: int | Sequence[int] = 4
    imap_attention: str = "spatial"
    itrans_scale: bool = True
    itrans_init_mixing: float | None = 0.1
    _count: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ATTENTION_KINDS:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.kind!r}"
            )
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        check_mask_kind("attention", self.mask, 0)

    def patches_at(self, level: int) -> int:
        if isinstance(self.patches, int):
            return self.patches
        if level >= len(self.patches):
            raise ValueError(f"attention.patches lists {len(self.patches)} levels, need level {level}")
        return int(self.patches[level])

    def make(self, channels: int, level: int) -> Flow | None:
        """The next attention layer (alternating parity), or ``None`` when ``kind == "none"``."""
        if self.kind == "none":
            return None
        parity = self._count % 2
        seed = self._count
        self._count += 1
        if self.kind == "imap":
            return IMap(
                channels, mask=self.mask, parity=parity, attention=self.imap_attention, seed=seed
            )
        return ITrans(
            channels,
            heads=self.heads,
            patches=self.patches_at(level),
            mask=self.mask,
            parity=parity,
            scale=self.itrans_scale,
            init_mixing=self.itrans_init_mixing,
            seed=seed,
        )


def make_step(
    norm: Flow, conv: Flow, coupling: Sequence[Flow], attention: Flow | None, position: str
) -> Sequential:
    """``[norm, conv, *coupling]`` with ``attention`` inserted at ``position``."""
    parts: list[Flow] = [norm, conv, *coupling]
    if attention is not None:
        index = {"pos1": 0, "pos2": 1, "pos3": 2, "pos4": len(parts)}[position]
        parts.insert(index, attention)
    return Sequential(*parts)
