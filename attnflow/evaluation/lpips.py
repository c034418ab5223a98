"""LPIPS (AlexNet, v0.1 linear heads) from user-given weights (never downloaded).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from .weights import MissingWeightsError, load_state_dict, require_file

__all__ = ["LPIPS", "to_lpips_range"]

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
        alex_path = require_file(alexnet_weights, _ALEXNET_HELP)
        if lin_weights is None:
            lin_path = _torchmetrics_lpips_alex()
            if lin_path is None:
                raise MissingWeightsError("torchmetrics' bundled lpips_models/alex.pth was not found. " + _LIN_HELP)
        else:
            lin_path = require_file(lin_weights, _LIN_HELP)

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
        sd = load_state_dict(path, "AlexNet weights")
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
        sd = load_state_dict(path, "LPIPS linear weights")
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


