"""Evaluation metrics: bits/dim, PSNR, SSIM, LR-PSNR, LPIPS (AlexNet), FID / KID / Inception Score.

Everything here works on CPU and CUDA tensors. Image metrics take batches ``[B, C, H, W]`` of RGB
``uint8`` (or float on the 0..255 scale) and return one value per image (``Tensor[B]``, float64).
Pretrained networks (AlexNet for LPIPS, Inception-v3 for FID/KID/IS) are never downloaded: their
weights come from a path the user gives, and a missing path is a :class:`MissingWeightsError` that
says which file to supply and where it comes from.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MissingWeightsError",
    "bits_per_dim",
    "psnr",
    "ssim",
    "lr_psnr",
    "LPIPS",
    "to_lpips_range",
    "InceptionExtractor",
    "load_inception",
    "SampleQuality",
    "fid_kid_is",
    "sample_quality",
]


class MissingWeightsError(FileNotFoundError):
    """A pretrained network's weights were not given or the given file does not exist."""


# --------------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------------


def bits_per_dim(log_px: Tensor | float, num_dims: int, n_bins: int = 256) -> Tensor | float:
    r"""Bits per dimension of discrete data from the log-density of its dequantised version.

    ``log_px`` is the log-density (nats, summed over all ``D = num_dims`` dimensions of one sample) of
    the uniformly dequantised data on the *unit* scale, i.e. pixel values ``k / n_bins`` plus
    ``U[0, 1/n_bins)`` noise. Rescaling to the integer grid (bin width 1) divides the density by
    ``n_bins^D``, so the discrete negative log-likelihood in bits per dimension is

    .. math:: \mathrm{bpd} = -\frac{\log p(x) - D \log n_\mathrm{bins}}{D \ln 2}.

    This is an upper bound on the true discrete NLL (variational dequantisation bound). A uniform
    density on the unit cube (``log_px = 0``) gives exactly ``log2(n_bins)`` bits/dim (8 for 256
    bins). Conditional bits/dim is the same function applied to ``log p(x | c)``. Works elementwise on
    a tensor of per-sample log-densities (e.g. shape ``[B]``) or on a Python float.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims <= 0:
        raise ValueError(f"bits_per_dim: num_dims must be a positive int, got {num_dims!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"bits_per_dim: n_bins must be an int >= 2, got {n_bins!r}")
    d = float(num_dims)
    return -(log_px - d * math.log(n_bins)) / (d * math.log(2.0))


# --------------------------------------------------------------------------------------------------
# PSNR / SSIM / LR-PSNR
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# LPIPS (AlexNet, v0.1 linear heads)
# --------------------------------------------------------------------------------------------------

_ALEXNET_HELP = (
    "LPIPS needs torchvision's ImageNet AlexNet weights (AlexNet_Weights.IMAGENET1K_V1, file "
    "'alexnet-owt-7be5be79.pth', from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth; "
    "torchvision caches it in ~/.cache/torch/hub/checkpoints/). Download it on a machine with network "
    "access and pass LPIPS(alexnet_weights=PATH) (CLI: --alexnet PATH)."
)
_LIN_HELP = (
    "LPIPS needs the v0.1 AlexNet linear-head weights 'alex.pth' (lpips package, "
    "lpips/weights/v0.1/alex.pth in https://github.com/richzhang/PerceptualSimilarity; torchmetrics "
    "ships the same file as torchmetrics/functional/image/lpips_models/alex.pth). Pass "
    "LPIPS(lin_weights=PATH)."
)
_ALEX_CONV = (0, 3, 6, 8, 10)  # indices of the convolutions in torchvision's alexnet().features
_ALEX_TAPS = (1, 4, 7, 9, 11)  # the ReLU outputs LPIPS compares
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)


def _require_file(path: str | os.PathLike | None, help_text: str) -> Path:
    if path is None:
        raise MissingWeightsError(help_text)
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"weights file not found: '{p}'. {help_text}")
    return p


def _load_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, TorchScript archive, pickled module ...
        raise ValueError(f"could not read {what} from '{path}' as a state dict: {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{what} file '{path}' does not hold a state dict of tensors (got {type(obj).__name__})")
    return obj


def _torchmetrics_lpips_alex() -> Path | None:
    """The v0.1 AlexNet LPIPS linear weights that torchmetrics ships inside its package, if present."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "functional" / "image" / "lpips_models" / "alex.pth"
        if p.is_file():
            return p
    return None


