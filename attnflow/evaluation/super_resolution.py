"""Super-resolution evaluation: PSNR, SSIM, LR-PSNR and LPIPS of SR samples, per temperature.

The paper (Table 4, following SRFlow) samples one SR image per LR image at each temperature
``tau in 0.1, 0.2, ..., 0.9`` and reports every metric averaged over the temperatures. Here each
metric is averaged over all (image, sample) pairs at each temperature, and then over the
temperatures (``mean``).

Metrics (:mod:`attnflow.evaluation`, RGB uint8, data range 255):

* ``psnr``: PSNR(SR, HR).
* ``ssim``: SSIM with the standard 11x11 Gaussian window (sigma 1.5), as BasicSR and most SR papers.
* ``ssim_uniform``: SSIM with scikit-image's *default* 7x7 uniform window and sample covariance:
  what SRFlow's ``Measure.py`` computed, so the column comparable to the paper's Table 4.
* ``lr_psnr``: PSNR(LR, MATLAB-bicubic downscale of SR), SRFlow's LR-consistency.
* ``lpips``: LPIPS (AlexNet, v0.1), only when AlexNet weights are given.

``bits_per_dim`` is the conditional bits/dim ``-log p(hr | lr) / (D ln 2)`` under uniform
dequantisation (seeded noise), for flows (models with ``bits_per_dim``).

A deterministic model (``model.stochastic`` false: the L1-trained RRDB network) has one SR image
per LR image whatever the temperature: it is evaluated once, as temperature 0 (one row).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .image_metrics import lr_psnr, psnr, ssim
from .imresize import imresize
from .lpips import to_lpips_range
from .weights import MissingWeightsError

__all__ = [
    "DEFAULT_TEMPERATURES",
    "SR_METRICS",
    "SR_DATASETS",
    "evaluate_sr",
    "bicubic_upscale",
    "evaluate_bicubic",
    "format_sr_table",
    "lpips_unavailable_reason",
]

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: dataset names of :func:`attnflow.data.get_dataset` that give (HR, LR) pairs
SR_DATASETS = ("celeba", "celeba-bundled", "sr-folder")

#: metric key -> column title of the Markdown table
SR_METRICS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (Gaussian 11x11)",
    "ssim_uniform": "SSIM (uniform 7x7, SRFlow/paper)",
    "lr_psnr": "LR-PSNR (dB)",
    "lpips": "LPIPS (AlexNet)",
}


def lpips_unavailable_reason() -> str:
    """Why LPIPS is left out when no AlexNet weights are given (the metric's own help text)."""
    from .lpips import LPIPS

    try:
        LPIPS(None)
    except MissingWeightsError as err:
        return f"LPIPS omitted: {err}"
    return "LPIPS omitted: no AlexNet weights given (--alexnet PATH)"  # pragma: no cover


def _check_pairs(dataset: Dataset) -> None:
    item = dataset[0]
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise ValueError(
            f"SR evaluation needs a dataset of (HR, LR) pairs (celeba, celeba-bundled, sr-folder); "
            f"{type(dataset).__name__} gives {type(item).__name__} items"
        )


@torch.no_grad()
def evaluate_sr(
    model: nn.Module,
    dataset: Dataset,
    *,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    samples: int = 1,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    max_batches: int | None = None,
    seed: int = 0,
    bits_per_dim: bool = True,
    examples: int = 0,
) -> dict[str, Any]:
    """SR metrics of ``model`` (an :class:`attnflow.models.srflow.SRFlow`, or any model with
    ``check_images``, ``level_conditions``, ``super_resolve``, ``visualize`` and ``scale``, such as
    :class:`attnflow.models.rrdb.RRDBNet`) on ``dataset``.

    ``samples`` SR images are drawn per LR image and temperature. ``lpips`` is a callable
    ``(a, b) -> [B]`` on images in ``[-1, 1]`` (e.g. :class:`attnflow.evaluation.LPIPS`); without it
    the ``lpips`` metric is left out. ``examples > 0`` also returns, per temperature, a uint8 grid
    source ``[n, 3, H, 4W]`` (LR upscaled by nearest | bicubic | SR | HR) of the first ``examples``
    images.

    The ``bicubic`` baseline is the same metrics of the LR image upscaled by MATLAB-compatible
    bicubic interpolation (:func:`~attnflow.evaluation.imresize`, rounded to uint8), as every SR
    paper's table has.

    Returns ``{"images", "samples_per_image", "temperatures", "per_temperature": [{"temperature",
    metric: value, ...}], "mean": {metric: mean over temperatures}, "bicubic": {metric: value},
    "bits_per_dim"}``.
    Batch ``i`` is seeded with ``seed + i`` (its SR samples, then its dequantisation noise), so
    results do not depend on ``max_batches`` or the loader; the global RNG state is restored.
    """
    if not temperatures:
        raise ValueError("evaluate_sr: give at least one temperature")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"evaluate_sr: samples must be a positive int, got {samples!r}")
    _check_pairs(dataset)
    dev = torch.device(device)
    deterministic = not getattr(model, "stochastic", True)
    temps = [0.0] if deterministic else [float(t) for t in temperatures]
    samples = 1 if deterministic else samples
    keys = [k for k in SR_METRICS if k != "lpips" or lpips is not None]
    sums = _Sums(keys, temps, examples)
    bits_per_dim = bits_per_dim and hasattr(model, "bits_per_dim")
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for i, (hr, lr) in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
            if max_batches is not None and i >= max_batches:
                break
            torch.manual_seed(seed + i)  # per batch: independent of the loader's own RNG use
            _add_batch(sums, model, hr.to(dev), lr.to(dev), temps, samples, lpips, bits_per_dim)
    model.train(was_training)
    return sums.result(samples, deterministic)


