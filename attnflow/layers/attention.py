"""The paper's invertible attention layers: map-based (iMap) and transformer-based (iTrans).

Both split the entries of a feature map with a fixed binary mask ``M`` (see :mod:`.masks`): the
masked entries ``x1 = M * x`` pass (iMap: scaled by a learned constant), and the attention that acts
on the other entries is computed from ``x1`` alone. So the Jacobian is block-triangular, the inverse
recovers ``x1`` first, and the log-det has a closed form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, check_input
from .masks import check_mask_kind, make_mask

__all__ = ["IMap", "ITrans"]


class _MaskedLayer(Flow):
    """Mask bookkeeping shared by the attention layers.

    Masks depend on the input size, so they are built lazily and cached per (size, device, dtype).
    The mask definition (kind, parity, seed) travels in the state dict as extra state, so a reloaded
    layer rebuilds exactly the same (also ``random``) mask.
    """

    def __init__(self, channels: int, mask: str, parity: int, seed: int) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"{name}: channels must be a positive int, got {channels!r}")
        check_mask_kind(name, mask, parity)
        self.channels = channels
        self.mask_kind = mask
        self.parity = parity
        self.seed = int(seed)
        self._cache: dict[tuple, tuple[Tensor, ...]] = {}

    def get_extra_state(self) -> dict:
        return {"mask": self.mask_kind, "parity": self.parity, "seed": self.seed}

    def set_extra_state(self, state: dict) -> None:
        check_mask_kind(type(self).__name__, state["mask"], state["parity"])
        self.mask_kind, self.parity, self.seed = state["mask"], state["parity"], int(state["seed"])
        self._cache.clear()

    def mask(self, height: int, width: int, device=None) -> Tensor:
        """The boolean ``[C, height, width]`` mask (True = conditioning entry ``x1``)."""
        return make_mask(
            self.mask_kind, self.channels, height, width, self.parity, seed=self.seed, device=device
        )

    def extra_repr(self) -> str:
        return f"{self.channels}, mask={self.mask_kind!r}, parity={self.parity}"


class IMap(_MaskedLayer):
    r"""Invertible map-based attention, iMap (first order).

    ``y = M * x * sig(s) + (1 - M) * x * a(M * x)``, ``a = sigmoid(offset * pool(conv1x1(M * x))) + eps``

    References:
        | Generative Flows with Invertible Attentions (Sukthanker et al., 2022)
        | R. S. Sukthanker, Z. Huang, S. Kumar, R. Timofte, L. Van Gool. CVPR 2022.
        | https://arxiv.org/abs/2106.03959

    ``M`` is a fixed binary mask (:func:`~attnflow.layers.masks.make_mask`), ``sig(s) = sigmoid(s)
    + eps`` a learned scale per channel, and ``pool`` averages over channels (one weight per
    position) or over positions (one weight per channel). The attention weights are computed from
    the kept entries ``M * x`` alone, so the inverse recovers them first (``M * y / sig(s)``),
    recomputes ``a`` and divides. Log-det (closed form, exact for any mask, odd ``C`` included):
    ``sum((1 - M) * log a) + sum(M * log sig(s))``. With ``mask="spatial"`` and
    ``attention="spatial"`` an attended position has no kept entries of its own, so (the conv
    being 1x1, as in the paper) its weight is a learned constant; the paper's mask ablation finds
    that mask the weakest. The conv bias and ``s`` start at 2, so every scale starts near
    ``sigmoid(2) = 0.88``.

    Arguments:
        channels: ``C``, the channels of the input ``[B, C, H, W]``.
        mask: the mask kind, one of :data:`~attnflow.layers.masks.MASK_KINDS` (the paper's 3D
            checkerboard ``"spatial_channel"`` by default).
        parity: 0 or 1; parity 1 keeps the entries parity 0 attends, so alternate it between
            successive layers.
        attention: ``"spatial"`` (one weight per position, the paper's default) or ``"channel"``
            (one weight per channel).
        hidden: the conv's output width ``C'`` (default ``C``).
        eps: the lower bound of every scale.
        seed: the seed of a ``"random"`` mask.

    Example:
        >>> layer = IMap(4)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> y, logdet = layer(x)
        >>> logdet.shape
        torch.Size([2])
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        mask: str = "spatial_channel",
        parity: int = 0,
        attention: str = "spatial",
        hidden: int | None = None,
        eps: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__(channels, mask, parity, seed)
        if attention not in ("spatial", "channel"):
            raise ValueError(f"IMap: attention must be 'spatial' or 'channel', got {attention!r}")
        self.attention = attention
        self.eps = eps
        hidden = channels if attention == "channel" else (hidden or channels)
        self.conv = nn.Conv2d(channels, hidden, 1)
        nn.init.normal_(self.conv.weight, std=1.0 / math.sqrt(channels))
        nn.init.constant_(self.conv.bias, 2.0)
        self.offset = nn.Parameter(torch.ones(()))
        self.s = nn.Parameter(torch.full((channels,), 2.0))

    def _buffers_for(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mask as x's dtype ``[C, H, W]``, unmasked count per attention weight, masked count per channel."""
        h, w = x.shape[2], x.shape[3]
        key = (h, w, x.device, x.dtype)
        hit = self._cache.get(key)
        if hit is None:
            m = self.mask(h, w, x.device)
            mf = m.to(x.dtype)
            free = 1.0 - mf
            per_weight = free.sum(0) if self.attention == "spatial" else free.sum((1, 2))
            hit = (mf, per_weight, mf.sum((1, 2)))
            self._cache[key] = hit
        return hit

    def _attention(self, x1: Tensor) -> Tensor:
        """``log a``: ``[B, 1, H, W]`` (spatial) or ``[B, C, 1, 1]`` (channel)."""
        if self.attention == "spatial":
            # mean over the C' output channels of a 1x1 conv == one conv with the averaged filter
            w = self.conv.weight.mean(0, keepdim=True)
            b = self.conv.bias.mean().view(1)
            logits = F.conv2d(x1, w.to(x1.dtype), b.to(x1.dtype))
        else:
            logits = F.conv2d(x1, self.conv.weight.to(x1.dtype), self.conv.bias.to(x1.dtype))
            logits = logits.mean((2, 3), keepdim=True)
        return torch.log(torch.sigmoid(self.offset * logits) + self.eps)

    def _scales(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_keep = torch.log(torch.sigmoid(self.s) + self.eps).to(x.dtype)
        return log_keep, log_keep.view(1, -1, 1, 1)

    def _logdet(self, log_a: Tensor, log_keep: Tensor, per_weight: Tensor, per_channel: Tensor) -> Tensor:
        if self.attention == "spatial":
            ld_a = (log_a.flatten(1) * per_weight.flatten()).sum(1)
        else:
            ld_a = log_a.flatten(1) @ per_weight
        return ld_a + (log_keep * per_channel).sum()

    def attention_map(self, x: Tensor) -> Tensor:
        """The weights ``a`` that :meth:`forward` multiplies the unmasked entries of ``x`` by:
        ``[B, 1, H, W]`` (``attention="spatial"``) or ``[B, C, 1, 1]`` (``"channel"``)."""
        check_input(self, x, self.channels)
        mf = self._buffers_for(x)[0]
        return torch.exp(self._attention(x * mf))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        mf, per_weight, per_channel = self._buffers_for(x)
        log_keep, log_keep_map = self._scales(x)
        x1 = x * mf
        log_a = self._attention(x1)
        scale = torch.exp(torch.where(mf.bool(), log_keep_map, log_a))
        return x * scale, self._logdet(log_a, log_keep, per_weight, per_channel)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z, self.channels)
        mf, per_weight, per_channel = self._buffers_for(z)
        log_keep, log_keep_map = self._scales(z)
        x1 = z * mf * torch.exp(-log_keep_map)
        log_a = self._attention(x1)
        scale = torch.exp(torch.where(mf.bool(), log_keep_map, log_a))
        return z / scale, -self._logdet(log_a, log_keep, per_weight, per_channel)


class ITrans(_MaskedLayer):
    r"""Invertible transformer-based attention, iTrans (second order), between ``N = n x n`` patches.

    ``y_k = M * p_k + (1 - M) * sum_l W_kl(M * x) p_l``, ``W = s (mean_h A_h + c I) / (1 + c)``

    References:
        | Generative Flows with Invertible Attentions (Sukthanker et al., 2022)
        | R. S. Sukthanker, Z. Huang, S. Kumar, R. Timofte, L. Van Gool. CVPR 2022.
        | https://arxiv.org/abs/2106.03959

    The map is cut into an ``n x n`` grid of patches ``p_k`` of ``P = C * ph * pw`` entries each.
    The mask ``M`` is defined in patch-local coordinates, so it is the same in every patch and the
    Jacobian is block-diagonal. Per head ``A_h = softmax(Q_h K_h^T / (d * sqrt(D_k)))`` (``N x N``;
    ``Q = conv1x1(M * x)``, ``K = conv1x1(M * x)`` flattened per patch to ``D_k`` features, ``d > 0``
    learned), ``c = 1 + softplus(theta) > 1``, ``s = exp(log_scale)``.

    ``(mean_h A_h + c I) / (1 + c)`` is strictly diagonally dominant (so invertible, with positive
    determinant) with rows summing to 1: alone (``scale=False``) it can only contract,
    ``det <= 1``. The learned positive scale ``s`` (like the free scale of the paper's ``W = A + oI``)
    lets the layer expand as well, keeping ``det W = s^N det(...) > 0`` for every parameter value;
    it starts at the value that makes the layer volume-preserving for uniform attention
    (``s^N ((c/(1+c))^(N-1)) = 1``). Inverse: ``torch.linalg.solve(W, y2)`` on the unmasked
    entries (``W`` depends on the masked ones only). Log-det: ``(unmasked entries per patch) *
    log det W``.

    Arguments:
        channels: ``C``, the channels of the input ``[B, C, H, W]`` (``H`` and ``W`` multiples of
            ``n``).
        heads: the attention heads averaged in ``W``.
        patches: ``N``, a perfect square (the paper uses 4).
        mask: the mask kind, one of :data:`~attnflow.layers.masks.MASK_KINDS`, applied in every
            patch.
        parity: 0 or 1; alternate it between successive layers.
        key_channels: the query/key width ``D`` per entry (default ``C``).
        scale: learn the scale ``s`` (otherwise ``s = 1``).
        init_mixing: the attention's starting weight ``m = 1/(1+c)`` in
            ``W = s((1 - m) I + m mean_h A_h)``, in ``(0, 0.5)``: 0.1 by default, near the identity
            (``None``: ``theta = 0``, ``m = 0.371``, which starts a deep stack of iTrans layers far
            from volume-preserving).
        seed: the seed of a ``"random"`` mask.

    Example:
        >>> layer = ITrans(4, heads=2, patches=4)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> y, logdet = layer(x)
        >>> logdet.shape
        torch.Size([2])
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 1,
        patches: int = 4,
        mask: str = "spatial_channel",
        parity: int = 0,
        key_channels: int | None = None,
        scale: bool = True,
        init_mixing: float | None = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(channels, mask, parity, seed)
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"ITrans: heads must be a positive int, got {heads!r}")
        grid = math.isqrt(patches) if isinstance(patches, int) and patches > 0 else 0
        if grid * grid != patches:
            raise ValueError(
                f"ITrans: patches must be a perfect square (n x n grid: 1, 4, 9, ...), got {patches!r}"
            )
        self.heads = heads
        self.patches = patches
        self.grid = grid
        self.key_channels = key_channels or channels
        self.query = nn.Conv2d(channels, heads * self.key_channels, 1)
        self.key = nn.Conv2d(channels, heads * self.key_channels, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        # W = s ((1 - m) I + m A) with m = 1/(1 + c), the attention's weight in W: theta starts at 0
        # (c = 1 + ln 2, m = 0.371) or where m = ``init_mixing`` (c = 1/m - 1 > 1)
        if init_mixing is None:
            theta0, c0 = 0.0, 1.0 + math.log(2.0)
        elif not 0.0 < float(init_mixing) < 0.5:
            raise ValueError(f"ITrans: init_mixing must be in (0, 0.5) (then c > 1), got {init_mixing!r}")
        else:
            c0 = 1.0 / float(init_mixing) - 1.0
            theta0 = math.log(math.expm1(c0 - 1.0))  # softplus(theta0) = c0 - 1
        self.theta = nn.Parameter(torch.tensor(theta0))
        self.scaled = bool(scale)
        if self.scaled:  # volume-preserving at uniform attention: s^N (c / (1 + c))^(N - 1) = 1
            start = (patches - 1) / patches * math.log((1.0 + c0) / c0)
            self.log_scale = nn.Parameter(torch.tensor(start))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.heads}, patches={self.patches}, scale={self.scaled}"

    def _buffers_for(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Patch-local mask in patch layout ``[ph, pw, C]`` as bool and as x's dtype, #unmasked."""
        h, w = x.shape[2], x.shape[3]
        key = (h, w, x.device, x.dtype)
        hit = self._cache.get(key)
        if hit is None:
            local = self.mask(h // self.grid, w // self.grid, x.device).permute(1, 2, 0).contiguous()
            hit = (local, local.to(x.dtype), (~local).sum().to(x.dtype))
            self._cache[key] = hit
        return hit

    def _to_patches(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, N, ph, pw, C]`` (row-major grid of patches, channels last)."""
        b, c, h, w = x.shape
        n = self.grid
        x = x.view(b, c, n, h // n, n, w // n).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, n * n, h // n, w // n, c)

    def _from_patches(self, p: Tensor, shape: torch.Size) -> Tensor:
        b, c, h, w = shape
        n = self.grid
        p = p.view(b, n, n, h // n, w // n, c).permute(0, 5, 1, 3, 2, 4)
        return p.reshape(b, c, h, w)

    def weights(self, x1p: Tensor) -> Tensor:
        """The ``[B, N, N]`` mixing matrix ``W`` from the masked patches ``x1p`` ``[B, N, ph, pw, C]``.

        ``Q`` and ``K`` are 1x1 convolutions, i.e. one matmul over the channels of every entry. The
        logits are computed in one of two exact ways, whichever has the smaller intermediates
        (:meth:`_uses_gram`): from ``Q`` and ``K`` themselves (:meth:`_logits_projected`), or from
        the patches' Gram matrices (:meth:`_logits_gram`).
        """
        b, n = x1p.shape[0], self.patches
        xf = x1p.reshape(b, n, -1, x1p.shape[-1])  # [B, N, P, C], P = ph * pw entries per patch
        entries = xf.shape[2]
        logits = self._logits_gram(xf) if self._uses_gram(entries, xf.shape[3]) else self._logits_projected(xf)
        scale = torch.exp(-self.log_temperature) / math.sqrt(entries * self.key_channels)  # 1/(d sqrt(D_k))
        attn = torch.softmax(logits * scale, dim=2).mean(3)  # over the keys m, then the mean over heads
        c = 1.0 + F.softplus(self.theta)
        eye = torch.eye(n, dtype=attn.dtype, device=attn.device)
        mix = (attn + c * eye) / (1.0 + c)
        return mix * torch.exp(self.log_scale).to(mix.dtype) if self.scaled else mix

    def _uses_gram(self, entries: int, channels: int) -> bool:
        """The Gram route when its ``[B, N C, N C]`` Gram matrices are no larger than the
        ``[B, N, P, 2 heads D]`` queries and keys (few patches of many entries: 4 patches of 8x8
        at 16x16); the projected route otherwise (one patch per pixel)."""
        return self.patches * channels * channels <= 2 * entries * self.heads * self.key_channels

    def _projection(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``W_q, W_k`` ``[heads, D, C]`` and ``b_q, b_k`` ``[heads, D]`` in ``dtype``."""
        h, d = self.heads, self.key_channels
        return (self.query.weight.view(h, d, -1).to(dtype), self.key.weight.view(h, d, -1).to(dtype),
                self.query.bias.view(h, d).to(dtype), self.key.bias.view(h, d).to(dtype))

    def _logits_projected(self, xf: Tensor) -> Tensor:
        """``[B, N, M, heads]`` logits ``sum_p <Q_h(x_np), K_h(x_mp)>`` from the projected entries."""
        b, n, entries, _ = xf.shape
        wq, wk, bq, bk = self._projection(xf.dtype)
        weight = torch.cat([wq, wk], dim=0).flatten(0, 1)
        bias = torch.cat([bq, bk], dim=0).flatten()
        qk = torch.nn.functional.linear(xf, weight, bias)  # [B, N, P, 2 * heads * D]
        qk = qk.view(b, n, entries, 2, self.heads, self.key_channels)
        q, k = qk.unbind(3)  # [B, N, P, heads, D] (unbind: one gradient in backward, no zero-fill)
        return torch.einsum("bnphk,bmphk->bnmh", q, k)

    def _logits_gram(self, xf: Tensor) -> Tensor:
        """The same logits from the Gram matrices ``G_b[(n, c), (m, c')] = sum_p x_npc x_mpc'``.

        ``<W_q x + b_q, W_k y + b_k> = x^T M y + u . y + v . x + b_q . b_k`` with
        ``M = W_q^T W_k`` (``C x C`` per head), ``u = W_k^T b_q``, ``v = W_q^T b_k``; summed over
        the ``P`` entries of a patch, ``x^T M y`` becomes ``<M, G>``. One batched product over the
        entries, then only ``C x C``-sized work: no ``[B, N, P, heads, D]`` queries and keys.
        """
        b, n, entries, c = xf.shape
        wq, wk, bq, bk = self._projection(xf.dtype)
        m = torch.einsum("hkc,hkd->cdh", wq, wk).reshape(c * c, self.heads)  # M_h[c, d] as [(c, d), h]
        u = torch.einsum("hk,hkd->dh", bq, wk)  # [C, heads]
        v = torch.einsum("hk,hkd->dh", bk, wq)
        xt = xf.transpose(2, 3).reshape(b, n * c, entries)  # [B, (N, C), P]
        gram = torch.bmm(xt, xt.transpose(1, 2)).view(b, n, c, n, c).transpose(2, 3).reshape(b * n * n, c * c)
        sums = xf.sum(2)  # [B, N, C]: sum over the entries of each patch
        logits = (gram @ m).view(b, n, n, self.heads)
        return logits + (sums @ u).unsqueeze(1) + (sums @ v).unsqueeze(2) + entries * (bq * bk).sum(1)

    def _check(self, x: Tensor) -> None:
        check_input(self, x, self.channels, divisible_by=self.grid)

    def mixing_matrix(self, x: Tensor) -> Tensor:
        """The ``[B, N, N]`` matrix ``W`` that :meth:`forward` mixes the patches of ``x`` with
        (row ``n``: the weights of every patch in output patch ``n``; rows sum to 1)."""
        self._check(x)
        keep_f = self._buffers_for(x)[1]
        return self.weights(self._to_patches(x) * keep_f)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        keep, keep_f, free = self._buffers_for(x)
        xp = self._to_patches(x)  # [B, N, ph, pw, C]
        w_mat = self.weights(xp * keep_f)
        mixed = (w_mat @ xp.flatten(2)).view_as(xp)
        yp = torch.where(keep, xp, mixed)
        logdet = free * torch.linalg.slogdet(w_mat)[1]
        return self._from_patches(yp, x.shape), logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        keep, keep_f, free = self._buffers_for(z)
        zp = self._to_patches(z)
        w_mat = self.weights(zp * keep_f)
        unmixed = torch.linalg.solve(w_mat, zp.flatten(2)).view_as(zp)
        xp = torch.where(keep, zp, unmixed)
        logdet = -free * torch.linalg.slogdet(w_mat)[1]
        return self._from_patches(xp, z.shape), logdet
