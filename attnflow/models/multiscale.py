"""Glow-style multi-scale flow: levels of (squeeze, K steps, split), a top prior, exact decode."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..core import Flow, initialize_data_dependent
from ..layers.dequant import Dequantize, quantize
from ..layers.reshape import Split
from ..priors import Prior

__all__ = ["Level", "MultiScaleFlow", "dequantization_noise"]


class Level(nn.Module):
    """One scale: ``flow`` (a squeeze by ``squeeze`` then the steps) and an optional :class:`Split`.

    ``squeeze`` records the space-to-depth factor inside ``flow`` so latent shapes are known
    without running the model.
    """

    def __init__(self, flow: Flow, split: Split | None = None, *, squeeze: int = 2) -> None:
        super().__init__()
        self.flow = flow
        self.split = split
        self.squeeze = squeeze

    def out_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) after this level's flow (before the split)."""
        c, h, w = shape
        f = self.squeeze
        if h % f or w % f:
            raise ValueError(f"Level: image size {h}x{w} is not divisible by the squeeze factor {f}")
        return c * f * f, h // f, w // f


@contextlib.contextmanager
def dequantization_noise(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily switch the uniform noise of every :class:`Dequantize` in ``model`` on or off."""
    layers = [m for m in model.modules() if isinstance(m, Dequantize)]
    saved = [m.noise for m in layers]
    for m in layers:
        m.noise = enabled
    try:
        yield
    finally:
        for m, s in zip(layers, saved):
            m.noise = s


class MultiScaleFlow(nn.Module):
    """A multi-scale normalizing flow over images.

    ``x`` (integer pixels, ``[B, C, H, W]``) -> ``preprocess`` (dequantisation, log-det
    ``-D ln n_bins``) -> for each level: its flow, then a split that factors ``z2`` out to the
    split's prior given the kept ``z1`` -> the last activation goes to ``top_prior``.

    ``conditioner`` (optional) turns the raw condition (e.g. a low-resolution image) into one
    feature map per level, at that level's resolution; it runs once per call.

    ``log_prob(x, cond)`` is the log-likelihood of the integer image in nats (a variational bound
    under uniform dequantisation), so bits/dim is ``-log_prob / (D ln 2)``.
    """

    def __init__(
        self,
        levels: Sequence[Level],
        top_prior: Prior,
        *,
        preprocess: Flow | None = None,
        conditioner: nn.Module | None = None,
        image_shape: Sequence[int] | None = None,
        n_bins: int = 256,
    ) -> None:
        super().__init__()
        if not levels:
            raise ValueError("MultiScaleFlow: needs at least one level")
        self.levels = nn.ModuleList(levels)
        self.top_prior = top_prior
        self.preprocess = preprocess if preprocess is not None else Dequantize(n_bins)
        self.conditioner = conditioner
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.n_bins = n_bins

    # --- conditioning ------------------------------------------------------------------------
    def level_conditions(self, cond: Tensor | None) -> list[Tensor | None]:
        """One condition per level (``None`` everywhere for an unconditional model)."""
        if self.conditioner is None:
            if cond is not None:
                raise ValueError(
                    f"{type(self).__name__}: this model is unconditional, got a condition of "
                    f"shape {tuple(cond.shape)}"
                )
            return [None] * len(self.levels)
        if cond is None:
            raise ValueError(f"{type(self).__name__}: this model is conditional and needs cond")
        conds = list(self.conditioner(cond))
        if len(conds) != len(self.levels):
            raise ValueError(
                f"{type(self).__name__}: conditioner returned {len(conds)} maps for "
                f"{len(self.levels)} levels"
            )
        return conds

    def _check_image(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__}: expected images [B, C, H, W], got shape {tuple(x.shape)}"
            )
        if self.image_shape is not None and self.conditioner is None:
            if tuple(x.shape[1:]) != self.image_shape:
                raise ValueError(
                    f"{type(self).__name__}: built for images {self.image_shape}, got "
                    f"{tuple(x.shape[1:])}"
                )

    # --- encode / decode ----------------------------------------------------------------------
    def _encode(
        self, x: Tensor, conds: list[Tensor | None]
    ) -> tuple[list[Tensor], list[Tensor | None], Tensor]:
        self._check_image(x)
        h, logdet = self.preprocess(x)
        latents: list[Tensor] = []
        contexts: list[Tensor | None] = []
        for level, c in zip(self.levels, conds):
            h, ld = level.flow(h, c)
            logdet = logdet + ld
            if level.split is not None:
                h, z2 = level.split(h)
                latents.append(z2)
                contexts.append(h)
        latents.append(h)
        contexts.append(None)
        return latents, contexts, logdet

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``x -> (latents, logdet)``: the split latents (finest first) and the top latent last.

        ``logdet`` is the flow's log-det including dequantisation, shape ``[B]``.
        """
        latents, _, logdet = self._encode(x, self.level_conditions(cond))
        return latents, logdet

    def _prior_terms(
        self, latents: list[Tensor], contexts: list[Tensor | None], conds: list[Tensor | None]
    ) -> Tensor:
        logp = self.top_prior.log_prob(latents[-1], context=None, cond=conds[-1])
        i = 0
        for level, c in zip(self.levels, conds):
            if level.split is not None:
                logp = logp + level.split.log_prob(latents[i], contexts[i], c)
                i += 1
        return logp

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """``log p(x | cond)`` in nats, shape ``[B]``."""
        conds = self.level_conditions(cond)
        latents, contexts, logdet = self._encode(x, conds)
        return logdet + self._prior_terms(latents, contexts, conds)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob` (so DistributedDataParallel, which wraps ``forward``, works)."""
        return self.log_prob(x, cond)

    def prior_log_prob(self, latents: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Sum of the priors' log-densities of ``latents``, contexts rebuilt by decoding."""
        conds = self.level_conditions(cond)
        contexts = self._decode(list(latents), conds, return_contexts=True)
        return self._prior_terms(list(latents), contexts, conds)

    def _decode(self, latents: list[Tensor], conds: list[Tensor | None], return_contexts=False):
        n_splits = sum(level.split is not None for level in self.levels)
        if len(latents) != n_splits + 1:
            raise ValueError(
                f"{type(self).__name__}: expected {n_splits + 1} latents, got {len(latents)}"
            )
        h = latents[-1]
        i = n_splits - 1
        contexts: list[Tensor | None] = [None] * (n_splits + 1)
        for level, c in zip(reversed(self.levels), reversed(conds)):
            if level.split is not None:
                contexts[i] = h
                h = level.split.inverse(h, latents[i])
                i -= 1
            h, _ = level.flow.inverse(h, c)
        if return_contexts:
            return contexts
        x, _ = self.preprocess.inverse(h)
        return x

    def decode(self, latents: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Exact inverse of :meth:`encode`: latents -> the (dequantised, continuous) input."""
        return self._decode(list(latents), self.level_conditions(cond))

    # --- sampling -----------------------------------------------------------------------------
    def latent_shapes(self, image_shape: Sequence[int], batch: int) -> list[tuple[int, ...]]:
        """Shapes of ``encode``'s latents for images of ``image_shape`` (C, H, W)."""
        shape = tuple(image_shape)
        shapes = []
        for level in self.levels:
            shape = level.out_shape(shape)
            if level.split is not None:
                shapes.append((batch, level.split.out_channels, *shape[1:]))
                shape = (level.split.keep, *shape[1:])
        shapes.append((batch, *shape))
        return shapes

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        *,
        image_shape: Sequence[int] | None = None,
    ) -> Tensor:
        """Draw ``n`` images (integer pixels as uint8, ``[n, C, H, W]``) at ``temperature``.

        Every Gaussian's standard deviation is scaled by ``temperature``. For a conditional model
        ``cond`` holds one condition per sample (or one, repeated).
        """
        conds = self.level_conditions(cond)
        if cond is not None and cond.shape[0] == 1 and n > 1:  # run the conditioner once
            conds = [None if c is None else c.expand(n, *c.shape[1:]) for c in conds]
        shape = tuple(image_shape) if image_shape is not None else self.sample_image_shape(cond)
        return self._sample_from(conds, n, shape, temperature)

    def _sample_from(
        self, conds: list[Tensor | None], n: int, shape: tuple[int, ...], temperature: float
    ) -> Tensor:
        """Top-down sampling given the per-level conditions: top prior, then every level's split
        prior and inverse flow, then de-quantisation to uint8."""
        top_shape = self.latent_shapes(shape, n)[-1]
        h = self.top_prior.sample(top_shape, context=None, cond=conds[-1], temperature=temperature)
        for level, c in zip(reversed(self.levels), reversed(conds)):
            if level.split is not None:
                h = level.split.inverse(h, level.split.sample(h, c, temperature))
            h, _ = level.flow.inverse(h, c)
        x, _ = self.preprocess.inverse(h)
        return quantize(x, self.n_bins)

    def sample_image_shape(self, cond: Tensor | None) -> tuple[int, ...]:
        """Image shape (C, H, W) produced for ``cond``; unconditional models use ``image_shape``."""
        if self.image_shape is None:
            raise ValueError(f"{type(self).__name__}: image_shape is unknown; pass image_shape=")
        return self.image_shape

    # --- set-up -------------------------------------------------------------------------------
    def initialize(self, x: Tensor, cond: Tensor | None = None) -> None:
        """Data-dependent initialisation (ActNorm) from one batch. Call once, before any DDP wrap."""
        initialize_data_dependent(self, self.log_prob, x, cond)

    def num_dims(self, x: Tensor) -> int:
        return int(math.prod(x.shape[1:]))
