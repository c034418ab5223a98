"""Whole models: exact decode(encode(x)), brute-force log-det, sampling, bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from attnflow.config import DEFAULTS, merge
from attnflow.models import build_model, dequantization_noise
from attnflow.testing import FlowCheckError, check_model, perturb_parameters


def tiny_config(backbone: str, attention: str = "none", position: str = "pos3", **model) -> dict:
    m = dict(
        backbone=backbone, image_shape=[1, 8, 8], levels=2, steps=2, hidden=8,
        prior="ar" if backbone == "marflow" else "gaussian",
        prior_hidden=4, prior_layers=1, attention=attention, position=position, heads=2,
        patches=[4, 4],
    )
    if backbone == "marflow":
        m.update(components=3, blocks=1, coupling_heads=2, dropout=0.0)
    m.update(model)
    return merge(DEFAULTS, {"model": m})


def _moved_model(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(cfg).double()
    x = torch.randint(0, 256, (3, *cfg["model"]["image_shape"])).double()
    model.initialize(x)
    perturb_parameters(model, 0.03, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):  # a few likelihood steps on random digits-like data
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x


CASES = [
    ("glow", "none", "pos3"),
    ("glow", "imap", "pos1"),
    ("glow", "itrans", "pos2"),
    ("marflow", "none", "pos3"),
    ("marflow", "imap", "pos3"),
    ("marflow", "imap", "pos4"),
    ("marflow", "itrans", "pos3"),
    ("marflow", "itrans", "pos1"),
]


@pytest.mark.parametrize("backbone,attention,position", CASES)
def test_model_exact_inverse_and_brute_force_logdet(backbone, attention, position):
    cfg = tiny_config(backbone, attention, position)
    model, x = _moved_model(cfg)
    with dequantization_noise(model, False):
        report = check_model(model, x, jacobian_samples=2)
    assert report.roundtrip_error < 1e-10 and report.jacobian_logdet_error < 1e-8


def test_check_model_catches_a_wrong_logdet():
    cfg = tiny_config("glow", "imap")
    model, x = _moved_model(cfg)
    layer = model.levels[0].flow[1][2]  # the iMap of the first step
    orig = layer.forward
    layer.forward = lambda h, c=None: (lambda y, ld: (y, ld + 1e-3))(*orig(h, c))
    with dequantization_noise(model, False), pytest.raises(FlowCheckError, match="Jacobian"):
        check_model(model, x, jacobian_samples=1)


def test_odd_image_sizes_and_rgb():
    cfg = tiny_config("glow", "itrans", image_shape=[3, 8, 12], patches=[4, 1])
    model, x = _moved_model(cfg)
    with dequantization_noise(model, False):
        check_model(model, x, jacobian_samples=1)


def test_sampling_shapes_temperature_and_determinism():
    cfg = tiny_config("marflow", "imap")
    model, _ = _moved_model(cfg)
    model.eval()
    s = model.sample(5, temperature=0.7)
    assert s.shape == (5, 1, 8, 8) and s.dtype == torch.uint8
    torch.manual_seed(1)
    a = model.sample(3, temperature=0.0)
    torch.manual_seed(2)
    b = model.sample(3, temperature=0.0)
    assert torch.equal(a, b)  # temperature 0: the prior means, no randomness left


def test_sampling_and_decoding_skip_only_the_discarded_mixture_logdet(monkeypatch):
    """``model.sample`` and ``decode`` run the flows inside ``core.no_logdet``: the mixture coupling's
    inverse then skips its log-det pass (a second evaluation of all components) and returns zeros;
    its output, the samples and the decoded images are bitwise those with the log-det computed."""
    import attnflow.layers.coupling as coupling
    import attnflow.layers.mixture_logistic as mixture
    from attnflow.core import logdet_wanted, no_logdet
    from attnflow.layers import MixtureLogisticCoupling

    model, x = _moved_model(tiny_config("marflow", "imap"))
    model.eval()
    layer = next(m for m in model.modules() if isinstance(m, MixtureLogisticCoupling))
    z = torch.randn(2, layer.channels, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        out, logdet = layer.inverse(z)
        assert logdet.abs().max() > 0
        with no_logdet():
            assert not logdet_wanted()
            with no_logdet():
                pass
            assert not logdet_wanted()  # the inner block restores the outer state
            out_skipped, zero = layer.inverse(z)
        assert logdet_wanted()
    assert torch.equal(out_skipped, out) and torch.equal(zero, torch.zeros_like(logdet))

    calls = []
    real = mixture.mixture_logistic_logcdf
    counted = lambda *a, **k: calls.append(1) or real(*a, **k)
    for module in (coupling, mixture):  # the layer's own calls and the inverse's
        monkeypatch.setattr(module, "mixture_logistic_logcdf", counted)
    torch.manual_seed(5)
    skipped = model.sample(3, temperature=0.7)
    latents, _ = model.encode(x)
    calls.clear()
    with torch.no_grad():  # (with gradients, the inverse's implicit-gradient step needs the CDF)
        decoded = model.decode(latents)
    assert not calls  # neither sampling nor decoding evaluated the mixture's log-CDF
    monkeypatch.setattr(coupling, "logdet_wanted", lambda: True)  # as before no_logdet existed
    torch.manual_seed(5)
    assert torch.equal(model.sample(3, temperature=0.7), skipped)
    with torch.no_grad():
        assert torch.equal(model.decode(latents), decoded)
    assert calls


def test_log_prob_is_per_sample_and_bpd_matches_formula():
    cfg = tiny_config("marflow", "itrans")
    model, x = _moved_model(cfg)
    model.eval()
    with dequantization_noise(model, False):
        lp = model.log_prob(x)
        lp1 = torch.cat([model.log_prob(x[i : i + 1]) for i in range(x.shape[0])])
        assert torch.allclose(lp, lp1, rtol=1e-10, atol=1e-9)
        bpd = model.bits_per_dim(x)
    d = x[0].numel()
    assert torch.allclose(bpd, -lp / (d * math.log(2)), rtol=1e-12)


def test_wrong_image_shape_is_refused():
    model = build_model(tiny_config("glow"))
    with pytest.raises(ValueError, match=r"built for images \(1, 8, 8\).*\(3, 8, 8\)"):
        model.log_prob(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4))


def test_image_size_must_divide_levels():
    from attnflow.config import ConfigError

    with pytest.raises(ValueError, match="divisible by 2\\*\\*levels"):
        build_model(tiny_config("glow", image_shape=[1, 28, 28], levels=3))
    with pytest.raises(ConfigError, match="attention must be one of"):
        build_model(tiny_config("glow", attention="transformer"))


@pytest.mark.parametrize(
    "preset,expected",
    [
        ("mnist-3-4-96-none", 46.01),
        ("mnist-3-2-96-imap", 23.78),
        ("mnist-3-2-48-imap", 8.94),
        ("cifar10-3-4-256-none", 252.8),
    ],
)
def test_paper_parameter_counts(preset, expected):
    """Parameter counts of the paper's configs, in millions, within 4% of Table 2/3."""
    from attnflow.config import load_preset

    with torch.device("meta"):
        model = build_model(load_preset(preset))
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - expected) / expected < 0.04, n