class _Sums:
    """Running sums of :func:`evaluate_sr`: metrics per temperature, the bicubic row, bits/dim and
    the example panels."""

    def __init__(self, keys: list[str], temps: list[float], examples: int) -> None:
        self.keys, self.temps, self.examples = keys, temps, examples
        self.per_t = {t: {k: 0.0 for k in keys} for t in temps}
        self.bicubic = {k: 0.0 for k in keys}
        self.count = self.lr_count = self.bpd_count = self.shown = 0
        self.bpd = 0.0
        self.grids: dict[float, list[Tensor]] = {t: [] for t in temps}

    def result(self, samples: int, deterministic: bool) -> dict[str, Any]:
        if self.count == 0:
            raise ValueError("evaluate_sr: the dataset (or --max-batches) gave no images")
        per_t = [{"temperature": t, **{k: v / self.count for k, v in self.per_t[t].items()}} for t in self.temps]
        result: dict[str, Any] = {
            "images": self.count // samples,
            "samples_per_image": samples,
            "temperatures": self.temps,
            "per_temperature": per_t,
            "mean": {k: math.fsum(r[k] for r in per_t) / len(per_t) for k in self.keys},
            "bicubic": {k: v / self.lr_count for k, v in self.bicubic.items()},
            "bits_per_dim": self.bpd / self.bpd_count if self.bpd_count else None,
            "deterministic": deterministic,
        }
        if self.examples:
            result["examples"] = {t: torch.cat(g) for t, g in self.grids.items() if g}
        return result


