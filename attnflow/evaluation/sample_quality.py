"""FID, KID and Inception Score of samples, with a user-given Inception network.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .weights import require_file

__all__ = [
    "InceptionExtractor",
    "load_inception",
    "SampleQuality",
    "fid_kid_is",
    "sample_quality",
]

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
    path = require_file(weights_path, _INCEPTION_HELP)
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
