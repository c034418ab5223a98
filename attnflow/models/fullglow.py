"""Full-Glow (Sorkhei et al. 2021) for label-to-photo translation, with the paper's attention.

Two Glows of the same layout (``levels`` x [squeeze, ``steps`` x step, split]):

* the **source** ("left") Glow, unconditional, over the label map ``a``: steps of
  (ActNorm, LU 1x1 conv, affine coupling); it gives ``log p(a)`` and every step's three
  activations;
* the **target** ("right") Glow over the photo ``b``: steps of (:class:`ConditionalActNorm`,
  :class:`ConditionalInvConv1x1`, :class:`CondNetAffineCoupling`), each conditioned on the output of
  the *matching* source layer (actnorm on the source actnorm's output, 1x1 conv on the source 1x1
  conv's, coupling on the source coupling's), plus iMap/iTrans at ``pos1..pos4`` when configured
  (unconditional; consecutive attention layers alternate mask parity).

Densities (nats, ``[B]``): ``log_prob(b, a) = log p(b | a)`` is the target Glow's log-likelihood
given the source activations; ``forward(b, a) = log p(b | a) + lambda * log p(a)`` is the training
objective (the reference's loss ``NLL(b | a) + lambda NLL(a)``, lambda = 1e-4, negated). Both images
are uniformly dequantised (:class:`~attnflow.layers.Dequantize`), so both terms are variational
bounds on the discrete log-probabilities; conditional bits/dim is ``-log_prob / (D ln 2)`` plus
``log2(n_bins)``, the same function as everywhere else.

What the source Glow models: colour label maps are 8-bit RGB images and are treated like photos.
One-hot label maps (``label_mode="onehot"``: ``K`` channels of 0/1) are mapped exactly to the 8-bit
levels ``{0, 255}`` (``255 * onehot``) and dequantised with 256 bins, so ``log p(a)`` is a bound on
the probability of the label tensor viewed as an 8-bit ``K``-channel image (mass on other levels is
simply wasted; the bound stays valid), and the dequantisation noise (1/256 of the range) barely
perturbs the conditioning. With noise on (training, evaluation), the target is conditioned on the
dequantised label map, as in training; :func:`~attnflow.models.dequantization_noise` switches the
noise of both Glows off for exact checks.

Unlike the reference (batch 1 only, batch-averaged log-dets), every log-det is per sample, so any
batch size works and a sample's results do not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ..core import Flow, Sequential
from ..images import CITYSCAPES_COLORS, label_colors
from ..invertible_backprop import invertible_forward
from ..layers import ActNorm, AffineCoupling, Dequantize, InvConv1x1, quantize
from ..layers.conditional import ConditionalActNorm, ConditionalInvConv1x1, CondNetAffineCoupling
from ..priors import DiagonalGaussian
from .base import FlowModel
from .multiscale import Level, MultiScaleFlow, build_levels
from .options import attention_from_config
from .steps import AttentionConfig, make_step

__all__ = ["FullGlow", "SourceGlow", "build_fullglow"]

_ROUTE = {ConditionalActNorm: 0, ConditionalInvConv1x1: 1, CondNetAffineCoupling: 2}


class SourceGlow(MultiScaleFlow):
    """The unconditional "left" Glow over the label map (8-bit levels, see
    :meth:`FullGlow.source_levels`): a :class:`MultiScaleFlow` whose levels are
    ``Sequential(Squeeze, step, ..., step)`` with steps ``Sequential(ActNorm, InvConv1x1,
    AffineCoupling)``, so ``log_prob`` / ``encode`` / ``decode`` / ``sample`` work as for any model.

    :meth:`activations` is the same forward pass that also keeps every step's three outputs
    ``acts[level][step] = (actnorm, 1x1 conv, coupling)`` for the target Glow's conditioning.
    """

    def activations(
        self, x: Tensor, *, density: bool, checkpoint: bool = False
    ) -> tuple[list[list[list[Tensor]]], Tensor | None]:
        """``(acts, log p(x))``; ``log p(x)`` (nats, ``[B]``) only with ``density=True``.

        ``checkpoint`` (under autograd): every layer runs through ``torch.utils.checkpoint``, so of
        a layer only its input is stored (an activation the target Glow keeps anyway) and its inner
        activations (the coupling network's) are recomputed on the backward pass."""
        h, logdet = self.preprocess(x)
        checkpoint = checkpoint and torch.is_grad_enabled()
        acts: list[list[list[Tensor]]] = []
        latents: list[Tensor] = []
        contexts: list[Tensor | None] = []
        for level in self.levels:
            squeeze, *steps = level.flow
            h, _ = squeeze(h)
            level_acts = []
            for step in steps:
                outs = []
                for layer in step:
                    if checkpoint:
                        h, ld = torch.utils.checkpoint.checkpoint(layer, h, use_reentrant=False)
                    else:
                        h, ld = layer(h)
                    logdet = logdet + ld
                    outs.append(h)
                level_acts.append(outs)
            acts.append(level_acts)
            if level.split is not None:
                h, z2 = level.split(h)
                latents.append(z2)
                contexts.append(h)
        if not density:
            return acts, None
        latents.append(h)
        contexts.append(None)
        return acts, logdet + self._prior_terms(latents, contexts, [None] * len(self.levels))


def _routes(level: Level) -> list[tuple[int | None, ...]]:
    """For each step of a target level: which source activation conditions each of its layers."""
    _, *steps = level.flow
    return [tuple(_ROUTE.get(type(layer)) for layer in step) for step in steps]


def _gaussian_priors(level: int, channels: int, context: int) -> DiagonalGaussian:
    return DiagonalGaussian(channels, context_channels=context)


class FullGlow(FlowModel):
    """Conditional flow ``p(photo | labels)`` (target Glow) with a source Glow ``p(labels)``.

    The :class:`~attnflow.models.base.FlowModel` contract with ``cond`` = the label maps, plus
    ``source_log_prob(labels)``. Photos are ``[B, *image_shape]`` integer pixels (as float or
    uint8); labels are ``[B, 3, H, W]`` 8-bit colour maps or ``[B, classes, H, W]`` one-hot maps.
    The training objective is ``log p(photo | labels) + lambda * log p(labels)``.
    """

    task = "translation"
    condition_name = "label map"
    #: the titles of the panels :meth:`visualize` puts side by side (``save_grid(..., header=...)``)
    panel_titles = ("label", "sample", "photo")

    def __init__(
        self,
        image_shape: Sequence[int],
        *,
        label_mode: str = "color",
        classes: int = 34,
        levels: int = 2,
        steps: int = 8,
        hidden: int = 512,
        cond_hidden: int = 128,
        cond_mlp: Sequence[int] = (32, 64, 48),
        cond_grid: int | None = None,
        max_log_scale: float = 3.0,
        attention: AttentionConfig | None = None,
        n_bins: int = 256,
        source_weight: float = 1e-4,
    ) -> None:
        super().__init__()
        if label_mode not in ("color", "onehot"):
            raise ValueError(f"FullGlow: label_mode must be 'color' or 'onehot', got {label_mode!r}")
        if len(image_shape) != 3:
            raise ValueError(f"FullGlow: image_shape must be (C, H, W), got {tuple(image_shape)}")
        c, height, width = (int(v) for v in image_shape)
        if levels < 1 or steps < 1:
            raise ValueError(f"FullGlow: levels and steps must be >= 1, got levels={levels}, steps={steps}")
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"FullGlow: image size {height}x{width} must be divisible by 2**levels = {2 ** levels}"
            )
        if label_mode == "onehot" and (isinstance(classes, bool) or int(classes) < 1):
            raise ValueError(f"FullGlow: classes must be a positive int, got {classes!r}")
        if not math.isfinite(source_weight) or source_weight < 0:
            raise ValueError(f"FullGlow: lambda (source_weight) must be >= 0, got {source_weight!r}")
        self.image_shape = (c, height, width)
        self.label_mode = label_mode
        self.source_channels = 3 if label_mode == "color" else int(classes)
        self.n_bins = int(n_bins)
        self.source_weight = float(source_weight)
        attention = attention or AttentionConfig()
        self.attention_kind = attention.kind

        def source_steps(level: int, channels: int) -> list[Flow]:
            return [
                Sequential(ActNorm(channels), InvConv1x1(channels), AffineCoupling(channels, hidden=hidden))
                for _ in range(steps)
            ]

        src_levels, src_top = build_levels(
            self.source_channels, levels, steps=source_steps, prior=_gaussian_priors
        )

        def target_steps(level: int, channels: int) -> list[Flow]:
            sch = src_levels[level].channels
            size = (height >> (level + 1), width >> (level + 1))
            net = dict(size=None if cond_grid else size, grid=cond_grid, hidden=tuple(cond_mlp))
            return [
                make_step(
                    ConditionalActNorm(channels, sch, max_log_scale=max_log_scale, **net),
                    ConditionalInvConv1x1(channels, sch, max_log_scale=max_log_scale, **net),
                    [CondNetAffineCoupling(channels, sch, hidden=hidden, cond_hidden=cond_hidden)],
                    attention.make(channels, level),
                    attention.position,
                )
                for _ in range(steps)
            ]

        tgt_levels, tgt_top = build_levels(c, levels, steps=target_steps, prior=_gaussian_priors)
        self.source = SourceGlow(
            src_levels, src_top, preprocess=Dequantize(256),
            image_shape=(self.source_channels, height, width), n_bins=256,
        )
        self.preprocess = Dequantize(self.n_bins)
        self.levels = nn.ModuleList(tgt_levels)
        self.top_prior = tgt_top
        self.routes = [_routes(level) for level in tgt_levels]

    # --- inputs ------------------------------------------------------------------------------
    def _data_mismatch(self, x: Tensor, cond: Tensor | None) -> str:
        return f"expected photos [B, {', '.join(map(str, self.image_shape))}], got {tuple(x.shape)}"

    def check_condition(self, labels: Tensor | None, batch: int | None = None) -> Tensor:
        expected = (self.source_channels, *self.image_shape[1:])
        what = (
            "colour label maps [B, 3, H, W] (label_mode=color)"
            if self.label_mode == "color"
            else f"one-hot label maps [B, {self.source_channels}, H, W] (label_mode=onehot)"
        )
        if labels is None:
            raise ValueError(f"FullGlow: this model is conditional and needs {what}, got None")
        if not isinstance(labels, Tensor) or labels.dim() != 4 or tuple(labels.shape[1:]) != expected:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            hint = ""
            if isinstance(labels, Tensor) and labels.dim() == 4 and labels.shape[2:] == expected[1:]:
                hint = (
                    "; the data's label_mode probably differs from the model's "
                    "(set model.cond.label_mode / classes to match data.options.label_mode)"
                )
            raise ValueError(f"FullGlow: expected {what} of shape [B, {', '.join(map(str, expected))}], got {got}{hint}")
        if batch is not None and labels.shape[0] != batch:
            raise ValueError(f"FullGlow: {labels.shape[0]} label maps for {batch} photos")
        return labels

    def source_levels(self, labels: Tensor) -> Tensor:
        """The label map as 8-bit levels: colour maps as they are, one-hot maps as ``255 * onehot``."""
        return labels if self.label_mode == "color" else labels * 255

    def _source(self, labels: Tensor, density: bool) -> tuple[list, Tensor | None]:
        return self.source.activations(
            self.source_levels(labels), density=density, checkpoint=self._invertible_now()
        )

    # --- target flow ---------------------------------------------------------------------------
    def _forward_levels(self, photo: Tensor, acts: list) -> tuple[list[Tensor], list[Tensor | None], Tensor]:
        h, logdet = self.preprocess(photo)
        latents: list[Tensor] = []
        contexts: list[Tensor | None] = []
        invertible = self._invertible_now()
        for level, routes, level_acts in zip(self.levels, self.routes, acts):
            squeeze, *steps = level.flow
            h, _ = squeeze(h)
            if invertible:  # every layer its own step: its own condition, log-dets added per layer
                chain = [
                    [(layer, None if src is None else outs[src])]
                    for step, route, outs in zip(steps, routes, level_acts)
                    for layer, src in zip(step, route)
                ]
                h, logdet = invertible_forward(chain, h, logdet)
            else:
                for step, route, outs in zip(steps, routes, level_acts):
                    for layer, src in zip(step, route):
                        h, ld = layer(h, None if src is None else outs[src])
                        logdet = logdet + ld
            if level.split is not None:
                h, z2 = level.split(h)
                latents.append(z2)
                contexts.append(h)
        latents.append(h)
        contexts.append(None)
        return latents, contexts, logdet

    def _prior_terms(self, latents: list[Tensor], contexts: list[Tensor | None]) -> Tensor:
        logp = self.top_prior.log_prob(latents[-1])
        splits = [level.split for level in self.levels if level.split is not None]
        for split, z2, ctx in zip(splits, latents, contexts):
            logp = logp + split.log_prob(z2, ctx)
        return logp

    def _inverse_level(self, i: int, h: Tensor, level_acts: list) -> Tensor:
        squeeze, *steps = self.levels[i].flow
        for step, route, outs in zip(reversed(steps), reversed(self.routes[i]), reversed(level_acts)):
            for layer, src in zip(reversed(step), reversed(route)):
                h, _ = layer.inverse(h, None if src is None else outs[src])
        h, _ = squeeze.inverse(h)
        return h

    def _inverse_levels(self, latents: list[Tensor], acts: list, return_contexts: bool = False):
        n_splits = len(self.levels) - 1
        h = latents[-1]
        contexts: list[Tensor | None] = [None] * (n_splits + 1)
        for i in reversed(range(len(self.levels))):
            level = self.levels[i]
            if level.split is not None:
                contexts[i] = h
                h = level.split.inverse(h, latents[i])
            h = self._inverse_level(i, h, acts[i])
        if return_contexts:
            return contexts
        x, _ = self.preprocess.inverse(h)
        return x

    # --- the contract's hooks ------------------------------------------------------------------
    def _log_prob(self, photo: Tensor, labels: Tensor | None) -> Tensor:
        acts, _ = self._source(labels, density=False)
        latents, contexts, logdet = self._forward_levels(photo, acts)
        return logdet + self._prior_terms(latents, contexts)

    def _objective_log_prob(self, photo: Tensor, labels: Tensor | None) -> Tensor:
        """``log p(photo | labels) + lambda * log p(labels)``; gradients of the conditional term
        also reach the source Glow through its activations."""
        acts, source_logp = self._source(labels, density=True)
        latents, contexts, logdet = self._forward_levels(photo, acts)
        # lambda = 0 still multiplies: every parameter stays in the graph (DDP needs that)
        return logdet + self._prior_terms(latents, contexts) + self.source_weight * source_logp

    def source_log_prob(self, labels: Tensor) -> Tensor:
        """``log p(labels)`` of the source Glow in nats, ``[B]``."""
        return self._source(self.check_condition(labels), density=True)[1]

    def _prior_log_prob(self, latents: list[Tensor], labels: Tensor | None) -> Tensor:
        acts, _ = self._source(labels, density=False)
        return self._prior_terms(latents, self._inverse_levels(latents, acts, return_contexts=True))

    def _encode(self, photo: Tensor, labels: Tensor | None) -> tuple[list[Tensor], Tensor]:
        acts, _ = self._source(labels, density=False)
        latents, _, logdet = self._forward_levels(photo, acts)
        return latents, logdet

    def _decode(self, latents: list[Tensor], labels: Tensor | None) -> Tensor:
        acts, _ = self._source(labels, density=False)
        return self._inverse_levels(latents, acts)

    def latent_shapes(self, batch: int, cond: Tensor | None = None) -> list[tuple[int, ...]]:
        c, h, w = self.image_shape
        shapes = []
        for level in self.levels:
            c, h, w = 4 * c, h // 2, w // 2
            if level.split is not None:
                shapes.append((batch, level.split.out_channels, h, w))
                c = level.split.keep
        shapes.append((batch, c, h, w))
        return shapes

    def _sample(self, n: int, labels: Tensor | None, temperature: float) -> Tensor:
        acts, _ = self._source(labels, density=False)
        if labels.shape[0] == 1 and n > 1:  # run the source Glow once, share its activations
            acts = [[[a.expand(n, *a.shape[1:]) for a in outs] for outs in lvl] for lvl in acts]
        shapes = self.latent_shapes(n)
        h = self.top_prior.sample(shapes[-1], temperature=temperature)
        for i in reversed(range(len(self.levels))):
            level = self.levels[i]
            if level.split is not None:
                h = level.split.inverse(h, level.split.sample(h, None, temperature))
            h = self._inverse_level(i, h, acts[i])
        x, _ = self.preprocess.inverse(h)
        return quantize(x, self.n_bins)

    # --- helpers ---------------------------------------------------------------------------------
    def example_batch(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Random ``(photos, label maps)`` of the right kind (for benchmarks)."""
        _, h, w = self.image_shape
        gen = torch.Generator().manual_seed(0)
        photos = torch.randint(0, self.n_bins, (batch, *self.image_shape), generator=gen).float()
        if self.label_mode == "color":
            ids = torch.randint(0, len(CITYSCAPES_COLORS), (batch, h // 8 + 1, w // 8 + 1), generator=gen)
            colors = torch.from_numpy(CITYSCAPES_COLORS)[ids].permute(0, 3, 1, 2).float()
            labels = torch.nn.functional.interpolate(colors, scale_factor=8, mode="nearest")[:, :, :h, :w]
        else:
            ids = torch.randint(0, self.source_channels, (batch, h, w), generator=gen)
            labels = torch.nn.functional.one_hot(ids, self.source_channels).permute(0, 3, 1, 2).float()
        return photos.to(device), labels.to(device)

    def visualize(self, labels: Tensor | None, samples: Tensor, photos: Tensor | None = None) -> Tensor:
        """``[n, 3, H, 3W]`` uint8 pictures: label map (coloured) | sample | true photo, side by side
        (``[n, 3, H, 2W]``, label | sample, without ``photos``)."""
        if labels.shape[0] == 1 and samples.shape[0] > 1:
            labels = labels.expand(samples.shape[0], *labels.shape[1:])
        left = label_colors(labels.cpu(), self.label_mode).to(samples.device)
        panels = [left, samples.to(torch.uint8)]
        if photos is not None:
            panels.append(photos.round().clamp(0, 255).to(torch.uint8).to(samples.device))
        return torch.cat(panels, dim=3)

    def extra_repr(self) -> str:
        return (
            f"image_shape={self.image_shape}, label_mode={self.label_mode!r}, "
            f"source_channels={self.source_channels}, lambda={self.source_weight}, "
            f"attention={self.attention_kind!r}"
        )


# ------------------------------------------------------------------------------------------------
# builder
# ------------------------------------------------------------------------------------------------


def build_fullglow(m: dict) -> FullGlow:
    """``FullGlow`` from a checked ``model`` section (``backbone: fullglow``; its keys:
    ``BACKBONES["fullglow"]`` in :mod:`attnflow.config.schema`)."""
    o = m["cond"]
    return FullGlow(
        m["image_shape"],
        label_mode=o["label_mode"],
        classes=o["classes"],
        levels=m["levels"],
        steps=m["steps"],
        hidden=m["hidden"],
        cond_hidden=o["cond_hidden"],
        cond_mlp=o["cond_mlp"],
        cond_grid=o["cond_grid"],
        max_log_scale=o["max_log_scale"],
        attention=attention_from_config(m),
        n_bins=m["n_bins"],
        source_weight=o["lambda"],
    )
