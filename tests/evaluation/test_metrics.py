"""Tests for attnflow.metrics: bits/dim, PSNR, SSIM, LR-PSNR, LPIPS, FID/KID/IS.

References: scikit-image and torchmetrics for PSNR/SSIM, torchmetrics' own LPIPS code (with the same
weights) for LPIPS, scipy.linalg.sqrtm for FID, the IS formula for IS. No pretrained weights are
needed: networks get random weights saved to tmp files.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from attnflow.evaluation import (
    LPIPS,
    InceptionExtractor,
    MissingWeightsError,
    SampleQuality,
    bits_per_dim,
    fid_kid_is,
    load_inception,
    lr_psnr,
    psnr,
    ssim,
    to_lpips_range,
)

skm = pytest.importorskip("skimage.metrics")
skdata = pytest.importorskip("skimage.data")


# ------------------------------------------------------------------------------------------------
# bits/dim
# ------------------------------------------------------------------------------------------------


def test_bits_per_dim_uniform_density_is_log2_bins():
    # Uniform density on the unit cube: log p = 0 -> exactly log2(n_bins) bits per dim.
    assert bits_per_dim(0.0, num_dims=3072) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(0.0, num_dims=10, n_bins=32) == pytest.approx(5.0, abs=1e-12)
    out = bits_per_dim(torch.zeros(4, dtype=torch.float64), num_dims=784)
    assert out.shape == (4,)
    assert torch.allclose(out, torch.full((4,), 8.0, dtype=torch.float64), atol=1e-12)


def test_bits_per_dim_hand_computed():
    # D = 3, n_bins = 256, log p = -2 nats: bpd = (3 ln 256 + 2) / (3 ln 2) = 8 + 2 / (3 ln 2)
    assert bits_per_dim(-2.0, num_dims=3) == pytest.approx(8.961796693925976, rel=1e-14)
    # A discrete factorised model dequantised uniformly: on the unit scale the density inside bin k
    # is P(k) * n_bins, so log p = sum_i log(P(k_i) n_bins) and bits/dim must equal the exact
    # discrete NLL -(1/D) sum_i log2 P(k_i). n_bins = 4, P = (.1, .2, .3, .4), x = (0, 3, 2):
    # -(log2 .1 + log2 .4 + log2 .3) / 3 = 2.126940594646977 (worked out by hand / calculator).
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    x = torch.tensor([0, 3, 2])
    log_px = torch.log(probs[x] * 4).sum()
    assert float(bits_per_dim(log_px, num_dims=3, n_bins=4)) == pytest.approx(2.126940594646977, rel=1e-14)


def test_bits_per_dim_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(0.0, num_dims=0)
    with pytest.raises(ValueError, match="n_bins"):
        bits_per_dim(0.0, num_dims=3, n_bins=1)


# ------------------------------------------------------------------------------------------------
# PSNR / SSIM against scikit-image and torchmetrics
# ------------------------------------------------------------------------------------------------


def _image_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(a, b) uint8 batches [B, H, W, 3]: random noise, and real photos with a degraded copy."""
    rng = np.random.default_rng(0)
    rand_a = rng.integers(0, 256, size=(2, 24, 29, 3), dtype=np.uint8)
    rand_b = rng.integers(0, 256, size=(2, 24, 29, 3), dtype=np.uint8)
    photos = np.stack([skdata.astronaut()[100:148, 180:220], skdata.chelsea()[80:128, 200:240]])
    noisy = np.clip(photos.astype(np.int64) + rng.integers(-20, 21, size=photos.shape), 0, 255).astype(np.uint8)
    blocky = photos.copy()
    blocky[:, ::2] = blocky[:, 1::2]  # structured degradation (row duplication)
    return [(rand_a, rand_b), (photos, noisy), (photos, blocky)]


def _nchw(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)


def test_psnr_matches_skimage(device):
    for a, b in _image_pairs():
        got = psnr(_nchw(a, device), _nchw(b, device))
        assert got.shape == (a.shape[0],) and got.dtype == torch.float64 and got.device.type == device.type
        want = [skm.peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)]
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12)
        # float inputs on the 0..255 scale give the same numbers
        np.testing.assert_allclose(psnr(_nchw(a, device).float(), _nchw(b, device).double()).cpu().numpy(), want, rtol=1e-12)


def test_psnr_identical_is_inf_and_hand_value():
    a = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    assert torch.isinf(psnr(a, a)).all()
    # every pixel off by 1 -> MSE 1 -> 20 log10(255)
    assert float(psnr(a, a + 1)) == pytest.approx(48.1308036086791, rel=1e-14)


