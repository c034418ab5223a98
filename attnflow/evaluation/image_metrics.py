"""Image metrics on RGB ``uint8`` batches (or floats on the 0..255 scale): PSNR, SSIM, LR-PSNR.

Each takes ``[B, C, H, W]`` and returns one value per image (``Tensor[B]``, float64).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
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


def _ssim_window(window: str, sigma: float, win_size: int | None, dtype, device) -> tuple[Tensor, float]:
    """Separable 1-D window and the covariance normalisation skimage uses for it."""
    if window == "gaussian":
        radius = int(3.5 * sigma + 0.5)  # scipy.ndimage / skimage: truncate = 3.5 -> 11 taps for 1.5
        if win_size is not None and win_size != 2 * radius + 1:
            raise ValueError(
                f"ssim: the Gaussian window for sigma={sigma} has {2 * radius + 1} taps, got win_size={win_size}"
            )
        x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
        w = torch.exp(-0.5 * (x / sigma) ** 2)
        return w / w.sum(), 1.0
    if window == "uniform":
        n = 7 if win_size is None else int(win_size)
        if n < 1 or n % 2 == 0:
            raise ValueError(f"ssim: win_size must be a positive odd int, got {win_size}")
        npix = n * n
        return torch.full((n,), 1.0 / n, dtype=dtype, device=device), npix / (npix - 1)  # sample covariance
    raise ValueError(f"ssim: window must be 'gaussian' or 'uniform', got {window!r}")


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
    r"""Structural similarity per image (Wang et al. 2004), computed per channel and averaged.

    With local means :math:`\mu`, variances :math:`\sigma^2` and covariance :math:`\sigma_{xy}` under
    the window, :math:`C_1 = (k_1 R)^2, C_2 = (k_2 R)^2`,

    .. math:: \mathrm{SSIM} = \mathrm{mean}\,\frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
              {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}.

    ``window="gaussian"`` (default, the standard SR protocol): 11-tap Gaussian, sigma 1.5, population
    covariance; equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=...)`` (and BasicSR's ``calculate_ssim``).
    ``window="uniform"``: 7x7 box with sample covariance (``NP/(NP-1)``), i.e. skimage's *defaults*,
    which is what SRFlow's ``Measure.py`` (used for the paper's Table 4) called.

    Borders: skimage filters the whole image and then discards a margin of ``(win - 1) // 2`` pixels
    on every side before averaging, so padding never reaches the averaged values; a *valid*
    convolution computes exactly those values, so no padding is used here. torchmetrics 1.9's
    ``structural_similarity_index_measure`` differs: it reflect-pads and averages the *full* map,
    border pixels included (its full map, cropped by the same margin, equals this to 1e-15). The
    skimage convention is the one SR papers report, so it is the one used here. Images must be at
    least ``win`` pixels high and wide. Float64 throughout; returns ``Tensor[B]``.
    """
    x, y = _image_pair(a, b, "ssim")
    bsz, c, h, w = x.shape
    g, cov_norm = _ssim_window(window, sigma, win_size, x.dtype, x.device)
    n = g.numel()
    if h < n or w < n:
        raise ValueError(f"ssim: images must be at least {n}x{n} for a {n}-tap window, got {h}x{w}")
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [B, 5C, H, W]
    ch = stack.shape[1]
    kh = g.view(1, 1, n, 1).expand(ch, 1, n, 1)
    kw = g.view(1, 1, 1, n).expand(ch, 1, 1, n)
    filt = F.conv2d(F.conv2d(stack, kh, groups=ch), kw, groups=ch)
    ux, uy, uxx, uyy, uxy = filt.split(c, dim=1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * float(data_range)) ** 2
    c2 = (k2 * float(data_range)) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # Every channel has the same number of valid pixels, so the mean over (C, H', W') equals the
    # per-channel SSIM averaged over channels.
    return s.mean(dim=(1, 2, 3))


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


