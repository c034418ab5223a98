"""Bad input is refused with a clear message; masks; float32 accuracy; caches."""

from __future__ import annotations

import pytest
import torch

from attnflow.layers import (
    ActNorm,
    AffineCoupling,
    AffineInjector,
    IMap,
    InvConv1x1,
    ITrans,
    MixtureLogisticCoupling,
    Squeeze,
    make_mask,
)
from attnflow.testing import perturb_parameters, train_steps

LAYERS_4CH = {
    "IMap": lambda: IMap(4),
    "ITrans": lambda: ITrans(4),
    "ActNorm": lambda: ActNorm(4),
    "InvConv1x1": lambda: InvConv1x1(4),
    "AffineCoupling": lambda: AffineCoupling(4, hidden=8),
    "MixtureLogisticCoupling": lambda: MixtureLogisticCoupling(4, hidden=8, blocks=1, components=2),
}


@pytest.mark.parametrize("name", list(LAYERS_4CH))
def test_wrong_channels_names_layer_expected_and_received(name):
    layer = LAYERS_4CH[name]()
    with pytest.raises(ValueError) as err:
        layer(torch.randn(2, 5, 4, 4))
    msg = str(err.value)
    assert name in msg and "4" in msg and "(2, 5, 4, 4)" in msg
    with pytest.raises(ValueError, match=name):
        layer.inverse(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("name", list(LAYERS_4CH))
def test_non_4d_input(name):
    layer = LAYERS_4CH[name]()
    with pytest.raises(ValueError, match=r"4D.*\(2, 4, 16\)"):
        layer(torch.randn(2, 4, 16))


def test_itrans_grid_must_divide():
    with pytest.raises(ValueError, match=r"ITrans.*divisible by \(2, 2\).*H=5, W=4"):
        ITrans(3)(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match="perfect square"):
        ITrans(3, patches=3)
    with pytest.raises(ValueError, match="heads"):
        ITrans(3, heads=0)


def test_squeeze_must_divide():
    with pytest.raises(ValueError, match=r"Squeeze.*divisible by \(2, 2\).*H=3"):
        Squeeze(2)(torch.randn(1, 3, 3, 4))


@pytest.mark.parametrize("cls", [IMap, ITrans])
def test_unknown_mask_and_parity(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: unknown mask 'diagonal'.*spatial_channel"):
        cls(4, mask="diagonal")
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        cls(4, parity=2)


def test_conditional_layer_needs_matching_cond():
    layer = AffineInjector(4, 3, hidden=8)
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match="AffineInjector.*needs cond"):
        layer(x)
    with pytest.raises(ValueError, match=r"expected cond of shape \(2, 3, 4, 4\).*\(2, 3, 2, 2\)"):
        layer(x, torch.randn(2, 3, 2, 2))


@pytest.mark.parametrize("kind", ["spatial", "channel", "spatial_channel", "random"])
def test_masks_partition_and_alternate(kind):
    m0 = make_mask(kind, 5, 4, 6, 0)
    m1 = make_mask(kind, 5, 4, 6, 1)
    assert m0.shape == (5, 4, 6) and m0.dtype == torch.bool
    assert torch.equal(m0, ~m1)
    assert 0 < int(m0.sum()) < m0.numel()


def test_mask_definitions():
    c, i, j = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    assert torch.equal(make_mask("spatial_channel", 3, 4, 4), (c + i + j) % 2 == 0)
    assert torch.equal(make_mask("spatial", 3, 4, 4), (i + j) % 2 == 0)
    assert torch.equal(make_mask("channel", 3, 4, 4), c < 1)
    r = make_mask("random", 3, 4, 4, seed=7)
    assert int(r.sum()) == 24 and torch.equal(r, make_mask("random", 3, 4, 4, seed=7))
    assert not torch.equal(r, make_mask("random", 3, 4, 4, seed=8))


def test_random_mask_seed_survives_state_dict():
    a, b = IMap(4, mask="random", seed=3), IMap(4, mask="random", seed=9)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.mask(4, 4), b.mask(4, 4))