def _add_batch(sums: _Sums, model, hr: Tensor, lr: Tensor, temps: list[float], samples: int, lpips,
               bits_per_dim: bool) -> None:
    """The metrics of one batch's SR samples at every temperature (and its bicubic row, bits/dim and
    example panels LR nearest | bicubic | SR | HR), added to ``sums``."""
    lr_f = lr.float()
    model.check_images(hr.float(), lr_f)
    conds = model.level_conditions(lr_f)
    hr_rep, lr_rep = hr.repeat_interleave(samples, dim=0), lr.repeat_interleave(samples, dim=0)
    take = min(hr.shape[0], max(0, sums.examples - sums.shown))
    bicubic = bicubic_upscale(lr, model.scale)
    _add_metrics(sums.bicubic, bicubic, hr, lr, model.scale, lpips)
    sums.lr_count += hr.shape[0]
    for t in temps:
        sr = model.super_resolve(lr_f, samples=samples, temperature=t, conditions=conds).flatten(0, 1)
        _add_metrics(sums.per_t[t], sr, hr_rep, lr_rep, model.scale, lpips)
        if take:
            first = sr.view(hr.shape[0], samples, *sr.shape[1:])[:take, 0]
            nearest = lr[:take].repeat_interleave(model.scale, -2).repeat_interleave(model.scale, -1)
            panel = torch.cat([nearest.to(torch.uint8), bicubic[:take], first, hr[:take].to(torch.uint8)], dim=-1)
            sums.grids[t].append(panel.cpu())
    if bits_per_dim:
        bpd = model.bits_per_dim((hr, lr_f))
        sums.bpd += float(bpd.sum())
        sums.bpd_count += bpd.numel()
    sums.shown += take
    sums.count += hr.shape[0] * samples


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """The LR batch upscaled ``scale`` times by MATLAB-compatible bicubic interpolation, as uint8."""
    up = imresize(lr.to(torch.float64), scale=scale)
    return up.add(0.5).floor_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def evaluate_bicubic(
    dataset: Dataset, scale: int, *, batch_size: int = 16, max_batches: int | None = None, lpips=None
) -> dict[str, float]:
    """The SR metrics of :func:`bicubic_upscale` on a dataset of ``(HR, LR)`` pairs (the baseline
    row of :func:`evaluate_sr`, without a model)."""
    _check_pairs(dataset)
    keys = [k for k in SR_METRICS if k != "lpips" or lpips is not None]
    sums, count = {k: 0.0 for k in keys}, 0
    for i, (hr, lr) in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if max_batches is not None and i >= max_batches:
            break
        _add_metrics(sums, bicubic_upscale(lr, scale), hr, lr, scale, lpips)
        count += hr.shape[0]
    if count == 0:
        raise ValueError("evaluate_bicubic: the dataset (or max_batches) gave no images")
    return {k: v / count for k, v in sums.items()}


def _add_metrics(sums: dict, sr: Tensor, hr: Tensor, lr: Tensor, scale: int, lpips) -> None:
    """Add the per-image metrics of the ``sr`` batch against ``hr`` (and ``lr``) to ``sums``."""
    sums["psnr"] += float(psnr(sr, hr).sum())
    sums["ssim"] += float(ssim(sr, hr).sum())
    sums["ssim_uniform"] += float(ssim(sr, hr, window="uniform").sum())
    sums["lr_psnr"] += float(lr_psnr(lr, sr, scale).sum())
    if lpips is not None:
        sums["lpips"] += float(lpips(to_lpips_range(sr), to_lpips_range(hr)).sum())


def format_sr_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per temperature, the mean row and (when given) the bicubic row."""
    keys = [k for k in SR_METRICS if k in result["mean"]]
    lines = [
        "| temperature | " + " | ".join(SR_METRICS[k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]

    def fmt(k: str, v: float) -> str:
        return f"{v:.2f}" if k in ("psnr", "lr_psnr") else f"{v:.4f}"

    for r in result["per_temperature"]:
        lines.append(f"| {r['temperature']:.2f} | " + " | ".join(fmt(k, r[k]) for k in keys) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{fmt(k, result['mean'][k])}**" for k in keys) + " |")
    if result.get("bicubic"):
        lines.append("| bicubic | " + " | ".join(fmt(k, result["bicubic"][k]) for k in keys) + " |")
    return "\n".join(lines)