def test_ssim_gaussian_matches_skimage_and_torchmetrics(device):
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    for a, b in _image_pairs():
        ta, tb = _nchw(a, device), _nchw(b, device)
        got = ssim(ta, tb)
        assert got.shape == (a.shape[0],) and got.dtype == torch.float64 and got.device.type == device.type
        want = [
            skm.structural_similarity(
                x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
            )
            for x, y in zip(a, b)
        ]
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-10, atol=1e-12)
        # torchmetrics 1.9 reflect-pads and averages the full map (borders included); cropped by the
        # same 5-pixel margin as skimage, its map gives our numbers.
        _, full = tm_ssim(ta.double(), tb.double(), data_range=255.0, reduction="none", return_full_image=True)
        tm = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
        np.testing.assert_allclose(got.cpu().numpy(), tm.cpu().numpy(), rtol=1e-10, atol=1e-12)


def test_ssim_uniform_matches_skimage_defaults_used_by_srflow():
    # SRFlow's Measure.py: structural_similarity(a, b, multichannel=True) -> 7x7 box, sample covariance
    for a, b in _image_pairs():
        got = ssim(_nchw(a, "cpu"), _nchw(b, "cpu"), window="uniform")
        want = [skm.structural_similarity(x, y, channel_axis=-1) for x, y in zip(a, b)]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_ssim_of_flat_images_by_hand():
    # No variance: only the luminance term is left, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with
    # C1 = (0.01 * 255)^2, whatever the window.
    a, b = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8), torch.full((1, 3, 16, 16), 110, dtype=torch.uint8)
    c1 = (0.01 * 255) ** 2
    want = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    for window in ("gaussian", "uniform"):
        assert float(ssim(a, b, window=window)) == pytest.approx(want, rel=1e-12)


def test_ssim_identical_is_one_and_errors():
    a = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[..., :10, :], a[..., :10, :])
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, a[:1])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        psnr(a[0], a[0])


# ------------------------------------------------------------------------------------------------
# LR-PSNR
# ------------------------------------------------------------------------------------------------


def test_lr_psnr_validates_sizes():
    lr = torch.zeros(1, 3, 5, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"sr must be lr's size times scale=4.*\(1, 3, 20, 20\).*\(1, 3, 20, 16\)"):
        lr_psnr(lr, torch.zeros(1, 3, 20, 16, dtype=torch.uint8), scale=4)
    with pytest.raises(ValueError, match="scale"):
        lr_psnr(lr, torch.zeros(1, 3, 20, 20, dtype=torch.uint8), scale=0)


def test_lr_psnr_constant_and_self_consistent():
    pytest.importorskip("attnflow.evaluation.imresize")
    from attnflow.evaluation.imresize import imresize

    # constant SR downscales to the same constant (bicubic weights sum to 1)
    sr = torch.full((2, 3, 32, 24), 90, dtype=torch.uint8)
    lr = torch.full((2, 3, 4, 3), 90, dtype=torch.uint8)
    assert torch.isinf(lr_psnr(lr, sr, scale=8)).all()
    assert torch.allclose(lr_psnr(lr + 1, sr, scale=8), torch.full((2,), 48.1308036086791, dtype=torch.float64))
    # an LR made from SR by the same pipeline is perfectly consistent, in both rounding modes
    g = torch.Generator().manual_seed(0)
    sr = torch.randint(0, 256, (2, 3, 32, 24), generator=g).to(torch.uint8)
    once = imresize(sr.double(), size=(4, 3)).round().clamp(0, 255).to(torch.uint8)
    assert torch.isinf(lr_psnr(once, sr, scale=8, per_axis_rounding=False)).all()
    rows = imresize(sr.double(), size=(4, 24)).round().clamp(0, 255)
    twice = imresize(rows, size=(4, 3)).round().clamp(0, 255).to(torch.uint8)
    assert torch.isinf(lr_psnr(twice, sr, scale=8)).all()
    # the two roundings differ by at most one grey level
    assert (once.int() - twice.int()).abs().max() <= 1


# ------------------------------------------------------------------------------------------------
# LPIPS
# ------------------------------------------------------------------------------------------------


