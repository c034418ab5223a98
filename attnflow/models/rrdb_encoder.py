"""SRFlow's encoder of the LR image: an RRDB network (ESRGAN's RRDBNet trunk) giving one
conditioning map per flow level.

The outputs of selected RRDB blocks (``taps``, 0-based; ``1, 3, 5, 7`` by default, as SRFlow's
``stackRRDB``) and the trunk features are stacked into one map per flow level
(``features * (1 + len(taps))`` channels, 320 by default). Level ``l`` (1-based) works at
``HR / 2^l = LR * 2^e`` with ``e = log2(scale) - l``. The trunk part is SRFlow's: for ``e > 0`` the
learned upsampling chain (nearest x2 -> conv3x3, LeakyReLU between steps; ``fea_up2``,
``fea_up4``, ...), for ``e = 0`` the LR features (``last_lr_fea``), for ``e < 0`` the LR features
average-pooled by ``2^-e`` (SRFlow's ``fea_up0``: bilinear x1/2, which for a factor of 2 is exactly
a 2x2 average). The block outputs are resized to the level with nearest upsampling (exact
replication, as SRFlow; kept factored, :class:`~.upsampled_concat.UpsampledConcat`) or average
pooling when the level is coarser than the LR image (SRFlow subsamples there; averaging does not
alias).

The same trunk, with ``log2(scale)`` upsampling convolutions and no taps, is the body of the
L1-trained :class:`~attnflow.models.rrdb.RRDBNet`. Pretrained weights load in either naming
(:mod:`.srflow_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .srflow_weights import map_pretrained_keys
from .upsampled_concat import UpsampledConcat, conv2d_on_map

__all__ = ["RRDBEncoder", "log2_exact"]


def log2_exact(scale: int, owner: str = "SRFlow") -> int:
    """``log2(scale)`` of an SR factor, which must be a power of two >= 2 (``ValueError`` naming
    ``owner`` otherwise)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2 or scale & (scale - 1):
        raise ValueError(f"{owner}: scale must be a power of two >= 2 (2, 4, 8, 16, ...), got {scale!r}")
    return scale.bit_length() - 1


