"""SRFlow-style conditional flow for super-resolution, with the paper's invertible attention.

The model (Lugmayr et al., ECCV 2020; andreas128/SRFlow) is a multi-scale flow over the HR image
``x`` conditioned on the LR image ``y``:

* **Encoder** (:class:`~attnflow.models.rrdb_encoder.RRDBEncoder`): an RRDB network (ESRGAN) on
  ``y / 255``; the outputs of selected RRDB blocks (``taps``) and the trunk features are stacked
  into one map per flow level (``features * (1 + len(taps))`` channels, 320 by default), at level
  ``l`` (1-based) ``HR / 2^l = LR * 2^e`` with ``e = log2(scale) - l``. Above the LR resolution a
  map stays factored (:class:`~attnflow.models.upsampled_concat.UpsampledConcat`: the block
  outputs at the LR resolution, replicated by nearest upsampling only in arithmetic), which only
  the levels' own layers see (:mod:`attnflow.models.srflow_layers`).
* **Levels** ``l = 1..L``: squeeze (2x2 space-to-depth) -> ``unconditional_steps`` x (actnorm, 1x1
  conv) -> ``K`` conditional steps (actnorm -> 1x1 conv -> affine injector
  (:class:`~attnflow.layers.AffineInjector`) -> conditional affine coupling
  (:class:`~attnflow.layers.ConditionalAffineCoupling`), network width ``hidden``) -> a split
  whose diagonal Gaussian prior sees the kept half ``z1`` *and* the LR features (SRFlow's
  ``Split2d`` takes ``z1`` only; the LR features make the prior conditional).
  As in SRFlow, only levels ``l < L - 1`` split, so the paper's 1/1 and 2/8 variants have no split;
  ``split=False`` removes every split.
* **Top latent**: ``N(0, I)`` like SRFlow (``top_prior="standard"``), or a diagonal Gaussian whose
  mean and log-std come from the last level's LR features (``top_prior="conditional"``).
* **Attention**: iMap / iTrans inserted into every conditional step at ``pos1``..``pos4`` (see
  :mod:`attnflow.models.steps`), with alternating mask parity.

``L`` counts levels from the HR image down: SRFlow's full model uses ``L = log2(scale) + 1`` (4 for
8x, 3 for 4x), its last level one octave below the LR image. ``scale`` must be a power of two; the
LR height and width must be multiples of :attr:`SRFlow.lr_multiple` (1 unless a level is coarser
than the LR image or an iTrans patch grid needs more). No image size is fixed: any LR size that
divides works, and the HR size is always ``LR * scale``.

Likelihood: ``log_prob(hr, lr)`` is ``log p(hr | lr)`` of the integer HR image under uniform
dequantisation (true conditional bits/dim, unlike SRFlow's bits per pixel without noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..config import ConfigError
from ..core import Flow, Sequential
from ..layers import ActNorm, Dequantize, InvConv1x1, ITrans
from ..priors import Prior, StandardNormal
from .base import check_temperature
from .multiscale import MultiScaleFlow, build_levels
from .options import attention_from_config
from .pretrained import read_state_dict
from .rrdb_encoder import RRDBEncoder, log2_exact
from .srflow_layers import FactoredAffineInjector, FactoredConditionalAffineCoupling, FactoredDiagonalGaussian
from .steps import AttentionConfig, make_step

__all__ = [
    "SRFlow",
    "build_srflow",
    "conditional_step",
    "unconditional_step",
    "sr_side_by_side",
]

# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------


def unconditional_step(channels: int) -> Sequential:
    """SRFlow's ``additionalFlowNoAffine`` step: actnorm -> invertible 1x1 conv."""
    return Sequential(ActNorm(channels), InvConv1x1(channels))


def conditional_step(
    channels: int,
    cond_channels: int,
    *,
    hidden: int = 64,
    eps: float = 1e-4,
    attention: Flow | None = None,
    position: str = "pos3",
) -> Sequential:
    """actnorm -> 1x1 conv -> affine injector(cond) -> conditional affine coupling(cond), with
    ``attention`` (if any) inserted at ``position``. The injector and coupling take the encoder's
    factored maps (:mod:`attnflow.models.srflow_layers`)."""
    return make_step(
        ActNorm(channels),
        InvConv1x1(channels),
        [
            FactoredAffineInjector(channels, cond_channels, hidden=hidden, eps=eps),
            FactoredConditionalAffineCoupling(channels, cond_channels, hidden=hidden, eps=eps),
        ],
        attention,
        position,
    )


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------