def _tv_alexnet_features() -> nn.Sequential:
    """torchvision's alexnet().features layout (13 modules, the last maxpool unused by LPIPS)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )  # fmt: skip


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random torchvision-layout AlexNet weights (with classifier keys) and random lpips heads."""
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("lpips")
    feats = _tv_alexnet_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.1.weight"] = torch.randn(16, 9216)  # present in a full torchvision file; ignored
    sd["classifier.1.bias"] = torch.randn(16)
    torch.save(sd, d / "alexnet.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lins, d / "lin.pth")
    return d / "alexnet.pth", d / "lin.pth", feats


def test_lpips_loads_and_basic_properties(lpips_files, device):
    alex, lin, _ = lpips_files
    m = LPIPS(alexnet_weights=alex, lin_weights=lin).to(device)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training  # stays in eval
    g = torch.Generator().manual_seed(0)
    a = to_lpips_range(torch.randint(0, 256, (3, 3, 64, 64), generator=g).to(torch.uint8)).to(device)
    b = to_lpips_range(torch.randint(0, 256, (3, 3, 64, 64), generator=g).to(torch.uint8)).to(device)
    d_ab, d_ba, d_aa = m(a, b), m(b, a), m(a, a)
    assert d_ab.shape == (3,)
    assert d_aa.abs().max() < 1e-7
    assert torch.allclose(d_ab, d_ba, rtol=1e-6, atol=0)
    assert (d_ab > 0).all()


def test_lpips_matches_torchmetrics_implementation(lpips_files, monkeypatch):
    # torchmetrics' LPIPS code needs torchvision only to build AlexNet; hand it the same layers.
    import torchmetrics.functional.image.lpips as tml

    alex, lin, feats = lpips_files
    monkeypatch.setattr(tml, "_get_tv_model_features", lambda net, pretrained=False: feats)
    ref = tml._LPIPS(pretrained=True, net="alex", model_path=str(lin)).eval()
    m = LPIPS(alexnet_weights=alex, lin_weights=lin)
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    b = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    with torch.no_grad():
        want = ref(a, b).flatten()
    # same math except the feature-normalisation epsilon (lpips: ||x|| + 1e-10, torchmetrics:
    # sqrt(||x||^2 + 1e-8)), which is invisible at these feature magnitudes
    assert torch.allclose(m(a, b), want, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(m(a, b), 1.001 * want, rtol=1e-5, atol=1e-7)  # the check can fail


def test_lpips_default_lin_weights_come_from_torchmetrics(lpips_files):
    from attnflow.evaluation.lpips import _torchmetrics_lpips_alex

    path = _torchmetrics_lpips_alex()
    if path is None:
        pytest.skip("this torchmetrics does not ship lpips_models/alex.pth")
    m = LPIPS(alexnet_weights=lpips_files[0])
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(m.lin2.model[1].weight, shipped["lin2.model.1.weight"])


def test_lpips_missing_and_wrong_weights(lpips_files, tmp_path):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth") as e:
        LPIPS()
    assert isinstance(e.value, FileNotFoundError) and "IMAGENET1K_V1" in str(e.value)
    with pytest.raises(MissingWeightsError, match="not found.*nope.pth"):
        LPIPS(alexnet_weights=tmp_path / "nope.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision AlexNet state dict"):
        LPIPS(alexnet_weights=tmp_path / "bad.pth", lin_weights=lpips_files[1])
    with pytest.raises(ValueError, match="lpips v0.1"):
        LPIPS(alexnet_weights=lpips_files[0], lin_weights=tmp_path / "bad.pth")
    m = LPIPS(alexnet_weights=lpips_files[0], lin_weights=lpips_files[1])
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"in \[-1, 1\].*to_lpips_range"):
        m(x + 255, x)
    with pytest.raises(TypeError, match="to_lpips_range"):
        m(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(ValueError, match="at least 31x31"):
        m(x[..., :30, :], x[..., :30, :])


# ------------------------------------------------------------------------------------------------
# FID / KID / IS
# ------------------------------------------------------------------------------------------------


class TinyFeatures(nn.Module):
    """A small random feature network: conv -> ReLU -> global average pool; uint8 in."""

    num_features = 6

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.copy_(torch.randn(6, generator=g) * 0.1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x.float() / 127.5 - 1)).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(x)) * 5


def _images(n: int, shift: int = 0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 200, (n, 3, 12, 12), generator=g)
    return (base + shift).clamp(0, 255).to(torch.uint8)


