"""mARFlow's multi-scale autoregressive prior: a ConvLSTM over the channels of each split latent.

Mahajan et al., "Normalizing Flows with Multi-Scale Autoregressive Priors" (CVPR 2020). At every
split the factored-out latent ``z2`` (``C`` channels) is modelled autoregressively over its channels
given the part ``z1`` that stays in the flow::

    p(z2 | z1) = prod_t N(z2_t; mu_t, exp(log_std_t)^2),   t = 0 .. C-1,
    (mu_t, log_std_t) = Out(LSTM^L(In([z2_{t-1}, E(z1)])))    with z2_{-1} = 0,

where ``E`` is conv5x5 -> ReLU -> conv5x5 to ``embed_channels`` (4) channels, ``In`` a conv to
``hidden`` channels, ``LSTM^L`` an ``L``-layer ConvLSTM (state carried over t) and ``Out`` a conv3x3
to 2 channels. The top level has no ``z1``: it sees only ``z2_{t-1}``.

Likelihood (teacher forcing, every ``z2_{t-1}`` known) is computed layer-major: layer ``l`` at time
``t`` depends only on layer ``l-1`` at ``t`` and layer ``l`` at ``t-1``, so every input-to-gate
convolution (and ``In``, ``Out``) runs once over all ``T`` steps with time folded into the batch
(on CPU in cache-sized groups of steps); the only sequential work per step is the hidden-to-gate
convolution and the gate arithmetic.
Sampling is sequential (each ``z2_t`` is drawn, then fed back).

Architecture as in the official code (visinf/mar-scf, ``mar_prior/corr_prior.py``, ``lstm.py``):
one 3-layer ConvLSTM with 32 hidden channels per level; its kernel and dilation depend on the level
(see :func:`reference_geometry`), as does ``In``'s kernel. Differences, on purpose: ``log_std`` is
soft-clamped (the reference leaves it unbounded, a NaN source), the output conv starts at zero (the
prior starts as ``N(0, I)``), each ConvLSTM layer has one gate bias instead of the reference's two
redundant ones, and the top level builds no unused ``E``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import soft_clamp
from .gaussian import Prior, gaussian_log_prob

__all__ = ["ChannelARPrior", "ConvLSTMLayer", "reference_geometry"]

# visinf/mar-scf, ChannelPriorUniScale: ConvLSTM kernel and dilation indexed by the 1-based level.
_REF_KERNELS = (5, 5, 3, 3, 3, 3, 3)
_REF_DILATIONS = (2, 1, 1, 1, 1, 1, 1)


def reference_geometry(level: int) -> tuple[int, int]:
    """``(kernel_size, dilation)`` of the reference ConvLSTM at 1-based ``level`` (5/2, 5/1, then 3/1)."""
    if level < 1:
        raise ValueError(f"reference_geometry: level is 1-based, got {level}")
    i = min(level, len(_REF_KERNELS)) - 1
    return _REF_KERNELS[i], _REF_DILATIONS[i]


def _lstm_cell(gates: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
    """LSTM update from pre-activations laid out ``[i, f, o, g]`` along channels.

    ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``, ``h' = sigmoid(o) tanh(c')``; ``c = None`` means a zero
    state (the first step), where the forget term vanishes.
    """
    hid = gates.shape[1] // 4
    # split/chunk (not slicing): their backward writes all pieces at once instead of zero-filling a
    # full-size gradient per slice
    pre_sig, pre_g = gates.split([3 * hid, hid], dim=1)
    i, f, o = torch.sigmoid(pre_sig).chunk(3, dim=1)
    g = torch.tanh(pre_g)
    c_new = i * g if c is None else torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new


class ConvLSTMLayer(nn.Module):
    """One ConvLSTM layer: ``gates = W_ih * x + b + W_hh * h`` ("same"-padded, dilated convs).

    Gate channels are laid out ``[i, f, o, g]`` (sigmoid gates first, so one sigmoid covers them).
    Initialised like the reference (uniform in ``+-1/sqrt(hidden)``).
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.hidden = hidden
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, in_channels, kernel_size, kernel_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden))
        bound = 1.0 / math.sqrt(hidden)
        for p in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        w = self.weight_ih
        return (
            f"{w.shape[1]}, {self.hidden}, kernel_size={w.shape[-1]}, dilation={self.dilation}, "
            f"gates=[i, f, o, g]"
        )

    def input_gates(self, x: Tensor) -> Tensor:
        """``W_ih * x + b`` (any batch, e.g. all time steps folded into it)."""
        return F.conv2d(x, self.weight_ih, self.bias, padding=self.padding, dilation=self.dilation)

    def hidden_gates(self, h: Tensor) -> Tensor:
        """``W_hh * h`` (the only convolution that must run step by step)."""
        return F.conv2d(h, self.weight_hh, None, padding=self.padding, dilation=self.dilation)