def _check_options(scale: int, levels, steps, unconditional_steps, top_prior: str, image_shape) -> list[int]:
    """SRFlow's arguments checked, one ValueError each; returns the steps per level."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"SRFlow: levels must be a positive int, got {levels!r}")
    ks = [steps] * levels if isinstance(steps, int) else [int(k) for k in steps]
    if len(ks) != levels or any(k < 1 for k in ks):
        raise ValueError(
            f"SRFlow: steps must be a positive int or {levels} positive ints (one per level), got {steps!r}"
        )
    if not isinstance(unconditional_steps, int) or unconditional_steps < 0:
        raise ValueError(f"SRFlow: unconditional_steps must be an int >= 0, got {unconditional_steps!r}")
    if top_prior not in ("standard", "conditional"):
        raise ValueError(f"SRFlow: top_prior must be 'standard' or 'conditional', got {top_prior!r}")
    if int(image_shape[1]) % scale or int(image_shape[2]) % scale:
        raise ValueError(f"SRFlow: image_shape {tuple(image_shape)} is not divisible by scale={scale}")
    return ks


class SRFlow(MultiScaleFlow):
    """Conditional multi-scale flow ``p(hr | lr)`` for ``scale``-times super-resolution.

    Args:
        scale: SR factor, a power of two (8 in the paper; 4 works too).
        levels: ``L``, number of levels (squeezes); the full SRFlow uses ``log2(scale) + 1``.
        steps: ``K``, conditional steps per level (an int or one per level).
        hidden: width of the injector and coupling networks (64 in SRFlow).
        image_shape: the training HR shape ``(C, H, W)``; only used by :meth:`example_batch`
            (benchmarks). Any LR size works at run time.
        unconditional_steps, split, top_prior, eps: the ``model.cond`` keys of ``BACKBONES["srflow"]`` in :mod:`attnflow.config.schema`.
        encoder: keyword arguments of :class:`RRDBEncoder` (``features``, ``blocks``, ``growth``,
            ``taps``).
        attention: where the paper's attention goes (default: none).
        n_bins: quantisation levels of the HR image (256).
        pretrained: a weights file the encoder starts from (:meth:`load_pretrained`, which the
            training loop calls at the start of a fresh run; building the model reads nothing).
    """

    task = "super_resolution"
    panel_titles = ("LR", "sample", "HR")
    condition_name = "LR image"

    def __init__(
        self,
        *,
        scale: int = 8,
        levels: int = 4,
        steps: int | Sequence[int] = 16,
        hidden: int = 64,
        image_shape: Sequence[int] = (3, 160, 160),
        unconditional_steps: int = 2,
        split: bool = True,
        top_prior: str = "standard",
        eps: float = 1e-4,
        encoder: dict | None = None,
        attention: AttentionConfig | None = None,
        n_bins: int = 256,
        pretrained: str | None = None,
    ) -> None:
        log2_scale = log2_exact(scale, "SRFlow")
        ks = _check_options(scale, levels, steps, unconditional_steps, top_prior, image_shape)
        c, hr_h, hr_w = (int(v) for v in image_shape)
        attention = attention or AttentionConfig()
        octaves = [log2_scale - level for level in range(1, levels + 1)]
        enc = RRDBEncoder(octaves, in_channels=c, **(encoder or {}))
        cc = enc.out_channels

        def level_steps(level: int, channels: int) -> list[Flow]:
            steps = [unconditional_step(channels) for _ in range(unconditional_steps)]
            return steps + [
                conditional_step(
                    channels,
                    cc,
                    hidden=hidden,
                    eps=eps,
                    attention=attention.make(channels, level),
                    position=attention.position,
                )
                for _ in range(ks[level])
            ]

        def prior(level: int, channels: int, context: int) -> Prior:
            if context:  # a split: z2 given z1 and the LR features
                return FactoredDiagonalGaussian(channels, context_channels=context, cond_channels=cc)
            if top_prior == "standard":
                return StandardNormal()
            return FactoredDiagonalGaussian(channels, cond_channels=cc)

        # SRFlow splits at 1-based levels l < L - 1
        built, top = build_levels(
            c, levels, steps=level_steps, prior=prior, split=lambda level: split and level + 1 < levels - 1
        )
        super().__init__(
            built,
            top,
            preprocess=Dequantize(n_bins),
            conditioner=enc,
            image_shape=(c, hr_h, hr_w),
            n_bins=n_bins,
        )
        self.scale = scale
        self.in_channels = c
        self.level_octaves = octaves
        self.cond_channels = cc
        self.lr_multiple = self._lr_multiple()
        self.pretrained = None if pretrained in (None, "") else str(pretrained)

    # --- the pretrained encoder -----------------------------------------------------------------
    def load_pretrained(self) -> list[str]:
        """Load the pretrained RRDB named by ``pretrained`` (``model.cond.pretrained``) into the
        encoder, exactly (:meth:`RRDBEncoder.load_pretrained_state`); returns ``[path]`` (``[]``
        when none is named).

        The file is an attnflow checkpoint of the ``rrdb`` backbone (its ``encoder.*`` tensors;
        ``hr_conv``/``conv_last`` are its SR head) or a plain state dict with the reference's RRDBNet
        names (:data:`~attnflow.models.srflow_weights.REFERENCE_KEYS`), as SRFlow's
        ``path.pretrain_model_G`` loads into its ``RRDB`` submodule with ``strict_load``. A
        checkpoint of another backbone, or of an ``rrdb`` model of another scale, is an error."""
        if not self.pretrained:
            return []
        what = "model.cond.pretrained"
        state, config = read_state_dict(self.pretrained, what)
        if config is not None:
            m = config.get("model", {})
            if m.get("backbone") != "rrdb":
                raise ConfigError(
                    f"{what}: {self.pretrained} is an attnflow checkpoint of backbone "
                    f"{m.get('backbone')!r}; give one of an 'rrdb' network (or a reference RRDB state dict)"
                )
            if int(m.get("scale", self.scale)) != self.scale:
                raise ConfigError(
                    f"{what}: {self.pretrained} is an rrdb network for {m.get('scale')}x; this SRFlow "
                    f"is {self.scale}x"
                )
        try:
            self.conditioner.load_pretrained_state(state, f"{what}: {self.pretrained}")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        return [self.pretrained]

    # --- geometry and checks --------------------------------------------------------------------
    def _lr_multiple(self) -> int:
        """Smallest m such that every LR side that is a multiple of m works (squeezes, pooling,
        iTrans patch grids)."""
        m = 1
        for level, e in zip(self.levels, self.level_octaves):
            grids = [mod.grid for mod in level.modules() if isinstance(mod, ITrans)]
            g = math.lcm(1, *grids)
            # the level's side is LR * 2^e: an integer multiple of g for every LR multiple of need
            need = g * (1 << -e) if e < 0 else g // math.gcd(g, 1 << e)
            m = math.lcm(m, need)
        return m

    def check_lr(self, lr: Tensor | None) -> Tensor:
        """Raise ``ValueError`` unless ``lr`` is an LR batch ``[B, C, h, w]`` this model can take."""
        name = type(self).__name__
        if lr is None:
            raise ValueError(f"{name}: needs the low-resolution image as cond [B, {self.in_channels}, h, w]")
        if not isinstance(lr, Tensor) or lr.dim() != 4 or lr.shape[1] != self.in_channels:
            got = tuple(lr.shape) if isinstance(lr, Tensor) else type(lr).__name__
            raise ValueError(
                f"{name}: expected the LR image as [B, {self.in_channels}, h, w], got {got}"
            )
        h, w = lr.shape[2], lr.shape[3]
        m = self.lr_multiple
        if h < 1 or w < 1 or h % m or w % m:
            raise ValueError(
                f"{name}: LR size {h}x{w} does not fit this model: LR height and width must be "
                f"multiples of {m} (scale {self.scale}, {len(self.levels)} levels"
                f"{', iTrans patch grids' if any(isinstance(x, ITrans) for x in self.modules()) else ''}); "
                f"e.g. {max(m, h // m * m)}x{max(m, w // m * m)}"
            )
        return lr

    def hr_shape(self, lr: Tensor) -> tuple[int, int, int]:
        """``(C, H, W)`` of the HR image that goes with ``lr``: ``LR * scale``."""
        self.check_lr(lr)
        return (self.in_channels, lr.shape[2] * self.scale, lr.shape[3] * self.scale)

    # --- the contract's hooks ---------------------------------------------------------------
    def check_condition(self, cond: Tensor | None, batch: int | None = None) -> Tensor:
        return self.check_lr(cond)  # a batch mismatch is reported by check_images with the sizes

    def data_shape(self, cond: Tensor | None) -> tuple[int, ...]:
        return self.hr_shape(cond)

    def _data_mismatch(self, x: Tensor, cond: Tensor | None) -> str:
        expected = (cond.shape[0], *self.hr_shape(cond))
        return (
            f"HR image must be the LR image's size times scale={self.scale}: LR is "
            f"{tuple(cond.shape)}, so HR must be {expected}, got {tuple(x.shape)}"
        )

    def level_conditions(self, cond: Tensor | None) -> list[Tensor | None]:
        return super().level_conditions(self.check_lr(cond))

    @torch.no_grad()
    def super_resolve(
        self,
        lr: Tensor,
        *,
        samples: int = 1,
        temperature: float = 0.8,
        conditions: list[Tensor] | None = None,
    ) -> Tensor:
        """``samples`` SR images of every LR image: uint8 ``[B, samples, C, H, W]``.

        ``conditions`` (from :meth:`level_conditions` on the same ``lr``) skips the encoder, e.g.
        when sampling one batch at several temperatures.
        """
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"super_resolve: samples must be a positive int, got {samples!r}")
        temperature = check_temperature(temperature, "super_resolve: temperature")
        shape = self.hr_shape(lr)
        conds = conditions if conditions is not None else self.level_conditions(lr)
        if samples > 1:
            conds = [c.repeat_interleave(samples, dim=0) for c in conds]
        b = lr.shape[0]
        out = self.sample_from(conds, b * samples, shape, temperature)
        return out.view(b, samples, *shape)

    # --- hooks used by training and benchmarks --------------------------------------------------
    def example_batch(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """A random ``(HR, LR)`` batch (uint8 values as float) of the training shape (benchmarks)."""
        c, h, w = self.image_shape
        hr = torch.randint(0, self.n_bins, (batch, c, h, w), device=device).float()
        return hr, torch.randint(0, 256, (batch, c, h // self.scale, w // self.scale), device=device).float()

    def visualize(self, cond: Tensor | None, samples: Tensor, targets: Tensor | None = None) -> Tensor:
        """``[LR upscaled by nearest | SR | HR]`` side by side (training grids; no HR panel
        without ``targets``)."""
        return sr_side_by_side(cond, samples, self.scale, targets)


def sr_side_by_side(lr: Tensor, samples: Tensor, scale: int, hr: Tensor | None = None) -> Tensor:
    """``[LR upscaled by nearest | SR | HR]`` side by side, uint8 ``[n, C, H, 3W]`` (``2W``, no HR
    panel, without ``hr``)."""
    lr = lr.detach().round().clamp(0, 255).to(torch.uint8)
    if lr.shape[0] == 1 and samples.shape[0] > 1:
        lr = lr.expand(samples.shape[0], *lr.shape[1:])
    up = lr.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    panels = [up.to(samples.device), samples.to(torch.uint8)]
    if hr is not None:
        panels.append(hr.detach().round().clamp(0, 255).to(torch.uint8).to(samples.device))
    return torch.cat(panels, dim=-1)


def build_srflow(m: dict) -> SRFlow:
    """Build :class:`SRFlow` from a checked ``model`` section (its keys: ``BACKBONES["srflow"]`` in
    :mod:`attnflow.config.schema`)."""
    cond = m["cond"]
    return SRFlow(
        scale=m["scale"],
        levels=m["levels"],
        steps=m["steps"],
        hidden=m["hidden"],
        image_shape=m["image_shape"],
        unconditional_steps=cond["unconditional_steps"],
        split=cond["split"],
        top_prior=cond["top_prior"],
        eps=cond["eps"],
        encoder={k: cond[k] for k in ("features", "blocks", "growth", "taps")},
        attention=attention_from_config(m),
        n_bins=m["n_bins"],
        pretrained=cond["pretrained"],
    )
