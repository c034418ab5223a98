"""Image metrics on RGB ``uint8`` batches (or floats on the 0..255 scale): PSNR, SSIM, LR-PSNR.

Each takes ``[B, C, H, W]`` and returns one value per image (``Tensor[B]``, float64).

SSIM is ``skimage.metrics.structural_similarity``, image by image, in float64: the SR papers'
numbers (BasicSR's Gaussian window, SRFlow's ``Measure.py`` with skimage's defaults) come from it or
agree with it. It reproduced the hand-written float64 SSIM kept here before (a valid separable
convolution) to 3e-14 in both variants on uint8 RGB crops (photos with noise or duplicated rows,
random noise; 160x160, 48x40 and 24x29 pixels). torchmetrics' ``structural_similarity_index_measure``
reproduces neither: it reflect-pads and averages the whole SSIM map, borders included, where skimage
discards a margin of ``(win - 1) // 2`` pixels on every side; it differs by up to 1.3e-2 (Gaussian
11x11) and 9.9e-3 (uniform 7x7) on the 160x160 crops and by up to 4.3e-2 and 1.8e-2 on the smaller
ones. Its Gaussian map cropped by skimage's margin gives skimage's value to 6e-15.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["psnr", "ssim", "lr_psnr"]


def _image_pair(a: Tensor, b: Tensor, fn: str) -> tuple[Tensor, Tensor]:
    """Check two image batches [B, C, H, W] of equal shape and return them as float64."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{fn}: expected {name} of shape [B, C, H, W], got {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{fn}: a and b must be on the same device, got {a.device} and {b.device}")
    return a.to(torch.float64), b.to(torch.float64)


def psnr(a: Tensor, b: Tensor, data_range: float = 255.0) -> Tensor:
    r"""Peak signal-to-noise ratio per image, in dB: :math:`10 \log_{10}(R^2 / \mathrm{MSE})`.

    ``a`` and ``b`` are ``[B, C, H, W]`` (uint8 or float on the ``0..data_range`` scale); the MSE
    is taken over all channels and pixels of each image, in float64. Matches
    ``skimage.metrics.peak_signal_noise_ratio(a_i, b_i, data_range=R)`` image by image, the way
    SRFlow measures RGB PSNR. Identical images give ``inf``. Returns ``Tensor[B]`` (float64).
    """
    x, y = _image_pair(a, b, "psnr")
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)


def ssim(
    a: Tensor,
    b: Tensor,
    data_range: float = 255.0,
    window: Literal["gaussian", "uniform"] = "gaussian",
    sigma: float = 1.5,
    win_size: int | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""Structural similarity per image (Wang et al. 2004), computed per channel and averaged over
    the channels: ``skimage.metrics.structural_similarity(a_i, b_i, channel_axis=0, ...)``.

    ``window="gaussian"`` (default, the standard SR protocol): 11-tap Gaussian, sigma 1.5, population
    covariance (skimage's ``gaussian_weights=True, use_sample_covariance=False``; BasicSR's
    ``calculate_ssim``). ``window="uniform"``: a ``win_size`` box (default 7) with sample covariance,
    i.e. skimage's *defaults*, which is what SRFlow's ``Measure.py`` (used for the paper's Table 4)
    called. Images must be at least ``win`` pixels high and wide. Computed in float64 on the CPU;
    returns ``Tensor[B]`` (float64) on the inputs' device.
    """
    from skimage.metrics import structural_similarity

    x, y = _image_pair(a, b, "ssim")
    if window == "gaussian":
        n = 2 * int(3.5 * sigma + 0.5) + 1  # skimage's truncate = 3.5: 11 taps for sigma 1.5
        if win_size is not None and win_size != n:
            raise ValueError(f"ssim: the Gaussian window for sigma={sigma} has {n} taps, got win_size={win_size}")
    elif window == "uniform":
        n = 7 if win_size is None else int(win_size)
        if n < 1 or n % 2 == 0:
            raise ValueError(f"ssim: win_size must be a positive odd int, got {win_size}")
    else:
        raise ValueError(f"ssim: window must be 'gaussian' or 'uniform', got {window!r}")
    if x.shape[-2] < n or x.shape[-1] < n:
        raise ValueError(f"ssim: images must be at least {n}x{n} for a {n}-tap window, got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
    gaussian = window == "gaussian"
    values = [
        structural_similarity(xi, yi, win_size=None if gaussian else n, gaussian_weights=gaussian, sigma=sigma,
                              use_sample_covariance=not gaussian, data_range=float(data_range), K1=k1, K2=k2,
                              channel_axis=0)
        for xi, yi in zip(x.cpu().numpy(), y.cpu().numpy())
    ]
    return torch.tensor(values, dtype=torch.float64, device=a.device)


def _quantize(x: Tensor, data_range: float) -> Tensor:
    """Round to the 8-bit grid of ``0..data_range`` and clip, like a uint8 image (round half to even)."""
    step = float(data_range) / 255.0
    return (torch.round(x / step) * step).clamp(0.0, float(data_range))


def lr_psnr(
    lr: Tensor, sr: Tensor, scale: int, data_range: float = 255.0, per_axis_rounding: bool = True
) -> Tensor:
    """LR-consistency PSNR (SRFlow): PSNR between the LR input and the bicubic-downscaled SR output.

    ``PSNR(lr, q(imresize(sr, 1/scale)))`` with MATLAB-compatible antialiased bicubic
    (:func:`attnflow.imresize.imresize`) and ``q`` = round and clip to the 8-bit grid. SRFlow's
    ``test.py`` calls a MATLAB ``imresize`` port on a uint8 image, which rounds after *each* axis
    (rows first, then columns); ``per_axis_rounding=True`` (default) reproduces that exactly,
    ``False`` rounds once at the end. ``lr`` is ``[B, C, h, w]`` and ``sr`` must be
    ``[B, C, h*scale, w*scale]``; both uint8 or float on the ``0..data_range`` scale (SRFlow
    quantises SR to uint8 first, so pass the quantised image to reproduce its numbers). Rounding is
    half-to-even, like ``np.around`` in SRFlow's port. Returns ``Tensor[B]`` (float64, dB).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"lr_psnr: scale must be a positive int, got {scale!r}")
    for name, t in (("lr", lr), ("sr", sr)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"lr_psnr: expected {name} of shape [B, C, H, W], got {got}")
    b, c, h, w = lr.shape
    expected = (b, c, h * scale, w * scale)
    if tuple(sr.shape) != expected:
        raise ValueError(
            f"lr_psnr: sr must be lr's size times scale={scale}: lr is {tuple(lr.shape)}, so sr must be "
            f"{expected}, got {tuple(sr.shape)}"
        )
    from .imresize import imresize  # lazy: keeps metrics importable without it

    x = sr.to(torch.float64)
    if per_axis_rounding:
        x = _quantize(imresize(x, size=(h, x.shape[-1])), data_range)  # rows first, as SRFlow's port
        x = _quantize(imresize(x, size=(h, w)), data_range)
    else:
        x = _quantize(imresize(x, size=(h, w)), data_range)
    return psnr(lr.to(x.device), x, data_range=data_range)


