"""The Flow++ / mARFlow coupling network: gated residual convolutions and gated multi-head
self-attention with layer norms, in channels-last layout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FlowPPNet", "ATTENTION_DROPOUT", "concat_elu"]

#: where the attention's dropout acts (``attention_dropout``): its weights or its output
ATTENTION_DROPOUT = ("weights", "output")


def _wn_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return nn.utils.parametrizations.weight_norm(conv)


def concat_elu(x: Tensor) -> Tensor:
    """``[elu(x), elu(-x)]`` along channels (PixelCNN++ / Flow++ non-linearity)."""
    return F.elu(torch.cat([x, -x], dim=1))


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (per position)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _GatedConv(nn.Module):
    """Flow++ gated residual convolution: concat-ELU, conv3x3, concat-ELU, channel dropout
    (whole feature maps, ``nn.Dropout2d`` as visinf/mar-scf), conv1x1, GLU."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = _wn_conv(2 * channels, channels, 3)
        self.drop = nn.Dropout2d(dropout)
        self.gate = _wn_conv(2 * channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(concat_elu(self.conv(concat_elu(x))))
        a, b = self.gate(h).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


def _position_encoding(length: int, channels: int, dtype: torch.dtype, device) -> Tensor:
    """Sinusoidal encoding ``[length, channels]`` of the flattened positions (Transformer style)."""
    pos = torch.arange(length, dtype=torch.float64, device=device).unsqueeze(1)
    half = max(channels // 2, 1)
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64, device=device) / half)
    angles = pos * freq
    enc = torch.cat([angles.sin(), angles.cos()], dim=1)[:, :channels]
    if enc.shape[1] < channels:
        enc = F.pad(enc, (0, channels - enc.shape[1]))
    return enc.to(dtype)


class _GatedAttention(nn.Module):
    """Flow++ gated multi-head self-attention over all positions, with a sinusoidal position code.

    ``dropout_on="weights"`` drops attention weights, as Flow++ and mARFlow do (inside
    ``scaled_dot_product_attention``); ``"output"`` drops the attention output instead (a
    Transformer's residual dropout), which keeps the fused CPU kernels usable (see
    ``docs/results.md`` for what each costs).
    """

    def __init__(self, channels: int, heads: int, dropout: float, dropout_on: str = "output") -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"FlowPPNet: hidden width {channels} must be divisible by heads={heads}")
        if dropout_on not in ATTENTION_DROPOUT:
            raise ValueError(
                f"FlowPPNet: attention dropout must act on one of {', '.join(ATTENTION_DROPOUT)}, got {dropout_on!r}"
            )
        self.heads = heads
        self.dropout = dropout
        self.dropout_on = dropout_on
        self.in_proj = _wn_conv(channels, 3 * channels, 1, bias=False)
        self.gate = _wn_conv(channels, 2 * channels, 1)
        self._pos: dict[tuple, Tensor] = {}

    def _pos_enc(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        key = (h * w, c, x.dtype, x.device)
        enc = self._pos.get(key)
        if enc is None:
            enc = _position_encoding(h * w, c, x.dtype, x.device).t().reshape(1, c, h, w)
            enc = enc.contiguous(memory_format=torch.channels_last)
            self._pos[key] = enc
        return enc

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.in_proj(x + self._pos_enc(x))
        on_weights = self.dropout_on == "weights" and self.training and self.dropout > 0
        autocast = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        out = self._fused(qkv, self.dropout if on_weights else 0.0, autocast)
        if self.dropout_on == "output":
            out = F.dropout(out, self.dropout, self.training)
        a, g = self.gate(out).chunk(2, dim=1)
        return x + a * torch.sigmoid(g)

    def _fused(self, qkv: Tensor, dropout_p: float, autocast: bool) -> Tensor:
        """Attention by ``scaled_dot_product_attention`` (dropout on the weights when
        ``dropout_p > 0``) -> ``[B, C, H, W]`` (channels-last)."""
        b, _, h, w = qkv.shape
        c = qkv.shape[1] // 3
        # channels-last view [B, HW, 3, heads, d] (no copy when qkv is channels_last)
        qkv = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [B, heads, HW, d]; unbind: no zero-fill in backward
        if autocast:
            # under network_autocast, the CPU's bfloat16 attention kernel is slower than float32's
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)


class FlowPPNet(nn.Module):
    """The Flow++ / mARFlow coupling network.

    Weight-normed conv3x3 in; ``blocks`` x [gated residual conv (concat-ELU, channel dropout, GLU),
    layer norm, gated multi-head self-attention with position encoding (dropout on its weights or
    its output, ``attention_dropout``), layer norm]; weight-normed conv3x3 out. The output conv
    starts at zero so the coupling starts close to a fixed map.

    Runs in channels-last memory layout inside (faster convolutions on GPU and CPU, and the layer
    norms and attention read channels without copies); input and output are ordinary tensors.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden: int = 96,
        blocks: int = 10,
        heads: int = 4,
        dropout: float = 0.2,
        attention: bool = True,
        attention_dropout: str = "output",
    ) -> None:
        super().__init__()
        self.conv_in = _wn_conv(in_channels, hidden, 3)
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [_GatedConv(hidden, dropout), _ChannelLayerNorm(hidden)]
            if attention:
                layers += [_GatedAttention(hidden, heads, dropout, attention_dropout), _ChannelLayerNorm(hidden)]
        self.blocks = nn.Sequential(*layers)
        self.conv_out = _wn_conv(hidden, out_channels, 3)
        with torch.no_grad():  # start at zero output: weight-norm gain g = 0
            self.conv_out.parametrizations.weight.original0.zero_()
            self.conv_out.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x.contiguous(memory_format=torch.channels_last))
        return self.conv_out(self.blocks(h)).contiguous()