def to_lpips_range(x: Tensor) -> Tensor:
    """Map uint8 (or float 0..255) images to LPIPS' input range [-1, 1]: ``x / 127.5 - 1`` (float32)."""
    return x.to(torch.float32) / 127.5 - 1.0


class _NetLin(nn.Module):
    """LPIPS linear head: a 1x1 conv to one channel without bias (``model.1`` as in lpips v0.1)."""

    def __init__(self, channels: int):
        super().__init__()
        # index 0 is Dropout in lpips (a no-op in eval); Identity keeps the key layout, never random
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    r"""LPIPS v0.1 with an AlexNet backbone (Zhang et al. 2018), built without torchvision.

    .. math:: d(x, y) = \sum_l \mathrm{mean}_{h,w}\, w_l^\top (\hat f_l(x) - \hat f_l(y))^2

    where :math:`\hat f_l` are channel-unit-normalised ReLU outputs of AlexNet's five conv layers on
    inputs shifted/scaled by the lpips ``ScalingLayer``. Identical to ``lpips.LPIPS(net="alex")``
    (what SRFlow reports) given the same weights.

    ``alexnet_weights``: torchvision AlexNet state dict (``features.N.weight`` keys, e.g.
    ``alexnet-owt-7be5be79.pth``; a features-only dict with ``N.weight`` keys also loads).
    ``lin_weights``: lpips v0.1 ``alex.pth`` (``lin{i}.model.1.weight``); ``None`` uses the copy that
    torchmetrics ships. Inputs are RGB ``[B, 3, H, W]`` in ``[-1, 1]`` (see :func:`to_lpips_range`);
    the output is ``Tensor[B]``. Weights are frozen and the module always stays in eval mode;
    gradients still flow to the inputs, so it can be used as a loss.
    """

    def __init__(self, alexnet_weights: str | os.PathLike | None = None, lin_weights: str | os.PathLike | None = None):
        super().__init__()
        alex_path = _require_file(alexnet_weights, _ALEXNET_HELP)
        if lin_weights is None:
            lin_path = _torchmetrics_lpips_alex()
            if lin_path is None:
                raise MissingWeightsError("torchmetrics' bundled lpips_models/alex.pth was not found. " + _LIN_HELP)
        else:
            lin_path = _require_file(lin_weights, _LIN_HELP)

        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        for i, ch in enumerate(_LPIPS_CHANNELS):
            self.add_module(f"lin{i}", _NetLin(ch))

        self._load_alexnet(alex_path)
        self._load_lins(lin_path)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def _load_alexnet(self, path: Path) -> None:
        sd = _load_state_dict(path, "AlexNet weights")
        needed = [f"{i}.{p}" for i in _ALEX_CONV for p in ("weight", "bias")]
        for prefix in ("features.", "module.features.", ""):
            feats = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if all(k in feats for k in needed):
                break
        else:
            raise ValueError(
                f"'{path}' is not a torchvision AlexNet state dict: expected keys "
                f"{['features.' + k for k in needed]}, found e.g. {sorted(sd)[:8]}. {_ALEXNET_HELP}"
            )
        try:
            self.features.load_state_dict({k: feats[k] for k in needed}, strict=True)
        except RuntimeError as e:
            raise ValueError(f"AlexNet weights in '{path}' have the wrong shapes for torchvision's alexnet: {e}") from e

    def _load_lins(self, path: Path) -> None:
        sd = _load_state_dict(path, "LPIPS linear weights")
        found: dict[int, Tensor] = {}
        for k, v in sd.items():
            m = re.fullmatch(r"(?:module\.)?lins?\.?(\d)\.model\.\d\.weight", k)
            if m:
                found[int(m.group(1))] = v
        missing = [i for i in range(len(_LPIPS_CHANNELS)) if i not in found]
        if missing:
            raise ValueError(
                f"'{path}' is not an lpips v0.1 AlexNet linear-head file: expected keys lin0..lin4"
                f".model.1.weight, missing lin{missing}, found e.g. {sorted(sd)[:8]}. {_LIN_HELP}"
            )
        for i, ch in enumerate(_LPIPS_CHANNELS):
            w = found[i]
            if tuple(w.shape) != (1, ch, 1, 1):
                raise ValueError(f"lin{i} weight in '{path}' has shape {tuple(w.shape)}, expected (1, {ch}, 1, 1)")
            getattr(self, f"lin{i}").model[1].weight.data.copy_(w)

    def train(self, mode: bool = True) -> LPIPS:  # noqa: D102 - frozen metric network: always eval
        return super().train(False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _ALEX_TAPS:
                out.append(x)
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance per image pair; ``a``, ``b``: ``[B, 3, H, W]`` in [-1, 1]. Returns ``Tensor[B]``."""
        for name, t in (("a", a), ("b", b)):
            if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[1] != 3:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"LPIPS: expected {name} of shape [B, 3, H, W], got {got}")
            if not t.is_floating_point():
                raise TypeError(f"LPIPS: expected float input in [-1, 1], got {t.dtype}; use to_lpips_range(x)")
        if a.shape != b.shape:
            raise ValueError(f"LPIPS: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[-2:]) < 31:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least 31x31 pixels, got {tuple(a.shape[-2:])}")
        lo = min(float(a.min()), float(b.min()))
        hi = max(float(a.max()), float(b.max()))
        if lo < -1.0 - 1e-5 or hi > 1.0 + 1e-5:
            raise ValueError(
                f"LPIPS: inputs must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "convert uint8 / 0..255 images with to_lpips_range(x)"
            )
        dtype = self.shift.dtype
        fa = self._taps((a.to(dtype) - self.shift) / self.scale)
        fb = self._taps((b.to(dtype) - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0], dtype=dtype)
        for i, (xa, xb) in enumerate(zip(fa, fb)):
            # lpips' normalize_tensor: x / (||x|| + 1e-10) (torchmetrics uses x / sqrt(||x||^2 + 1e-8),
            # which differs only for near-zero feature vectors; this follows the lpips package)
            na = xa / (torch.sqrt(xa.square().sum(dim=1, keepdim=True)) + 1e-10)
            nb = xb / (torch.sqrt(xb.square().sum(dim=1, keepdim=True)) + 1e-10)
            total = total + getattr(self, f"lin{i}")((na - nb).square()).mean(dim=(1, 2, 3))
        return total


# --------------------------------------------------------------------------------------------------
# FID / KID / Inception Score
# --------------------------------------------------------------------------------------------------

_INCEPTION_HELP = (
    "FID/KID/IS need Inception-v3 weights as a TorchScript file: pass --inception PATH (Python: "
    "load_inception(PATH) or fid_kid_is(..., weights_path=PATH)), e.g. NVIDIA's "
    "'inception-2015-12-05.pt' from https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
    "metrics/inception-2015-12-05.pt (the TF-FID Inception used by StyleGAN2-ADA), or any "
    "torch.jit.save'd module mapping uint8 [N, 3, H, W] to [N, F] features; or pass your own nn.Module "
    "as feature_extractor=."
)


class InceptionExtractor(nn.Module):
    """Wraps a TorchScript Inception: ``forward`` -> pool features ``[N, F]``, :meth:`logits` -> ``[N, K]``.

    Two calling conventions are recognised from the TorchScript ``forward`` signature:

    * StyleGAN2-ADA's ``inception-2015-12-05.pt`` (``forward(img, return_features=False, use_fp16=False,
      no_output_bias=False)``): takes uint8 ``[N, 3, H, W]`` of any size (resizes to 299 inside),
      returns 2048-d pool features with ``return_features=True`` and softmax probabilities over 1008
      classes otherwise. IS uses ``log(probs)`` computed without the output bias (as StyleGAN2-ADA's
      IS does); ``softmax(log p) = p``, so torchmetrics' IS sees the same distribution.
    * Anything else: ``forward(img)`` must return ``[N, F]`` features; no IS unless a separate
      ``logits_extractor`` is given to :class:`SampleQuality`.
    """

    def __init__(self, net: nn.Module, num_features: int | None = None):
        super().__init__()
        self.net = net
        args: list[str] = []
        schema = getattr(getattr(net, "forward", None), "schema", None)
        if schema is not None:
            args = [a.name for a in schema.arguments]
        self.stylegan = "return_features" in args and "no_output_bias" in args
        if num_features is None and self.stylegan:
            num_features = 2048
        if num_features is not None:
            self.num_features = int(num_features)
        self.net.eval()

    @property
    def has_logits(self) -> bool:
        return self.stylegan

    def forward(self, x: Tensor) -> Tensor:
        if self.stylegan:
            return self.net(x, return_features=True)
        return self.net(x)

    def logits(self, x: Tensor) -> Tensor:
        if not self.stylegan:
            raise ValueError(
                "this TorchScript Inception has no StyleGAN2-ADA-style classifier output, so Inception "
                "Score is unavailable; give SampleQuality a logits_extractor= or leave 'is' out of metrics"
            )
        probs = self.net(x, no_output_bias=True)
        return torch.log(probs.to(torch.float64).clamp_min(1e-30))


def load_inception(weights_path: str | os.PathLike | None, device: str | torch.device = "cpu") -> InceptionExtractor:
    """Load a TorchScript Inception-v3 for FID/KID/IS from a user-given path (never downloads).

    Supported: TorchScript files (``torch.jit.load``), notably StyleGAN2-ADA's
    ``inception-2015-12-05.pt`` (features + classifier, so FID, KID and IS) or any scripted module
    mapping uint8 ``[N, 3, H, W]`` to ``[N, F]`` features (FID and KID). Not supported:
    torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` state dict. Its Inception module is
    plain PyTorch, but ``import torch_fidelity`` imports torchvision (its dataset and VGG16 modules),
    which this project cannot install beside its torch; so build the extractor where torch-fidelity
    works and ``torch.jit.save`` it, or pass your own ``nn.Module`` to :class:`SampleQuality`.
    """
    path = _require_file(weights_path, _INCEPTION_HELP)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.9 but is the weights' format
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*")
            net = torch.jit.load(str(path), map_location=device)
    except Exception as e:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            obj = None
        if isinstance(obj, dict):
            raise ValueError(
                f"'{path}' is a plain state dict (e.g. torch-fidelity's weights-inception-2015-12-05-6726825d"
                ".pth), not a TorchScript module; building torch-fidelity's Inception needs torchvision, "
                f"which attnflow does not use. {_INCEPTION_HELP}"
            ) from e
        raise ValueError(f"could not load '{path}' as TorchScript ({e}). {_INCEPTION_HELP}") from e
    return InceptionExtractor(net).to(device)


class _Passthrough(nn.Module):
    """Feature 'extractor' handed to torchmetrics: the features are computed once, outside."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def _module_device(m: nn.Module, fallback: torch.device) -> torch.device:
    for t in list(m.parameters()) + list(m.buffers()):
        return t.device
    return fallback


class SampleQuality(nn.Module):
    r"""Streaming FID, KID and Inception Score of generated vs real images with a user feature network.

    Feed uint8 batches ``[N, 3, H, W]`` (1-channel batches are repeated to RGB) with
    :meth:`update` and read :meth:`compute`. The feature network runs once per batch; its outputs go
    to torchmetrics' ``FrechetInceptionDistance`` (float64 running moments),
    ``KernelInceptionDistance`` (polynomial-kernel MMD over ``kid_subsets`` random subsets) and
    ``InceptionScore`` (fake images only, ``exp E_x KL(p(y|x) || p(y))`` over ``is_splits`` splits).

    * FID :math:`= \|\mu_r - \mu_f\|^2 + \mathrm{tr}(\Sigma_r + \Sigma_f - 2(\Sigma_r\Sigma_f)^{1/2})`.
    * ``feature_extractor(x_uint8) -> [N, F]``; an ``num_features`` attribute is optional here
      (torchmetrics' FID requires one, or else it probes the net with a 299x299 dummy image; this class
      sizes FID from the first batch instead).
    * IS needs class *logits* (torchmetrics applies ``softmax``): ``logits_extractor(x) -> [N, K]``,
      or ``feature_extractor.logits(x)`` when the extractor has one (see :class:`InceptionExtractor`).

    ``metrics``: subset of ``("fid", "kid", "is")``; ``None`` = FID, KID, and IS when logits are
    available. KID's subset size is clipped to the number of samples (reported as
    ``kid_subset_size``). ``seed`` fixes KID/IS's random subsets/splits so results are repeatable.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        logits_extractor: nn.Module | None = None,
        *,
        metrics: Sequence[str] | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int | None = 0,
    ):
        super().__init__()
        if not isinstance(feature_extractor, nn.Module):
            raise TypeError(f"feature_extractor must be an nn.Module, got {type(feature_extractor).__name__}")
        self.extractor = feature_extractor
        if logits_extractor is None and callable(getattr(feature_extractor, "logits", None)):
            if getattr(feature_extractor, "has_logits", True):
                logits_extractor = _LogitsOf(feature_extractor)
        self.logits_extractor = logits_extractor
        if metrics is None:
            wanted = ("fid", "kid", "is") if logits_extractor is not None else ("fid", "kid")
        else:
            wanted = tuple(str(m).lower() for m in metrics)
            bad = [m for m in wanted if m not in ("fid", "kid", "is")]
            if bad or not wanted:
                raise ValueError(f"metrics must be a non-empty subset of ('fid', 'kid', 'is'), got {tuple(metrics)}")
            if "is" in wanted and logits_extractor is None:
                raise ValueError(
                    "Inception Score needs class logits: pass logits_extractor= (a module mapping uint8 "
                    "[N, 3, H, W] to [N, K] logits) or a feature_extractor with a .logits() method, "
                    "or leave 'is' out of metrics"
                )
        self.wanted = wanted
        self.kid_subsets = int(kid_subsets)
        self.kid_subset_size = int(kid_subset_size)
        self.is_splits = int(is_splits)
        self.seed = seed
        self.fid: nn.Module | None = None
        self.kid: nn.Module | None = None
        self.inception_score: nn.Module | None = None
        self.num_real = 0
        self.num_fake = 0

    def train(self, mode: bool = True) -> SampleQuality:  # noqa: D102 - metric networks stay in eval
        return super().train(False)

    def _build(self, num_features: int, device: torch.device) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            if "fid" in self.wanted:
                self.fid = FrechetInceptionDistance(feature=_Passthrough(num_features)).to(device)
            if "kid" in self.wanted:
                self.kid = KernelInceptionDistance(
                    feature=_Passthrough(num_features), subsets=self.kid_subsets, subset_size=self.kid_subset_size
                ).to(device)
            if "is" in self.wanted:
                self.inception_score = InceptionScore(feature=_Passthrough(0), splits=self.is_splits).to(device)

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of real (``real=True``) or generated images, uint8 ``[N, 3 or 1, H, W]``."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"SampleQuality.update: expected images of shape [N, 3, H, W] (or [N, 1, H, W]), got {got}")
        if images.dtype != torch.uint8:
            raise TypeError(
                f"SampleQuality.update: expected uint8 images (0..255), got {images.dtype}; "
                "quantise samples first, e.g. (x * 255).round().clamp(0, 255).to(torch.uint8)"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        n = images.shape[0]
        if n == 0:
            return
        images = images.to(_module_device(self.extractor, images.device))
        feats = self.extractor(images)
        if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[0] != n:
            got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise ValueError(f"feature_extractor must return [N, F] = [{n}, F] features, got {got}")
        feats = feats.to(torch.float64)
        if self.fid is None and self.kid is None and self.inception_score is None:
            self._build(feats.shape[1], feats.device)
        if self.fid is not None:
            self.fid.update(feats, real=real)
        if self.kid is not None:
            self.kid.update(feats, real=real)
        if not real and self.inception_score is not None:
            logits = self.logits_extractor(images)
            if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"logits_extractor must return [N, K] = [{n}, K] logits, got {got}")
            self.inception_score.update(logits.to(torch.float64))
        if real:
            self.num_real += n
        else:
            self.num_fake += n

    def compute(self) -> dict[str, float]:
        """Return ``{"fid", "kid_mean", "kid_std", "kid_subset_size", "is_mean", "is_std", "num_real", "num_fake"}``
        (only the requested metrics)."""
        needs_real = "fid" in self.wanted or "kid" in self.wanted
        if self.num_fake < 2 or (needs_real and self.num_real < 2):
            raise RuntimeError(
                f"SampleQuality.compute: need at least 2 real and 2 generated images, got "
                f"{self.num_real} real and {self.num_fake} generated"
            )
        out: dict[str, float] = {"num_real": float(self.num_real), "num_fake": float(self.num_fake)}
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            if self.fid is not None:
                out["fid"] = float(self.fid.compute())
            if self.kid is not None:
                self.kid.subset_size = min(self.kid_subset_size, self.num_real, self.num_fake)
                mean, std = self.kid.compute()
                out.update(kid_mean=float(mean), kid_std=float(std), kid_subset_size=float(self.kid.subset_size))
            if self.inception_score is not None:
                with warnings.catch_warnings():  # one split: std is undefined (nan), not an error
                    warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
                    mean, std = self.inception_score.compute()
                out.update(is_mean=float(mean), is_std=float(std))
        return out

    def reset(self) -> None:
        """Forget all accumulated images."""
        for m in (self.fid, self.kid, self.inception_score):
            if m is not None:
                m.reset()
        self.num_real = 0
        self.num_fake = 0


class _LogitsOf(nn.Module):
    """Calls ``extractor.logits`` (so a single wrapped network serves features and logits)."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self._fn = extractor.logits  # bound method; the network is registered by SampleQuality

    def forward(self, x: Tensor) -> Tensor:
        return self._fn(x)


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        return images.split(batch_size)
    return images


def fid_kid_is(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    feature_extractor: nn.Module | None = None,
    *,
    weights_path: str | os.PathLike | None = None,
    logits_extractor: nn.Module | None = None,
    metrics: Sequence[str] | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    seed: int | None = 0,
) -> dict[str, float]:
    """FID / KID / IS of ``fake`` against ``real`` (paper Table 3 reports FID on CIFAR-10).

    ``real`` and ``fake``: a uint8 tensor ``[N, 3, H, W]`` (processed in ``batch_size`` chunks) or an
    iterable of such batches (e.g. a sampler yielding batches). ``feature_extractor``: your own
    module, or ``None`` to :func:`load_inception` from ``weights_path`` (required then; a
    :class:`MissingWeightsError` says what to supply). ``device`` moves the extractor there.
    See :class:`SampleQuality` for the metrics and the returned keys.
    """
    if feature_extractor is None:
        feature_extractor = load_inception(weights_path, device=device or "cpu")
    elif device is not None:
        feature_extractor = feature_extractor.to(device)
    if logits_extractor is not None and device is not None:
        logits_extractor = logits_extractor.to(device)
    sq = SampleQuality(
        feature_extractor,
        logits_extractor,
        metrics=metrics,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        is_splits=is_splits,
        seed=seed,
    )
    sq.eval()
    for batch in _batches(real, batch_size):
        sq.update(batch, real=True)
    for batch in _batches(fake, batch_size):
        sq.update(batch, real=False)
    return sq.compute()


def sample_quality(
    model: nn.Module,
    dataset,
    *,
    inception: str | os.PathLike | nn.Module | None,
    n: int = 10_000,
    temperature: float = 1.0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID, KID and Inception Score of ``n`` model samples against the first ``n`` dataset images.

    ``inception`` is a TorchScript file (see :func:`load_inception`) or a feature module; without it
    a :class:`MissingWeightsError` says what to supply. Unconditional models only.
    """
    extractor = inception if isinstance(inception, nn.Module) else load_inception(inception, device)
    n = min(n, len(dataset))
    real = torch.stack([dataset[i] if isinstance(dataset[i], Tensor) else dataset[i][0] for i in range(n)])
    gen = torch.Generator().manual_seed(seed)
    fakes = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for start in range(0, n, batch_size):
            fakes.append(model.sample(min(batch_size, n - start), temperature=temperature).cpu())
    fake = torch.cat(fakes)
    result = fid_kid_is(
        real, fake, extractor, batch_size=batch_size, device=device,
        kid_subset_size=min(kid_subset_size, n), seed=seed,
    )
    result["fid_samples"] = n
    result["fid_temperature"] = temperature
    return result