@pytest.mark.parametrize("spread", [0.5, 2.0, 5.0])
def test_mixture_inverse_float32_within_1e6_of_the_true_root(spread):
    """The float32 solve lands within 1e-6 (relative to max(1, |x|)) of the exact root of the same
    float32 equation, found in float64; ill-conditioned flat mixtures included."""
    from attnflow.layers.mixture_logistic import mixture_logistic_inverse, mixture_logistic_logcdf

    gen = torch.Generator().manual_seed(0)
    shape, k = (16, 4, 8, 8), 32
    log_pi = torch.log_softmax(2 * torch.randn(*shape, k, generator=gen), -1)
    mu = spread * torch.randn(*shape, k, generator=gen)
    log_s = (torch.randn(*shape, k, generator=gen) - 1).clamp_min(-7)
    x = spread * torch.randn(shape, generator=gen)
    log_cdf, log_sf, _ = mixture_logistic_logcdf(x, log_pi, mu, log_s)
    target = log_cdf - log_sf
    solved = mixture_logistic_inverse(target, log_pi, mu, log_s)
    exact = mixture_logistic_inverse(target.double(), log_pi.double(), mu.double(), log_s.double())
    assert solved.dtype == torch.float32
    assert ((solved.double() - exact).abs() / exact.abs().clamp_min(1)).max() <= 1e-6
    # and the float64 solve satisfies its equation to rounding
    c64, s64, _ = mixture_logistic_logcdf(exact, log_pi.double(), mu.double(), log_s.double())
    assert ((c64 - s64) - target.double()).abs().max() < 1e-9


def test_mixture_coupling_float32_round_trip():
    torch.manual_seed(1)
    layer = MixtureLogisticCoupling(6, hidden=16, blocks=1, heads=2, components=32)
    perturb_parameters(layer, 0.1)
    train_steps(layer, (4, 6, 8, 8), steps=5, lr=1e-2)
    layer.eval()
    x = torch.randn(4, 6, 8, 8)
    with torch.no_grad():
        y, ld = layer(x)
        x_rec, ld_inv = layer.inverse(y)
    assert (x_rec - x).abs().max() <= 1e-5
    assert (ld + ld_inv).abs().max() <= 1e-3


def test_attention_float32_round_trip():
    for layer in (IMap(6, attention="channel"), ITrans(6, heads=4)):
        perturb_parameters(layer, 0.2)
        x = torch.randn(3, 6, 8, 12)
        y, ld = layer(x)
        x_rec, ld_inv = layer.inverse(y)
        assert (x_rec - x).abs().max() < 1e-5
        assert (ld + ld_inv).abs().max() < 1e-3


def test_invconv_inverse_cache_follows_parameters():
    layer = InvConv1x1(4).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y, _ = layer(x)
        assert torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        cached = layer.inverse_weight()
        assert layer.inverse_weight() is cached  # reused while nothing changed
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x)[0].sum().backward()
    opt.step()
    with torch.no_grad():
        y, _ = layer(x)
        assert torch.allclose(layer.inverse(y)[0], x, atol=1e-5)


def test_actnorm_initialises_and_survives_constant_channel():
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    x[:, 1] = 2.0  # zero std
    layer = ActNorm(3)
    layer.initialize(x)
    y, ld = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert y[:, 0].mean().abs() < 1e-5 and (y[:, 0].std(unbiased=False) - 1).abs() < 1e-4
    assert y[:, 1].abs().max() < 1e-6  # centred, scale kept at 1
    assert bool(layer.initialized)