def _fid_reference(f1: np.ndarray, f2: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_against_itself_and_shifted_and_scipy(device):
    net = TinyFeatures().to(device)
    real, fake = _images(64).to(device), _images(64, shift=40, seed=1).to(device)
    same = fid_kid_is(real, real, net, kid_subset_size=32, kid_subsets=5, batch_size=16)
    assert abs(same["fid"]) < 1e-6
    assert same["num_real"] == 64 and "is_mean" in same  # IS from net.logits
    other = fid_kid_is(real, fake, net, kid_subset_size=32, kid_subsets=5)
    assert other["fid"] > 0.05
    with torch.no_grad():
        want = _fid_reference(net(real).double().cpu().numpy(), net(fake).double().cpu().numpy())
    assert other["fid"] == pytest.approx(want, rel=1e-6)
    assert other["kid_mean"] > same["kid_mean"] and other["kid_std"] >= 0


def test_kid_and_is_values():
    net = TinyFeatures()
    real, fake = _images(40), _images(30, shift=60, seed=1)
    out = fid_kid_is(real, fake, net, kid_subsets=7, kid_subset_size=1000, is_splits=1)
    assert out["kid_subset_size"] == 30  # clipped to the smaller set
    assert set(out) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std"}
    # IS with one split: exp(mean_x KL(p(y|x) || p(y)))
    with torch.no_grad():
        p = torch.softmax(net.logits(fake).double(), dim=1)
    want = torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())
    assert out["is_mean"] == pytest.approx(float(want), rel=1e-9)
    assert out["is_mean"] >= 1.0
    # repeatable: KID's random subsets are seeded
    again = fid_kid_is(real, fake, net, kid_subsets=7, kid_subset_size=1000, is_splits=1)
    assert again["kid_mean"] == out["kid_mean"]


def test_sample_quality_streaming_metric_selection_and_errors():
    class FeaturesOnly(nn.Module):
        def forward(self, x):
            return x.float().mean(dim=(2, 3))

    sq = SampleQuality(FeaturesOnly(), kid_subset_size=4, kid_subsets=3)
    assert sq.wanted == ("fid", "kid")  # no logits -> no IS
    for b in _images(12).split(5):
        sq.update(b, real=True)
    sq.update(_images(10, shift=30)[:, :1], real=False)  # grey batches are repeated to RGB
    out = sq.compute()
    assert "is_mean" not in out and out["num_fake"] == 10 and out["fid"] > 0
    sq.reset()
    with pytest.raises(RuntimeError, match="at least 2"):
        sq.compute()
    with pytest.raises(TypeError, match="uint8"):
        sq.update(torch.rand(2, 3, 8, 8), real=True)
    with pytest.raises(ValueError, match="Inception Score needs class logits"):
        SampleQuality(FeaturesOnly(), metrics=("fid", "is"))
    with pytest.raises(ValueError, match="subset of"):
        SampleQuality(FeaturesOnly(), metrics=("psnr",))
    bad = SampleQuality(nn.Identity())
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        bad.update(_images(2), real=True)


class StyleGANLikeInception(nn.Module):
    """Same forward signature as StyleGAN2-ADA's TorchScript inception-2015-12-05.pt."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.output = nn.Linear(4, 7)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        f = self.proj(((img.to(torch.float32) - 128.0) / 128.0).mean(dim=(2, 3)))
        if return_features:
            return f
        logits = nn.functional.linear(f, self.output.weight) if no_output_bias else self.output(f)
        return torch.softmax(logits, dim=1)


class PlainFeatures(nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.to(torch.float32).mean(dim=(2, 3))


def _script_save(module: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in recent torch; still works
        torch.jit.save(torch.jit.script(module), str(path))


def test_load_inception_torchscript_and_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="--inception PATH") as e:
        load_inception(None)
    assert "TorchScript" in str(e.value) and "inception-2015-12-05.pt" in str(e.value)
    with pytest.raises(MissingWeightsError, match="--inception"):
        fid_kid_is(_images(4), _images(4))
    with pytest.raises(MissingWeightsError, match="not found"):
        load_inception(tmp_path / "missing.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "fidelity.pth")
    with pytest.raises(ValueError, match="state dict.*torchvision"):
        load_inception(tmp_path / "fidelity.pth")

    torch.manual_seed(0)
    _script_save(StyleGANLikeInception(), tmp_path / "sg.pt")
    ext = load_inception(tmp_path / "sg.pt")
    assert isinstance(ext, InceptionExtractor) and ext.has_logits and ext.num_features == 2048
    x = _images(5)
    assert ext(x).shape == (5, 4)
    p = torch.softmax(ext.logits(x), dim=1)
    assert torch.allclose(p, ext.net(x, no_output_bias=True).double(), atol=1e-6)
    out = fid_kid_is(_images(20), _images(20, shift=50, seed=1), weights_path=tmp_path / "sg.pt", kid_subset_size=10)
    assert {"fid", "kid_mean", "is_mean"} <= set(out)

    _script_save(PlainFeatures(), tmp_path / "plain.pt")
    plain = load_inception(tmp_path / "plain.pt")
    assert not plain.has_logits and not hasattr(plain, "num_features")
    out = fid_kid_is(_images(20), _images(20, shift=50, seed=1), weights_path=tmp_path / "plain.pt", kid_subset_size=10)
    assert "fid" in out and "is_mean" not in out
    assert math.isfinite(out["fid"]) and out["fid"] > 0
