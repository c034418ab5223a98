"""Every layer through the brute-force checker, with parameters moved away from their init."""

from __future__ import annotations

import pytest
import torch
from conftest import move_layer

from attnflow.core import Sequential
from attnflow.layers import (
    ActNorm,
    AffineCoupling,
    AffineInjector,
    ConditionalAffineCoupling,
    Dequantize,
    IMap,
    InvConv1x1,
    ITrans,
    Logit,
    MixtureLogisticCoupling,
    Squeeze,
    SwapHalves,
)
from attnflow.testing import FlowCheckError, check_flow

SHAPES = [(2, 4, 4, 4), (1, 5, 6, 4), (3, 3, 2, 6)]
COND_CH = 3


@pytest.fixture()
def moved(device, dtype):
    """``moved(layer, shape, cond=None)``: the layer off its initialisation (see ``move_layer``)."""
    return lambda layer, shape, cond=None, steps=3: move_layer(layer, shape, device, cond, steps=steps, dtype=dtype)


def _cond(shape, device, dtype=torch.float64):
    return torch.randn(shape[0], COND_CH, shape[2], shape[3], dtype=dtype, device=device)


LAYERS = {
    "actnorm": lambda c: ActNorm(c),
    "invconv": lambda c: InvConv1x1(c),
    "affine": lambda c: AffineCoupling(c, hidden=8),
    "mixlogistic": lambda c: MixtureLogisticCoupling(c, hidden=8, blocks=1, heads=2, components=4),
    "swap": lambda c: SwapHalves(c),
    "squeeze": lambda c: Squeeze(2),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(LAYERS))
def test_unconditional_layers(name, shape, device, moved, check_tolerances):
    if name == "squeeze" and (shape[2] % 2 or shape[3] % 2):
        pytest.skip("squeeze needs even sizes")
    factory = lambda: LAYERS[name](shape[1])  # noqa: E731
    layer = moved(factory(), shape)
    check_flow(layer, shape, device=device, factory=factory, **check_tolerances)


COND_LAYERS = {
    "cond_affine": lambda c: ConditionalAffineCoupling(c, COND_CH, hidden=8),
    "injector": lambda c: AffineInjector(c, COND_CH, hidden=8),
    "cond_mixlogistic": lambda c: MixtureLogisticCoupling(
        c, hidden=8, blocks=1, heads=2, components=3, cond_channels=COND_CH
    ),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(COND_LAYERS))
def test_conditional_layers(name, shape, device, moved, check_tolerances):
    cond = _cond(shape, device, check_tolerances["dtype"])
    factory = lambda: COND_LAYERS[name](shape[1])  # noqa: E731
    layer = moved(factory(), shape, cond=cond)
    check_flow(layer, shape, cond=cond, device=device, factory=factory, **check_tolerances)