class _DenseBlock(nn.Module):
    """ESRGAN residual dense block: 5 densely connected conv3x3, LeakyReLU(0.2), residual x 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(features + i * growth, growth if i < 4 else features, 3, padding=1)
            for i in range(5)
        )
        for conv in self.convs:  # ESRGAN's init: Kaiming normal scaled by 0.1, zero bias
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs[:4]:
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return x + 0.2 * self.convs[4](torch.cat(feats, dim=1))


class _RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(*(_DenseBlock(features, growth) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.dense(x)


def _resize_octaves(x: Tensor, octaves: int) -> Tensor:
    """Scale ``x`` by ``2**octaves``: nearest replication up, average pooling down."""
    if octaves > 0:
        return F.interpolate(x, scale_factor=2**octaves, mode="nearest")
    if octaves < 0:
        return F.avg_pool2d(x, 2**-octaves)
    return x


class RRDBEncoder(nn.Module):
    """RRDB encoder of the LR image: one conditioning map per flow level (see the module docstring).

    ``octaves[i]`` is level ``i``'s resolution relative to the LR image as a power of two. Input:
    the LR image as floats on the ``0..input_range`` scale (uint8 values), ``[B, C, h, w]``.
    Output: a list of ``[B, out_channels, h * 2^e, w * 2^e]`` maps.
    """

    def __init__(
        self,
        octaves: Sequence[int],
        *,
        in_channels: int = 3,
        features: int = 64,
        blocks: int = 8,
        growth: int = 32,
        taps: Sequence[int] = (1, 3, 5, 7),
        input_range: float = 255.0,
    ) -> None:
        super().__init__()
        for name, v in (("features", features), ("blocks", blocks), ("growth", growth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RRDBEncoder: {name} must be a positive int, got {v!r}")
        taps = [int(t) for t in taps]
        bad = [t for t in taps if not 0 <= t < blocks]
        if bad or len(set(taps)) != len(taps):
            raise ValueError(
                f"RRDBEncoder: taps must be distinct 0-based block indices below blocks={blocks}, "
                f"got {taps}"
            )
        self.octaves = [int(e) for e in octaves]
        self.in_channels = in_channels
        self.features = features
        self.taps = sorted(taps)
        self.growth = growth
        self.input_range = float(input_range)
        self.conv_first = nn.Conv2d(in_channels, features, 3, padding=1)
        self.blocks = nn.ModuleList(_RRDB(features, growth) for _ in range(blocks))
        self.trunk_conv = nn.Conv2d(features, features, 3, padding=1)
        n_up = max(0, max(self.octaves, default=0))
        self.upconvs = nn.ModuleList(nn.Conv2d(features, features, 3, padding=1) for _ in range(n_up))

    @property
    def out_channels(self) -> int:
        return self.features * (1 + len(self.taps))

    def trunk_features(self, lr: Tensor) -> tuple[dict[int, Tensor], list[Tensor], Tensor]:
        """``(trunk, tapped, top)``: the trunk features per octave (``0``: the LR features
        ``last_lr_fea``; ``k >= 1``: the output of upsampling conv ``k``, before its LeakyReLU), the
        outputs of the tapped blocks, and the activated output of the last upsampling conv (what an
        SR head reads; the LR features when there is no upsampling conv)."""
        fea = self.conv_first(lr / self.input_range)
        tapped = []
        for i, block in enumerate(self.blocks):
            fea = block(fea)
            if i in self.taps:
                tapped.append(fea)
        lr_fea = fea + self.trunk_conv(fea)
        trunk = {0: lr_fea}
        h = lr_fea
        for k, conv in enumerate(self.upconvs, 1):
            # conv3x3 of the nearest-upsampled map, computed at the coarse resolution (same values)
            trunk[k] = conv2d_on_map(conv, UpsampledConcat(None, h, 2))
            h = F.leaky_relu(trunk[k], 0.2)
        return trunk, tapped, h

    def forward(self, lr: Tensor) -> list[Tensor | UpsampledConcat]:
        """One map per level; above the LR resolution an :class:`~.upsampled_concat.UpsampledConcat`
        (the tapped blocks' outputs stay at the LR resolution, so the flow's networks convolve them
        there), otherwise a tensor."""
        trunk, tapped, _ = self.trunk_features(lr)
        lr_fea = trunk[0]
        stack = torch.cat(tapped, dim=1) if tapped else None
        maps: list[Tensor | UpsampledConcat] = []
        for e in self.octaves:
            fine = trunk[e] if e >= 0 else _resize_octaves(lr_fea, e)
            if stack is None:
                maps.append(fine)
            elif e > 0:
                maps.append(UpsampledConcat(fine, stack, 2**e))
            else:
                maps.append(torch.cat([fine, _resize_octaves(stack, e)], dim=1))
        return maps

    # --- pretrained weights ---------------------------------------------------------------------
    def load_pretrained_state(self, state: dict[str, Tensor], source: str) -> list[str]:
        """Load a pretrained RRDB exactly; returns the names of the SR-head tensors left out.

        ``state`` is either the state dict of an attnflow ``rrdb`` model (``encoder.*`` and the
        head ``hr_conv.*``, ``conv_last.*``) or one with the reference's RRDBNet names
        (:data:`~.srflow_weights.REFERENCE_KEYS`; a ``module.`` prefix is removed, as SRFlow does). The SR head
        (``HRconv``, ``conv_last`` and upsampling convs beyond the ones this encoder has, e.g.
        ``upconv3`` at 8x, which SRFlow's flow levels never read) is left out by name; every other
        tensor must match one of the encoder's, and every encoder tensor must be given, with its
        shape: otherwise a ``ValueError`` names the missing, unexpected and mis-shaped tensors.
        """
        mapped, head, unexpected, origin = map_pretrained_keys(state, len(self.upconvs))
        own = self.state_dict()
        missing = sorted(set(own) - set(mapped))
        unexpected = sorted(unexpected + [origin[k] for k in mapped if k not in own])
        shapes = sorted(
            f"{k} {tuple(mapped[k].shape)} (encoder: {tuple(own[k].shape)})"
            for k in set(own) & set(mapped) if tuple(mapped[k].shape) != tuple(own[k].shape)
        )
        mapped = {k: v for k, v in mapped.items() if k in own}
        if missing or unexpected or shapes:
            size = f"features={self.features}, blocks={len(self.blocks)}, growth={self.growth}, " \
                   f"{len(self.upconvs)} upsampling conv(s)"
            parts = [f"{what} {len(names)} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                     for what, names in (("missing", missing), ("unexpected", unexpected),
                                         ("of another shape", shapes)) if names]
            raise ValueError(
                f"{source}: the pretrained RRDB does not fit this encoder ({size}): tensors "
                + "; ".join(parts)
            )
        self.load_state_dict(mapped, strict=True)
        return head
