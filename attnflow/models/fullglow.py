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
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..core import Sequential, initialize_data_dependent
from ..layers import ActNorm, AffineCoupling, InvConv1x1, Split, Squeeze
from ..layers.conditional import CondNetAffineCoupling, ConditionalActNorm, ConditionalInvConv1x1
from ..layers.dequant import Dequantize, quantize
from ..priors import DiagonalGaussian
from .build import attention_from_config, register_backbone
from .build import cond_options as _cond_options
from .multiscale import Level, MultiScaleFlow
from .steps import AttentionConfig, make_step

__all__ = [
    "FullGlow",
    "SourceGlow",
    "build_fullglow",
    "label_colors",
    "CITYSCAPES_COLORS",
    "COND_DEFAULTS",
]

#: Cityscapes label id (0..33) -> colour, from cityscapesScripts ``labels.py`` (for pictures only).
CITYSCAPES_COLORS = np.array(
    [
        (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
        (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
        (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
        (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
        (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

#: ``model.cond`` keys of the ``fullglow`` backbone and their defaults.
COND_DEFAULTS: dict[str, Any] = {
    "label_mode": "color",  # color: uint8 RGB label maps; onehot: float [classes, H, W]
    "classes": 34,  # one-hot channels (Cityscapes label ids 0..33); ignored for color
    "lambda": 1.0e-4,  # weight of log p(labels) in the training objective
    "cond_hidden": 128,  # width of the coupling's conditioning convs (reference: 128)
    "cond_mlp": [32, 64, 48],  # MLP of the actnorm / 1x1-conv conditioning nets (reference)
    "cond_grid": None,  # None: flatten the H x W map (reference); g: average-pool to g x g
    "max_log_scale": 3.0,  # bound of the condition-dependent log-scales
}

_ROUTE = {ConditionalActNorm: 0, ConditionalInvConv1x1: 1, CondNetAffineCoupling: 2}


class SourceGlow(MultiScaleFlow):
    """The unconditional "left" Glow over the label map (8-bit levels, see
    :meth:`FullGlow.source_levels`): a :class:`MultiScaleFlow` whose levels are
    ``Sequential(Squeeze, step, ..., step)`` with steps ``Sequential(ActNorm, InvConv1x1,
    AffineCoupling)``, so ``log_prob`` / ``encode`` / ``decode`` / ``sample`` work as for any model.

    :meth:`activations` is the same forward pass that also keeps every step's three outputs
    ``acts[level][step] = (actnorm, 1x1 conv, coupling)`` for the target Glow's conditioning.
    """

    def activations(self, x: Tensor, *, density: bool) -> tuple[list[list[list[Tensor]]], Tensor | None]:
        """``(acts, log p(x))``; ``log p(x)`` (nats, ``[B]``) only with ``density=True``."""
        h, logdet = self.preprocess(x)
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


class _TargetLevel(nn.Module):
    """Target steps, their routes (which source activation conditions each layer), the split."""

    def __init__(self, steps: list[Sequential], split: Split | None) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.split = split
        self.routes = [tuple(_ROUTE.get(type(layer)) for layer in step) for step in steps]


class FullGlow(nn.Module):
    """Conditional flow ``p(photo | labels)`` (target Glow) with a source Glow ``p(labels)``.

    Public API (mirrors :class:`~attnflow.models.MultiScaleFlow`; ``labels`` is the condition):
    ``log_prob(photo, labels)``, ``forward(photo, labels)`` (training objective),
    ``source_log_prob(labels)``, ``encode``/``decode`` (exact), ``sample(n, labels, temperature)``,
    ``initialize(photo, labels)``, ``prior_log_prob``, ``latent_shapes``, ``visualize``,
    ``example_condition``, ``n_bins``, ``image_shape``, ``conditioner`` (the source Glow).
    Photos are ``[B, *image_shape]`` integer pixels (as float or uint8); labels are
    ``[B, 3, H, W]`` 8-bit colour maps or ``[B, classes, H, W]`` one-hot maps.
    """

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

        src_levels: list[Level] = []
        tgt_levels: list[_TargetLevel] = []
        ch, sch, h, w = c, self.source_channels, height, width
        for level in range(levels):
            ch, sch, h, w = 4 * ch, 4 * sch, h // 2, w // 2
            net = dict(size=None if cond_grid else (h, w), grid=cond_grid, hidden=tuple(cond_mlp))
            src_steps, tgt_steps = [], []
            for _ in range(steps):
                src_steps.append(Sequential(ActNorm(sch), InvConv1x1(sch), AffineCoupling(sch, hidden=hidden)))
                tgt_steps.append(
                    make_step(
                        ConditionalActNorm(ch, sch, max_log_scale=max_log_scale, **net),
                        ConditionalInvConv1x1(ch, sch, max_log_scale=max_log_scale, **net),
                        [CondNetAffineCoupling(ch, sch, hidden=hidden, cond_hidden=cond_hidden)],
                        attention.make(ch, level),
                        attention.position,
                    )
                )
            last = level == levels - 1
            src_levels.append(Level(Sequential(Squeeze(2), *src_steps), None if last else _split(sch)))
            tgt_levels.append(_TargetLevel(tgt_steps, None if last else _split(ch)))
            if not last:
                ch, sch = ch - ch // 2, sch - sch // 2
        self.source = SourceGlow(
            src_levels, DiagonalGaussian(sch), preprocess=Dequantize(256),
            image_shape=(self.source_channels, height, width), n_bins=256,
        )
        self.preprocess = Dequantize(self.n_bins)
        self.squeeze = Squeeze(2)
        self.levels = nn.ModuleList(tgt_levels)
        self.top_prior = DiagonalGaussian(ch)

    # --- inputs ------------------------------------------------------------------------------
    @property
    def conditioner(self) -> SourceGlow:
        """The source Glow (non-None: this model is conditional)."""
        return self.source

    def _check_photo(self, photo: Tensor) -> None:
        if not isinstance(photo, Tensor) or photo.dim() != 4 or tuple(photo.shape[1:]) != self.image_shape:
            got = tuple(photo.shape) if isinstance(photo, Tensor) else type(photo).__name__
            raise ValueError(f"FullGlow: expected photos [B, {', '.join(map(str, self.image_shape))}], got {got}")

    def _check_labels(self, labels: Tensor | None, batch: int | None = None) -> Tensor:
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
        return self.source.activations(self.source_levels(labels), density=density)

    # --- target flow ---------------------------------------------------------------------------
    def _encode(self, photo: Tensor, acts: list) -> tuple[list[Tensor], list[Tensor | None], Tensor]:
        h, logdet = self.preprocess(photo)
        latents: list[Tensor] = []
        contexts: list[Tensor | None] = []
        for level, level_acts in zip(self.levels, acts):
            h, _ = self.squeeze(h)
            for step, route, outs in zip(level.steps, level.routes, level_acts):
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

    def _inverse_level(self, level: _TargetLevel, h: Tensor, level_acts: list) -> Tensor:
        for step, route, outs in zip(reversed(level.steps), reversed(level.routes), reversed(level_acts)):
            for layer, src in zip(reversed(step), reversed(route)):
                h, _ = layer.inverse(h, None if src is None else outs[src])
        h, _ = self.squeeze.inverse(h)
        return h

    def _decode(self, latents: list[Tensor], acts: list, return_contexts: bool = False):
        n_splits = len(self.levels) - 1
        if len(latents) != n_splits + 1:
            raise ValueError(f"FullGlow: expected {n_splits + 1} latents, got {len(latents)}")
        h = latents[-1]
        contexts: list[Tensor | None] = [None] * (n_splits + 1)
        for i in reversed(range(len(self.levels))):
            level = self.levels[i]
            if level.split is not None:
                contexts[i] = h
                h = level.split.inverse(h, latents[i])
            h = self._inverse_level(level, h, acts[i])
        if return_contexts:
            return contexts
        x, _ = self.preprocess.inverse(h)
        return x

    # --- densities -----------------------------------------------------------------------------
    def log_prob(self, photo: Tensor, labels: Tensor | None = None) -> Tensor:
        """``log p(photo | labels)`` in nats, ``[B]`` (the conditional likelihood only)."""
        self._check_photo(photo)
        acts, _ = self._source(self._check_labels(labels, photo.shape[0]), density=False)
        latents, contexts, logdet = self._encode(photo, acts)
        return logdet + self._prior_terms(latents, contexts)

    def source_log_prob(self, labels: Tensor) -> Tensor:
        """``log p(labels)`` of the source Glow in nats, ``[B]``."""
        return self._source(self._check_labels(labels), density=True)[1]

    def forward(self, photo: Tensor, labels: Tensor | None = None) -> Tensor:
        """Training objective ``log p(photo | labels) + lambda * log p(labels)``, ``[B]``.

        Through ``forward`` so that DistributedDataParallel sees it; gradients of the conditional
        term also reach the source Glow through its activations.
        """
        self._check_photo(photo)
        acts, source_logp = self._source(self._check_labels(labels, photo.shape[0]), density=True)
        latents, contexts, logdet = self._encode(photo, acts)
        # lambda = 0 still multiplies: every parameter stays in the graph (DDP needs that)
        return logdet + self._prior_terms(latents, contexts) + self.source_weight * source_logp

    def prior_log_prob(self, latents: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        """Sum of the target priors' log-densities of ``latents`` (contexts rebuilt by decoding)."""
        latents = list(latents)
        acts, _ = self._source(self._check_labels(labels, latents[-1].shape[0]), density=False)
        contexts = self._decode(latents, acts, return_contexts=True)
        return self._prior_terms(latents, contexts)

    # --- encode / decode / sample --------------------------------------------------------------
    def encode(self, photo: Tensor, labels: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``photo -> (latents, logdet)`` given ``labels``: split latents (finest first), top last;
        ``logdet`` of the target flow including its dequantisation, ``[B]``."""
        self._check_photo(photo)
        acts, _ = self._source(self._check_labels(labels, photo.shape[0]), density=False)
        latents, _, logdet = self._encode(photo, acts)
        return latents, logdet

    def decode(self, latents: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        """Exact inverse of :meth:`encode`: latents -> the dequantised (continuous) photo."""
        latents = list(latents)
        acts, _ = self._source(self._check_labels(labels, latents[-1].shape[0]), density=False)
        return self._decode(latents, acts)

    def latent_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of :meth:`encode`'s latents for ``batch`` photos."""
        c, h, w = self.image_shape
        shapes = []
        for level in self.levels:
            c, h, w = 4 * c, h // 2, w // 2
            if level.split is not None:
                shapes.append((batch, level.split.out_channels, h, w))
                c = level.split.keep
        shapes.append((batch, c, h, w))
        return shapes

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """``n`` photos (uint8 ``[n, C, H, W]``) for ``labels``: one label map per photo, or one
        label map (batch 1) for all ``n``. Every Gaussian's std is scaled by ``temperature``."""
        labels = self._check_labels(labels)
        if labels.shape[0] not in (1, n):
            raise ValueError(f"FullGlow.sample: give 1 or n={n} label maps, got {labels.shape[0]}")
        acts, _ = self._source(labels, density=False)
        if labels.shape[0] == 1 and n > 1:  # run the source Glow once, share its activations
            acts = [[[a.expand(n, *a.shape[1:]) for a in outs] for outs in lvl] for lvl in acts]
        shapes = self.latent_shapes(n)
        h = self.top_prior.sample(shapes[-1], temperature=temperature)
        for i in reversed(range(len(self.levels))):
            level = self.levels[i]
            if level.split is not None:
                h = level.split.inverse(h, level.split.sample(h, None, temperature))
            h = self._inverse_level(level, h, acts[i])
        x, _ = self.preprocess.inverse(h)
        return quantize(x, self.n_bins)

    def sample_image_shape(self, cond: Tensor | None = None) -> tuple[int, ...]:
        return self.image_shape

    # --- set-up and helpers --------------------------------------------------------------------
    def initialize(self, photo: Tensor, labels: Tensor | None = None) -> None:
        """Data-dependent initialisation of both Glows from one batch (before any DDP wrap)."""
        initialize_data_dependent(self, self.forward, photo, labels)

    def num_dims(self, x: Tensor) -> int:
        return int(math.prod(x.shape[1:]))

    def example_condition(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """Random label maps of the right kind (for benchmarks)."""
        _, h, w = self.image_shape
        gen = torch.Generator().manual_seed(0)
        if self.label_mode == "color":
            ids = torch.randint(0, len(CITYSCAPES_COLORS), (batch, h // 8 + 1, w // 8 + 1), generator=gen)
            colors = torch.from_numpy(CITYSCAPES_COLORS)[ids].permute(0, 3, 1, 2).float()
            return torch.nn.functional.interpolate(colors, scale_factor=8, mode="nearest")[:, :, :h, :w].to(device)
        ids = torch.randint(0, self.source_channels, (batch, h, w), generator=gen)
        return torch.nn.functional.one_hot(ids, self.source_channels).permute(0, 3, 1, 2).float().to(device)

    def visualize(self, labels: Tensor, samples: Tensor) -> Tensor:
        """``[n, 3, H, 2W]`` uint8 pictures: label map (coloured) | photo, side by side."""
        if labels.shape[0] == 1 and samples.shape[0] > 1:
            labels = labels.expand(samples.shape[0], *labels.shape[1:])
        left = label_colors(labels.cpu(), self.label_mode).to(samples.device)
        return torch.cat([left, samples.to(torch.uint8)], dim=3)

    def extra_repr(self) -> str:
        return (
            f"image_shape={self.image_shape}, label_mode={self.label_mode!r}, "
            f"source_channels={self.source_channels}, lambda={self.source_weight}, "
            f"attention={self.attention_kind!r}"
        )


def _split(channels: int) -> Split:
    keep = channels - channels // 2
    return Split(channels, DiagonalGaussian(channels - keep, context_channels=keep), keep=keep)


def label_colors(labels: Tensor, label_mode: str) -> Tensor:
    """Label maps as uint8 RGB ``[B, 3, H, W]``: colour maps as they are; one-hot maps through the
    Cityscapes palette (34 classes) or the synthetic-pairs palette (argmax; no class -> black)."""
    if label_mode == "color":
        return labels.round().clamp(0, 255).to(torch.uint8)
    from ..data.cityscapes import SYNTHETIC_PALETTE

    k = labels.shape[1]
    palette = CITYSCAPES_COLORS if k == len(CITYSCAPES_COLORS) else SYNTHETIC_PALETTE
    if k > len(palette):  # many classes: a deterministic spread of colours
        rng = np.random.default_rng(0)
        palette = np.concatenate([palette, rng.integers(0, 256, (k - len(palette), 3), dtype=np.uint8)])
    table = torch.cat([torch.from_numpy(palette[:k].copy()), torch.zeros(1, 3, dtype=torch.uint8)])
    ids = torch.where(labels.amax(1) > 0.5, labels.argmax(1), torch.full_like(labels.argmax(1), k))
    return table[ids].permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------
# builder
# ------------------------------------------------------------------------------------------------


def cond_options(m: dict) -> dict[str, Any]:
    """``model.cond`` merged over :data:`COND_DEFAULTS`; unknown keys are a ConfigError."""
    return _cond_options(m, COND_DEFAULTS, "fullglow")


@register_backbone("fullglow")
def build_fullglow(m: dict) -> FullGlow:
    """``FullGlow`` from a config's ``model`` section (``backbone: fullglow``)."""
    if m.get("prior", "gaussian") != "gaussian":
        raise ConfigError(
            f"model.prior must be 'gaussian' for backbone fullglow (Glow's learned Gaussian priors), "
            f"got {m['prior']!r}"
        )
    o = cond_options(m)
    grid = o["cond_grid"]
    attention = attention_from_config(m)
    try:
        return FullGlow(
            m["image_shape"],
            label_mode=o["label_mode"],
            classes=int(o["classes"]),
            levels=int(m["levels"]),
            steps=int(m["steps"]),
            hidden=int(m["hidden"]),
            cond_hidden=int(o["cond_hidden"]),
            cond_mlp=[int(v) for v in o["cond_mlp"]],
            cond_grid=None if grid is None else int(grid),
            max_log_scale=float(o["max_log_scale"]),
            attention=attention,
            n_bins=int(m["n_bins"]),
            source_weight=float(o["lambda"]),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
