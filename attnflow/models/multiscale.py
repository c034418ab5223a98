"""Multi-scale flows: levels of (squeeze, K steps, split), a top prior, exact decode, and the one
level builder every backbone uses (:func:`build_levels`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn

from ..core import Flow, Sequential, no_logdet
from ..invertible_backprop import sequential_invertible
from ..layers import Dequantize, Squeeze, quantize
from ..nn import run_network
from ..priors import Prior, Split
from .base import FlowModel

__all__ = ["Level", "MultiScaleFlow", "build_levels", "dequantization_noise", "StepFactory", "PriorFactory"]


class Level(nn.Module):
    """One scale: ``flow`` (a squeeze by ``squeeze`` then the steps) and an optional :class:`Split`.

    ``squeeze`` records the space-to-depth factor inside ``flow`` so latent shapes are known
    without running the model.
    """

    def __init__(
        self, flow: Flow, split: Split | None = None, *, squeeze: int = 2, channels: int | None = None
    ) -> None:
        super().__init__()
        self.flow = flow
        self.split = split
        self.squeeze = squeeze
        self.channels = channels  # channels the steps work on (after the squeeze), if known

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


StepFactory = Callable[[int, int], Sequence[Flow]]
"""``(level, channels) -> the level's steps`` (after its squeeze), ``level`` 0-based from the finest."""

PriorFactory = Callable[[int, int, int], Prior]
"""``(level, channels, context_channels) -> prior``; ``context_channels`` is 0 for the top prior."""