@pytest.mark.parametrize("mask", ["spatial", "channel", "spatial_channel", "random"])
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("attention", ["spatial", "channel"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_imap(mask, parity, attention, shape, device, moved, check_tolerances):
    factory = lambda: IMap(shape[1], mask=mask, parity=parity, attention=attention)  # noqa: E731
    layer = moved(factory(), shape)
    allow = ()
    m = layer.mask(shape[2], shape[3])
    if not m.any():  # nothing is kept: the attention input is constant zero
        allow = ("conv.weight", "s")
    if mask == "spatial" and attention == "spatial":
        # a 1x1 conv at an attended position sees only that position's kept entries: none
        allow = ("conv.weight",)
    if m.all():  # nothing is attended
        allow = ("conv.weight", "conv.bias", "offset")
    check_flow(layer, shape, device=device, factory=factory, allow_zero_grad=allow, **check_tolerances)


ITRANS_SHAPES = [(2, 4, 4, 4), (1, 5, 6, 4), (3, 3, 2, 6), (2, 2, 6, 6)]
# (patches, shape) pairs whose patch grid divides the map (the others are input errors, tested apart)
ITRANS_CASES = [
    (p, s) for p in (1, 4, 9) for s in ITRANS_SHAPES if s[2] % int(p**0.5) == 0 and s[3] % int(p**0.5) == 0
]


@pytest.mark.parametrize("mask", ["spatial", "channel", "spatial_channel", "random"])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("patches,shape", ITRANS_CASES, ids=str)
@pytest.mark.parametrize("scale", [True, False], ids=["scaled", "unscaled"])
def test_itrans(mask, heads, patches, shape, scale, device, moved, check_tolerances):
    grid = int(patches**0.5)
    factory = lambda: ITrans(shape[1], heads=heads, patches=patches, mask=mask, parity=1, scale=scale)  # noqa: E731
    layer = moved(factory(), shape)
    allow = ()
    local = layer.mask(shape[2] // grid, shape[3] // grid)
    if not local.any():  # no kept entries: the attention is a constant
        allow = ("query.weight", "query.bias", "key.weight", "key.bias", "log_temperature")
    if patches == 1:  # one patch: W = 1, the layer is the identity
        allow = ("query.weight", "query.bias", "key.weight", "key.bias", "log_temperature", "theta")
    if local.all():  # nothing unmasked: the layer is the identity
        allow = allow + ("query.weight", "query.bias", "key.weight", "key.bias", "log_temperature", "theta",
                         "log_scale")
    check_flow(layer, shape, device=device, factory=factory, allow_zero_grad=allow, **check_tolerances)


def test_itrans_scale_starts_volume_preserving_and_can_expand():
    """With uniform attention the scaled layer starts with log-det 0; the unscaled one can only
    contract (rows sum to 1), the scaled one expands when its scale grows."""
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for patches in (4, 16):
        scaled = ITrans(4, patches=patches).double()
        plain = ITrans(4, patches=patches, scale=False).double()
        for layer in (scaled, plain):
            with torch.no_grad():  # Q = K = 0: uniform attention A = J / N
                for p in (layer.query.weight, layer.query.bias, layer.key.weight, layer.key.bias):
                    p.zero_()
        assert scaled(x)[1].abs().max() < 1e-5  # (the start value is stored in float32)
        assert (plain(x)[1] < -1).all()
        with torch.no_grad():
            scaled.log_scale.add_(0.5)
        assert (scaled(x)[1] > 1).all()
        y, _ = scaled(x)
        torch.testing.assert_close(scaled.inverse(y)[0], x, rtol=0, atol=1e-12)


def test_dequantize_and_logit(device):
    shape = (2, 3, 4, 4)
    check_flow(Dequantize(256, noise=False), shape, device=device)
    x01 = torch.rand(shape, dtype=torch.float64) * 0.98 + 0.01
    check_flow(Logit(0.05), shape, device=device, x=x01)


def test_sequential_step_with_attention(device, moved, check_tolerances):
    shape = (2, 6, 4, 4)
    factory = lambda: Sequential(  # noqa: E731
        ActNorm(6), InvConv1x1(6), ITrans(6, heads=2), AffineCoupling(6, hidden=8), IMap(6, parity=1)
    )
    layer = moved(factory(), shape)
    check_flow(layer, shape, device=device, factory=factory, **check_tolerances)


def test_checker_catches_a_wrong_logdet(device):
    """A check that cannot fail is a bug: a layer with an off-by-a-bit log-det must be caught."""

    class Wrong(IMap):
        def forward(self, x, cond=None):
            y, ld = super().forward(x, cond)
            return y, ld * (1 + 1e-6)

    layer = move_layer(Wrong(4), (2, 4, 4, 4), device)
    with pytest.raises(FlowCheckError, match="autograd Jacobian"):
        check_flow(layer, (2, 4, 4, 4), device=device)


def test_checker_catches_a_wrong_inverse(device):
    class Wrong(AffineCoupling):
        def inverse(self, z, cond=None):
            x, ld = super().inverse(z, cond)
            return x + 1e-8, ld

    layer = move_layer(Wrong(4, hidden=8), (2, 4, 4, 4), device)
    with pytest.raises(FlowCheckError, match="round trip"):
        check_flow(layer, (2, 4, 4, 4), device=device)


def test_checker_catches_batch_dependence(device):
    class Leaky(AffineCoupling):
        def forward(self, x, cond=None):
            y, ld = super().forward(x, cond)
            return y + 1e-3 * x.mean(), ld

    layer = move_layer(AffineCoupling(4, hidden=8), (2, 4, 4, 4), device)
    leaky = Leaky(4, hidden=8).to(device=device, dtype=torch.float64)
    leaky.load_state_dict(layer.state_dict())
    with pytest.raises(FlowCheckError):
        check_flow(leaky, (2, 4, 4, 4), device=device)


def test_checker_catches_dead_parameters(device):
    layer = AffineCoupling(4, hidden=8)  # zero-initialised output conv: hidden layers get no gradient
    with pytest.raises(FlowCheckError, match="all-zero gradient"):
        check_flow(layer, (2, 4, 4, 4), device=device)


def test_itrans_init_mixing(device, moved, check_tolerances):
    """``init_mixing`` m: W = (1 - m) I + m A at the start (A uniform here: J / N)."""
    layer = ITrans(4, patches=4, scale=False, init_mixing=0.1).double()
    with torch.no_grad():
        for p in (layer.query.weight, layer.query.bias, layer.key.weight, layer.key.bias):
            p.zero_()
    w = layer.weights(torch.randn(2, 4, 2, 2, 4, dtype=torch.float64))
    off = w - torch.diag_embed(torch.diagonal(w, dim1=-2, dim2=-1))
    torch.testing.assert_close(off.sum(-1), torch.full((2, 4), 0.1 * 3 / 4, dtype=torch.float64))
    shape = (2, 4, 4, 4)
    factory = lambda: ITrans(4, heads=2, init_mixing=0.1)  # noqa: E731
    check_flow(moved(factory(), shape), shape, device=device, factory=factory, **check_tolerances)
    for bad in (0.0, 0.5, 0.7):
        with pytest.raises(ValueError, match=r"init_mixing must be in \(0, 0.5\)"):
            ITrans(4, init_mixing=bad)


@pytest.mark.parametrize("heads,key_channels", [(1, None), (3, None), (2, 2)])
def test_itrans_gram_and_projected_logits_agree(heads, key_channels, dtype, device, monkeypatch):
    """Both routes to the logits give the same mixing matrix and gradients (including the key bias,
    whose only effect is a constant along each softmax row), and each is taken where it should be."""
    torch.manual_seed(0)
    layer = ITrans(5, heads=heads, patches=4, key_channels=key_channels).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(3, 4, 3, 3, 5, device=device, dtype=dtype)  # [B, N, ph, pw, C]
    results = {}
    for route in (True, False):
        monkeypatch.setattr(ITrans, "_uses_gram", lambda self, entries, channels, route=route: route)
        called = []
        for name in ("_logits_gram", "_logits_projected"):
            original = getattr(ITrans, name)
            monkeypatch.setattr(ITrans, name, lambda self, xf, f=original, n=name: called.append(n) or f(self, xf))
        layer.zero_grad()
        xg = x.clone().requires_grad_()
        w = layer.weights(xg)
        (w * torch.linspace(-1, 1, w.numel(), device=device, dtype=dtype).view_as(w)).sum().backward()
        assert called == ["_logits_gram" if route else "_logits_projected"]
        results[route] = (w, xg.grad, {n: p.grad.clone() for n, p in layer.named_parameters()})
        monkeypatch.undo()
    (w1, g1, p1), (w2, g2, p2) = results[True], results[False]
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(w1, w2, **tol)
    torch.testing.assert_close(g1, g2, **tol)
    for name in p1:
        scale = max(p2[name].abs().max().item(), 1.0) if name != "key.bias" else 1.0
        torch.testing.assert_close(p1[name] / scale, p2[name] / scale, **tol)


def test_itrans_route_rule():
    """Gram matrices for few patches of many entries (16x16 in 4 patches), the projected queries
    and keys for one patch per pixel."""
    assert ITrans(12, heads=4, patches=4)._uses_gram(entries=64, channels=12)
    assert ITrans(12, heads=1, patches=4)._uses_gram(entries=64, channels=12)
    assert not ITrans(8, heads=4, patches=49)._uses_gram(entries=1, channels=8)
    assert not ITrans(4, heads=1, patches=4)._uses_gram(entries=4, channels=4)  # 4 * 16 > 2 * 4 * 4