class ChannelARPrior(Prior):
    """Autoregressive prior over the channels of a latent ``z`` ``[B, C, H, W]`` (one per level).

    ``p(z | context, cond) = prod_t N(z_t; mu_t, exp(log_std_t)^2)``; step ``t`` sees
    ``[z_{t-1}, E([context, cond])]`` (``z_{-1} = 0``; ``E`` is omitted when neither is used) through
    ``In`` (conv ``kernel_size``) -> ``layers``-deep ConvLSTM (``hidden`` channels, ``kernel_size``,
    ``dilation``) -> conv3x3 -> ``(mu_t, log_std_t)``, with
    ``log_std = max_log_std * tanh(raw / max_log_std)``. Sampling at temperature tau scales every std
    by tau. Starts as ``N(0, I)`` (zero output conv).

    Args:
        channels: ``C``, channels of the modelled latent (the split's ``z2``).
        context_channels: channels of ``z1`` (0 for the unconditional top level).
        cond_channels: channels of an external condition at the latent's resolution (0: none); it is
            concatenated to ``z1`` before ``E``.
        hidden, layers: ConvLSTM width and depth (reference: 32, 3).
        embed_channels, embed_hidden: output and inner width of ``E`` (reference: 4, 32).
        kernel_size, dilation: ConvLSTM geometry (also ``In``'s kernel); see :func:`reference_geometry`.
        max_log_std: bound of the soft-clamped log-std.
    """

    def __init__(
        self,
        channels: int,
        context_channels: int = 0,
        cond_channels: int = 0,
        *,
        hidden: int = 32,
        layers: int = 3,
        embed_channels: int = 4,
        embed_hidden: int = 32,
        kernel_size: int = 5,
        dilation: int = 1,
        max_log_std: float = 6.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if channels < 1 or context_channels < 0 or cond_channels < 0:
            raise ValueError(
                f"{name}: channels must be >= 1 and context/cond channels >= 0, got "
                f"channels={channels}, context_channels={context_channels}, "
                f"cond_channels={cond_channels}"
            )
        if layers < 1 or hidden < 1 or embed_channels < 1 or embed_hidden < 1:
            raise ValueError(f"{name}: hidden, layers, embed_channels, embed_hidden must be >= 1")
        if kernel_size < 1 or kernel_size % 2 == 0 or dilation < 1:
            raise ValueError(
                f"{name}: kernel_size must be odd and dilation >= 1, got {kernel_size}, {dilation}"
            )
        if max_log_std <= 0:
            raise ValueError(f"{name}: max_log_std must be > 0, got {max_log_std}")
        self.channels = channels
        self.context_channels = context_channels
        self.cond_channels = cond_channels
        self.hidden = hidden
        self.max_log_std = float(max_log_std)
        self.cpu_fold_numel = 1 << 20  # gate elements per batched conv on CPU (see _time_span)
        side = context_channels + cond_channels
        if side:
            self.embed: nn.Module | None = nn.Sequential(
                nn.Conv2d(side, embed_hidden, 5, padding=2),
                nn.ReLU(),
                nn.Conv2d(embed_hidden, embed_channels, 5, padding=2),
            )
            in_ch = 1 + embed_channels
        else:
            self.embed = None
            in_ch = 1
        self.conv_in = nn.Conv2d(in_ch, hidden, kernel_size, padding=kernel_size // 2)
        self.lstm = nn.ModuleList(
            ConvLSTMLayer(hidden, hidden, kernel_size, dilation) for _ in range(layers)
        )
        self.conv_out = nn.Conv2d(hidden, 2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, context_channels={self.context_channels}, "
            f"cond_channels={self.cond_channels}, max_log_std={self.max_log_std}"
        )

    # ----------------------------------------------------------------------------------- checks
    def _check_side(self, name: str, t: Tensor | None, ch: int, b: int, h: int, w: int) -> None:
        cls = type(self).__name__
        got = None if t is None else tuple(t.shape)
        if ch == 0:
            if t is not None:
                raise ValueError(f"{cls}: built with {name}_channels=0 but got {name} of shape {got}")
            return
        if t is None or t.dim() != 4 or tuple(t.shape) != (b, ch, h, w):
            raise ValueError(f"{cls}: expected {name} of shape {(b, ch, h, w)}, got {got}")

    def _check_z(self, z: Tensor, context: Tensor | None, cond: Tensor | None) -> None:
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__}: expected z of shape [B, {self.channels}, H, W], "
                f"got {tuple(z.shape)}"
            )
        b, _, h, w = z.shape
        self._check_side("context", context, self.context_channels, b, h, w)
        self._check_side("cond", cond, self.cond_channels, b, h, w)

    # ------------------------------------------------------------------------------ shared parts
    def _side_term(self, context: Tensor | None, cond: Tensor | None) -> Tensor:
        """The time-invariant part of ``In``: ``W_e * E([context, cond]) + b`` -> ``[B, hidden, H, W]``
        (or the bias ``[1, hidden, 1, 1]`` without side input). ``In`` is linear, so
        ``In([z_{t-1}, e]) = W_z * z_{t-1} + W_e * e + b`` exactly (zero padding)."""
        if self.embed is None:
            return self.conv_in.bias.view(1, -1, 1, 1)
        parts = [t for t in (context, cond) if t is not None]
        e = self.embed(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        return F.conv2d(e, self.conv_in.weight[:, 1:], self.conv_in.bias, padding=self.conv_in.padding)

    def _z_term(self, z_prev: Tensor) -> Tensor:
        """``W_z * z_{t-1}`` for ``z_prev`` ``[N, 1, H, W]``."""
        return F.conv2d(z_prev, self.conv_in.weight[:, :1], None, padding=self.conv_in.padding)

    def _head(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``Out(h)`` -> ``(mu, log_std)``, each ``[N, 1, H, W]``; log-std soft-clamped."""
        out = self.conv_out(h)
        return out[:, :1], soft_clamp(out[:, 1:], self.max_log_std)

    # -------------------------------------------------------------------------------- likelihood
    def mean_log_std(
        self, z: Tensor, context: Tensor | None = None, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced ``(mu, log_std)``, each ``[B, C, H, W]``; ``mu_t`` depends on ``z_{<t}`` only.

        Layer-major: ``In``, every layer's input-to-gate conv and ``Out`` run once over all ``T = C``
        steps (time folded into the batch; on CPU over groups of steps, see :meth:`_time_span`); per
        step only ``W_hh * h_{t-1}`` and the gate arithmetic.
        """
        self._check_z(z, context, cond)
        b, t_len, h, w = z.shape
        hid = self.hidden
        side = self._side_term(context, cond)  # [B or 1, hidden, H or 1, W or 1]
        zt = z.transpose(0, 1)  # [T, B, H, W], time-major so each step's slice is contiguous
        z_prev = torch.cat([torch.zeros_like(zt[:1]), zt[:-1]], dim=0).reshape(t_len * b, 1, h, w)
        x = self._z_term(z_prev).view(t_len, b, hid, h, w) + side  # layer input, [T, B, hid, H, W]
        span = self._time_span(t_len, b * 4 * hid * h * w, z.device)
        for layer in self.lstm:
            # input-to-gate conv over `span` steps at a time, time folded into the batch; split and
            # unbind (not indexing) so that backward assembles the step gradients in one go
            gx: list[Tensor] = []
            for xg in x.split(span, dim=0):
                gates = layer.input_gates(xg.reshape(-1, hid, h, w))
                gx.extend(gates.view(-1, b, 4 * hid, h, w).unbind(0))
            hcur, c = _lstm_cell(gx[0], None)
            hs = [hcur]
            for t in range(1, t_len):
                hcur, c = _lstm_cell(gx[t] + layer.hidden_gates(hcur), c)
                hs.append(hcur)
            x = torch.stack(hs, dim=0)
        mu, log_std = self._head(x.view(t_len * b, hid, h, w))
        return (
            mu.view(t_len, b, h, w).transpose(0, 1),
            log_std.view(t_len, b, h, w).transpose(0, 1),
        )

    def _time_span(self, t_len: int, step_numel: int, device: torch.device) -> int:
        """Steps per batched input-to-gate conv: all of them, except on CPU where a huge folded
        batch falls out of cache (one call is slower there than groups of ``cpu_fold_numel`` gate
        elements). Exact either way."""
        if device.type != "cpu":
            return t_len
        return max(1, min(t_len, self.cpu_fold_numel // max(step_numel, 1)))

    def log_prob(self, z: Tensor, context: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """``log p(z | context, cond)`` summed over channels and positions -> ``[B]``."""
        mu, log_std = self.mean_log_std(z, context, cond)
        return gaussian_log_prob(z, mu, log_std)

    # ---------------------------------------------------------------------------------- sampling
    def sample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw ``z`` of ``shape`` ``[B, C, H, W]`` channel by channel: ``z_t = mu_t + tau std_t eps_t``.

        ``noise`` (standard normal, ``shape``) fixes ``eps`` (deterministic sampling); by default it is
        drawn once up front. Gradients are not blocked: wrap in ``torch.no_grad()`` when not needed.
        """
        cls = type(self).__name__
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4 or shape[1] != self.channels:
            raise ValueError(f"{cls}: expected sample shape [B, {self.channels}, H, W], got {shape}")
        b, _, h, w = shape
        self._check_side("context", context, self.context_channels, b, h, w)
        self._check_side("cond", cond, self.cond_channels, b, h, w)
        ref = self.conv_out.weight
        if noise is None:
            noise = torch.randn(shape, dtype=ref.dtype, device=ref.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"{cls}: expected noise of shape {shape}, got {tuple(noise.shape)}")
        side = self._side_term(context, cond)
        # per step and layer one convolution of [x_t, h_{t-1}] with [W_ih, W_hh] (the sum of the two
        # convolutions, in one call)
        joint = [torch.cat([layer.weight_ih, layer.weight_hh], dim=1) for layer in self.lstm]
        state: list[tuple[Tensor, Tensor] | None] = [None] * len(self.lstm)
        z_prev = torch.zeros(b, 1, h, w, dtype=ref.dtype, device=ref.device)
        out = []
        for t in range(self.channels):
            x = self._z_term(z_prev) + side
            for l, layer in enumerate(self.lstm):
                prev = state[l]
                inp, weight = (x, layer.weight_ih) if prev is None else (torch.cat([x, prev[0]], dim=1), joint[l])
                gates = F.conv2d(inp, weight, layer.bias, padding=layer.padding, dilation=layer.dilation)
                state[l] = x_c = _lstm_cell(gates, None if prev is None else prev[1])
                x = x_c[0]
            mu, log_std = self._head(x)
            z_prev = (mu + temperature * torch.exp(log_std) * noise[:, t : t + 1]).contiguous()
            out.append(z_prev)
        return torch.cat(out, dim=1)