def build_levels(
    in_channels: int,
    levels: int,
    *,
    steps: StepFactory,
    prior: PriorFactory,
    split: bool | Callable[[int], bool] = True,
    squeeze: int = 2,
) -> tuple[list[Level], Prior]:
    """The levels of a multi-scale flow and its top prior.

    Level ``l`` (0-based from the finest): squeeze by ``squeeze`` (channels x ``squeeze**2``), the
    steps ``steps(l, channels)``, then, where ``split(l)`` holds (default: every level but the
    last), a :class:`~attnflow.priors.Split` that keeps ``ceil(C/2)`` channels and gives the other
    half to ``prior(l, C // 2, ceil(C/2))``. The top latent goes to ``prior(levels - 1, C, 0)``.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"build_levels: levels must be a positive int, got {levels!r}")
    split_at = (lambda level: split and level < levels - 1) if isinstance(split, bool) else split
    built: list[Level] = []
    channels = in_channels
    for level in range(levels):
        channels *= squeeze * squeeze
        flow = Sequential(Squeeze(squeeze), *steps(level, channels))
        sp = None
        if split_at(level):
            keep = channels - channels // 2
            sp = Split(channels, prior(level, channels - keep, keep), keep=keep)
        built.append(Level(flow, sp, squeeze=squeeze, channels=channels))
        if sp is not None:
            channels = sp.keep
    return built, prior(levels - 1, channels, 0)


class MultiScaleFlow(FlowModel):
    """A multi-scale normalizing flow over images (:class:`~attnflow.models.base.FlowModel`).

    ``x`` (integer pixels, ``[B, C, H, W]``) -> ``preprocess`` (dequantisation, log-det
    ``-D ln n_bins``) -> for each level: its flow, then a split that factors ``z2`` out to the
    split's prior given the kept ``z1`` -> the last activation goes to ``top_prior``.

    ``conditioner`` (optional, for conditional subclasses) turns the raw condition (e.g. a
    low-resolution image) into one feature map per level, at that level's resolution; it runs once
    per call.
    """

    task = "generation"

    def __init__(
        self,
        levels: Sequence[Level],
        top_prior: Prior,
        *,
        image_shape: Sequence[int],
        preprocess: Flow | None = None,
        conditioner: nn.Module | None = None,
        n_bins: int = 256,
    ) -> None:
        super().__init__()
        if not levels:
            raise ValueError("MultiScaleFlow: needs at least one level")
        self.levels = nn.ModuleList(levels)
        self.top_prior = top_prior
        self.preprocess = preprocess if preprocess is not None else Dequantize(n_bins)
        self.conditioner = conditioner
        self.image_shape = tuple(int(v) for v in image_shape)
        self.n_bins = n_bins

    # --- conditioning ------------------------------------------------------------------------
    def level_conditions(self, cond: Tensor | None) -> list[Tensor | None]:
        """One condition per level (``None`` everywhere for an unconditional model)."""
        if self.conditioner is None:
            return [None] * len(self.levels)
        conds = list(run_network(self.conditioner, cond))
        if len(conds) != len(self.levels):
            raise ValueError(
                f"{type(self).__name__}: conditioner returned {len(conds)} maps for "
                f"{len(self.levels)} levels"
            )
        return conds

    # --- geometry -------------------------------------------------------------------------------
    def latent_shapes(self, batch: int, cond: Tensor | None = None) -> list[tuple[int, ...]]:
        return self.latent_shapes_for(self.data_shape(cond), batch)

    def latent_shapes_for(self, image_shape: Sequence[int], batch: int) -> list[tuple[int, ...]]:
        """Shapes of the latents of ``batch`` images of shape ``(C, H, W)``."""
        shape = tuple(image_shape)
        shapes = []
        for level in self.levels:
            shape = level.out_shape(shape)
            if level.split is not None:
                shapes.append((batch, level.split.out_channels, *shape[1:]))
                shape = (level.split.keep, *shape[1:])
        shapes.append((batch, *shape))
        return shapes

    # --- the hooks of the contract -------------------------------------------------------------
    def _forward_levels(
        self, x: Tensor, conds: list[Tensor | None]
    ) -> tuple[list[Tensor], list[Tensor | None], Tensor]:
        h, logdet = self.preprocess(x)
        latents: list[Tensor] = []
        contexts: list[Tensor | None] = []
        invertible = self._invertible_now()
        for level, c in zip(self.levels, conds):
            if invertible and isinstance(level.flow, Sequential):
                h, ld = sequential_invertible(level.flow, h, c)
            else:
                h, ld = level.flow(h, c)
            logdet = logdet + ld
            if level.split is not None:
                h, z2 = level.split(h)
                latents.append(z2)
                contexts.append(h)
        latents.append(h)
        contexts.append(None)
        return latents, contexts, logdet

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

    def _encode(self, x: Tensor, cond: Tensor | None) -> tuple[list[Tensor], Tensor]:
        latents, _, logdet = self._forward_levels(x, self.level_conditions(cond))
        return latents, logdet

    def _log_prob(self, x: Tensor, cond: Tensor | None) -> Tensor:
        conds = self.level_conditions(cond)
        latents, contexts, logdet = self._forward_levels(x, conds)
        return logdet + self._prior_terms(latents, contexts, conds)

    def _prior_log_prob(self, latents: list[Tensor], cond: Tensor | None) -> Tensor:
        conds = self.level_conditions(cond)
        contexts = self._inverse_levels(latents, conds, return_contexts=True)
        return self._prior_terms(latents, contexts, conds)

    def _inverse_levels(self, latents: list[Tensor], conds: list[Tensor | None], return_contexts=False):
        n_splits = len(latents) - 1
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

    def _decode(self, latents: list[Tensor], cond: Tensor | None) -> Tensor:
        return self._inverse_levels(latents, self.level_conditions(cond))

    def _sample(self, n: int, cond: Tensor | None, temperature: float) -> Tensor:
        conds = self.level_conditions(cond)
        if cond is not None and cond.shape[0] == 1 and n > 1:  # the conditioner ran once
            conds = [None if c is None else c.expand(n, *c.shape[1:]) for c in conds]
        return self.sample_from(conds, n, self.data_shape(cond), temperature)

    def sample_from(
        self, conds: list[Tensor | None], n: int, shape: Sequence[int], temperature: float
    ) -> Tensor:
        """Top-down sampling given the per-level conditions (from :meth:`level_conditions`): top
        prior, then every level's split prior and inverse flow, then quantisation to uint8."""
        top_shape = self.latent_shapes_for(shape, n)[-1]
        with no_logdet():  # the flows' log-dets are discarded here
            h = self.top_prior.sample(top_shape, context=None, cond=conds[-1], temperature=temperature)
            for level, c in zip(reversed(self.levels), reversed(conds)):
                if level.split is not None:
                    h = level.split.inverse(h, level.split.sample(h, c, temperature))
                h, _ = level.flow.inverse(h, c)
            x, _ = self.preprocess.inverse(h)
        return quantize(x, self.n_bins)