def test_flowpp_dropout_like_the_reference():
    """Channel dropout in the gated conv; attention dropout on the weights (reference) or output."""
    from attnflow.nn import FlowPPNet

    torch.manual_seed(0)
    nets = {on: FlowPPNet(3, 6, hidden=8, blocks=1, heads=2, dropout=0.5, attention_dropout=on) for on in ("weights", "output")}
    nets["output"].load_state_dict(nets["weights"].state_dict())
    conv = nets["weights"].blocks[0]
    assert isinstance(conv.drop, torch.nn.Dropout2d)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():  # the output conv starts at zero: give it weights so differences show
        for net in nets.values():
            net.conv_out.parametrizations.weight.original0.fill_(1.0)
        for net in nets.values():
            net.eval()
        torch.testing.assert_close(nets["weights"](x), nets["output"](x))  # eval: no dropout at all
        for net in nets.values():
            net.train()
        torch.manual_seed(1)
        a = nets["weights"](x)
        torch.manual_seed(1)
        b = nets["output"](x)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="attention dropout must act on one of weights, output"):
        FlowPPNet(3, 6, hidden=8, blocks=1, heads=2, attention_dropout="everywhere")


def _mixture(shape, k, seed=0, dtype=torch.float64, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    log_pi = torch.log_softmax(2 * torch.randn(*shape, k, generator=gen, dtype=dtype), -1)
    mu = spread * torch.randn(*shape, k, generator=gen, dtype=dtype)
    log_s = (torch.randn(*shape, k, generator=gen, dtype=dtype) - 1).clamp_min(-7)
    return log_pi, mu, log_s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_inverse_of_extreme_targets_is_solved_in_log_space(dtype):
    """Targets whose F or 1 - F underflows in probability space (|logit| up to 110 in float32, 760 in
    float64) are still solved: the float64 log-space residual at the root is rounding-small."""
    from attnflow.layers.mixture_logistic import mixture_logistic_inverse, mixture_logistic_logcdf

    log_pi, mu, log_s = _mixture((3, 8), 6, dtype=dtype)
    big = 760.0 if dtype == torch.float64 else 110.0
    target = torch.linspace(-big, big, 8, dtype=dtype).repeat(3, 1)
    target[:, 3] = 0.5  # ordinary targets beside the extreme ones
    x = mixture_logistic_inverse(target, log_pi, mu, log_s)
    assert torch.isfinite(x).all()
    c, s, _ = mixture_logistic_logcdf(x.double(), log_pi.double(), mu.double(), log_s.double())
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert ((c - s) - target.double()).abs().max() <= tol * target.double().abs().clamp_min(1).max()


def test_mixture_inverse_with_the_components_on_another_axis_and_its_gradient():
    """``dim=1`` (the coupling's ``[B, K, C, H, W]``) gives the same root as the last axis, and the
    implicit-function gradient matches finite differences of the solve."""
    from attnflow.layers.mixture_logistic import mixture_logistic_inverse, mixture_logistic_logcdf

    log_pi, mu, log_s = _mixture((2, 3, 4), 5)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    c, s, _ = mixture_logistic_logcdf(x, log_pi, mu, log_s)
    moved = [v.movedim(-1, 1) for v in (log_pi, mu, log_s)]
    c1, s1, _ = mixture_logistic_logcdf(x, *moved, dim=1)
    torch.testing.assert_close((c1, s1), (c, s), rtol=1e-13, atol=1e-13)
    root = mixture_logistic_inverse(c - s, *moved, dim=1)
    torch.testing.assert_close(root, x, rtol=1e-10, atol=1e-10)
    params = [v.clone().requires_grad_() for v in (c - s, mu, log_s)]
    assert torch.autograd.gradcheck(
        lambda t, m, ls: mixture_logistic_inverse(t, log_pi, m, ls), params, eps=1e-6, atol=1e-6)
    with torch.no_grad():  # no gradient wanted: the same root without the differentiable step
        torch.testing.assert_close(mixture_logistic_inverse(*params[:1], log_pi, *params[1:]), root,
                                   rtol=1e-12, atol=1e-12)


def test_lu_factors_follow_the_default_dtype():
    from attnflow.layers import InvConv1x1

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = InvConv1x1(4)
    finally:
        torch.set_default_dtype(before)
    assert {t.dtype for t in (*layer.parameters(), *layer.buffers())} == {torch.float64}
    assert {t.dtype for t in InvConv1x1(4).parameters()} == {before}
