"""A plain RRDB super-resolution network (ESRGAN's RRDBNet) trained with an L1 loss: the
pretrained conditioner of SRFlow.

SRFlow (Lugmayr et al. 2020; andreas128/SRFlow) does not train its RRDB encoder from scratch: its
CelebA 8x configuration loads ``RRDB_CelebA_8X.pth`` (``path.pretrain_model_G``, loaded into the
``RRDB`` submodule with ``strict_load``), an RRDBNet trained beforehand as an ordinary SR network
with an L1 pixel loss (``RRDB_CelebA_8X.yml``: ``model: SR``, ``pixel_criterion: l1``). This module
is that network on attnflow's :class:`~attnflow.models.rrdb_encoder.RRDBEncoder`:

    LR / 255 -> conv_first -> RRDB blocks -> + trunk_conv -> log2(scale) x (nearest x2 -> conv3x3
    -> LeakyReLU(0.2)) -> hr_conv -> LeakyReLU(0.2) -> conv_last -> the HR image on the 0..1 scale

``objective((hr, lr))`` is the mean absolute error between that prediction and ``hr / 255``;
``super_resolve`` and ``sample`` return the (deterministic) prediction as uint8; the test metric
of the training loop is the PSNR (dB, higher is better). It is not a normalizing flow: it follows
:class:`~attnflow.models.base.TrainableModel`, the training part of the contract, not
:class:`~attnflow.models.base.FlowModel`.

Its checkpoint starts an SRFlow encoder (``model.cond.pretrained: RUN/checkpoints/last.pt``):
the ``encoder.*`` tensors load into the SRFlow's ``RRDBEncoder`` (same names); ``hr_conv``,
``conv_last`` and the upsampling convs an SRFlow level never reads (``upconvs.2`` at 8x) are the SR
head and are left out, as SRFlow's flow never reads ``HRconv``/``conv_last``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..evaluation.image_metrics import psnr
from .base import TrainableModel, check_count, check_temperature
from .rrdb_encoder import RRDBEncoder, log2_exact
from .srflow import sr_side_by_side
from .upsampled_concat import UpsampledConcat, conv2d_on_map

__all__ = ["RRDBNet", "build_rrdb"]

class RRDBNet(TrainableModel):
    """RRDB super-resolution network ``LR -> HR`` (``scale`` a power of two), L1-trained.

    Args:
        scale: SR factor (8 for CelebA 8x).
        image_shape: the training HR shape ``(C, H, W)`` (only :meth:`example_batch` uses it; any
            LR size works).
        features, blocks, growth: the RRDB's width, depth and dense-block growth.
        n_bins: value range of the images (256: uint8).
        encoder: an existing :class:`RRDBEncoder` to train as this network's trunk (then
            ``features``, ``blocks`` and ``growth`` are the encoder's), e.g. an SRFlow's encoder;
            the upsampling convs it lacks are added to the SR head (``extra_upconvs``).
    """

    task = "super_resolution"
    panel_titles = ("LR", "sample", "HR")
    condition_name = "LR image"
    loss_name = "l1"
    metric_name = "psnr"
    metric_higher_is_better = True
    stochastic = False
    lr_multiple = 1

    def __init__(
        self,
        *,
        scale: int = 8,
        image_shape=(3, 160, 160),
        features: int = 64,
        blocks: int = 8,
        growth: int = 32,
        n_bins: int = 256,
        encoder: RRDBEncoder | None = None,
    ) -> None:
        super().__init__()
        log2_scale = log2_exact(scale, "RRDBNet")
        c, h, w = (int(v) for v in image_shape)
        if h % scale or w % scale:
            raise ValueError(f"RRDBNet: image_shape {tuple(image_shape)} is not divisible by scale={scale}")
        self.scale = scale
        self.in_channels = c
        self.image_shape = (c, h, w)
        self.n_bins = int(n_bins)
        if encoder is None:
            # the encoder with log2(scale) upsampling convs, no taps: ESRGAN's trunk and upsampling
            encoder = RRDBEncoder([log2_scale], in_channels=c, features=features, blocks=blocks,
                                  growth=growth, taps=[], input_range=float(n_bins - 1))
        elif len(encoder.upconvs) > log2_scale:
            raise ValueError(f"RRDBNet: the given encoder has {len(encoder.upconvs)} upsampling convs, "
                             f"more than log2(scale={scale}) = {log2_scale}")
        self.encoder = encoder
        features = encoder.features
        # the upsampling convs the encoder lacks (an SRFlow encoder stops at the octaves its levels
        # read): part of the SR head, as the reference's upconv3 at 8x
        self.extra_upconvs = nn.ModuleList(
            nn.Conv2d(features, features, 3, padding=1) for _ in range(log2_scale - len(encoder.upconvs))
        )
        self.hr_conv = nn.Conv2d(features, features, 3, padding=1)
        self.conv_last = nn.Conv2d(features, c, 3, padding=1)

    # --- geometry ---------------------------------------------------------------------------------
    def check_lr(self, lr: Tensor | None) -> Tensor:
        """Raise ``ValueError`` unless ``lr`` is an LR batch ``[B, C, h, w]``."""
        if not isinstance(lr, Tensor) or lr.dim() != 4 or lr.shape[1] != self.in_channels:
            got = tuple(lr.shape) if isinstance(lr, Tensor) else type(lr).__name__
            raise ValueError(f"RRDBNet: expected the LR image as [B, {self.in_channels}, h, w], got {got}")
        return lr

    def hr_shape(self, lr: Tensor) -> tuple[int, int, int]:
        self.check_lr(lr)
        return (self.in_channels, lr.shape[2] * self.scale, lr.shape[3] * self.scale)

    def check_condition(self, cond: Tensor | None, batch: int | None = None) -> Tensor:
        return self.check_lr(cond)

    def data_shape(self, cond: Tensor | None) -> tuple[int, ...]:
        return self.hr_shape(cond)

    def _data_mismatch(self, x: Tensor, cond: Tensor | None) -> str:
        expected = (cond.shape[0], *self.hr_shape(cond))
        return (f"HR image must be the LR image's size times scale={self.scale}: LR is "
                f"{tuple(cond.shape)}, so HR must be {expected}, got {tuple(x.shape)}")

    # --- the network ----------------------------------------------------------------------------
    def predict(self, lr: Tensor) -> Tensor:
        """The SR prediction on the 0..1 scale (unclamped), ``[B, C, h * scale, w * scale]``."""
        _, _, top = self.encoder.trunk_features(self.check_lr(lr))
        for conv in self.extra_upconvs:
            top = F.leaky_relu(conv2d_on_map(conv, UpsampledConcat(None, top, 2)), 0.2)
        return self.conv_last(F.leaky_relu(self.hr_conv(top), 0.2))

    def _to_uint8(self, pred: Tensor) -> Tensor:
        top = self.n_bins - 1
        return (pred * top).round().clamp(0, top).to(torch.uint8)

    # --- training and evaluation ----------------------------------------------------------------
    def objective(self, batch: Any) -> Tensor:
        """L1 loss: mean ``|prediction - hr / 255|`` over the batch (SRFlow's RRDB pretraining)."""
        hr, lr = self.check_images(*self.unpack(batch))
        return (self.predict(lr) - hr / (self.n_bins - 1)).abs().mean()

    def evaluation_metric(self, batch: Any) -> Tensor:
        """PSNR (dB) of the uint8 prediction against the HR image, per image ``[B]``."""
        hr, lr = self.check_images(*self.unpack(batch))
        with torch.no_grad():
            sr = self._to_uint8(self.predict(lr))
        return psnr(sr, hr.round().clamp(0, self.n_bins - 1).to(torch.uint8))

    def conditioner_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, temperature: float = 1.0) -> Tensor:
        """The prediction of every LR image (``n`` copies of one LR image, or one per LR image);
        ``temperature`` is checked and ignored (the network is deterministic)."""
        n = check_count(n, "RRDBNet.sample: n")
        check_temperature(temperature, "RRDBNet.sample: temperature")
        cond = self.check_lr(cond)
        if cond.shape[0] not in (1, n):
            raise ValueError(f"RRDBNet.sample: give 1 or n={n} LR images, got {cond.shape[0]}")
        out = self._to_uint8(self.predict(cond))
        return out.expand(n, *out.shape[1:]).clone() if out.shape[0] == 1 else out

    def level_conditions(self, lr: Tensor) -> None:
        """Nothing to cache between calls (the interface of SRFlow's; checks ``lr``)."""
        self.check_lr(lr)
        return None

    @torch.no_grad()
    def super_resolve(self, lr: Tensor, *, samples: int = 1, temperature: float = 0.8,
                      conditions: Any = None) -> Tensor:
        """The prediction of every LR image, uint8 ``[B, samples, C, H, W]`` (all samples equal)."""
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"super_resolve: samples must be a positive int, got {samples!r}")
        check_temperature(temperature, "super_resolve: temperature")
        out = self._to_uint8(self.predict(lr))
        return out[:, None].expand(out.shape[0], samples, *out.shape[1:]).clone()

    # --- hooks used by training and benchmarks --------------------------------------------------
    def example_batch(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        c, h, w = self.image_shape
        hr = torch.randint(0, self.n_bins, (batch, c, h, w), device=device).float()
        return hr, torch.randint(0, self.n_bins, (batch, c, h // self.scale, w // self.scale), device=device).float()

    def visualize(self, cond: Tensor | None, samples: Tensor, targets: Tensor | None = None) -> Tensor:
        """``[LR upscaled by nearest | SR | HR]`` side by side (training grids; no HR panel
        without ``targets``)."""
        return sr_side_by_side(cond, samples, self.scale, targets)


def build_rrdb(m: dict) -> RRDBNet:
    """Build :class:`RRDBNet` from a checked ``model`` section (``model.cond``: features, blocks, growth)."""
    cond = m["cond"]
    return RRDBNet(scale=m["scale"], image_shape=m["image_shape"], features=cond["features"],
                   blocks=cond["blocks"], growth=cond["growth"], n_bins=m["n_bins"])
