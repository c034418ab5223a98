"""ChannelARPrior (mARFlow's ConvLSTM channel prior) against a naive time-major reference, float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnflow.models import build_levels
from attnflow.models.marflow import ar_priors
from attnflow.nn import soft_clamp
from attnflow.priors import ChannelARPrior, reference_geometry
from attnflow.testing import perturb_parameters

DT = torch.float64
C, CTX, COND, H, W = 4, 3, 2, 5, 3  # non-square on purpose

# (context_channels, cond_channels, kernel_size, dilation)
CONFIGS = {
    "top": (0, 0, 3, 1),
    "context": (CTX, 0, 3, 2),
    "context+cond": (CTX, COND, 5, 1),
    "cond-only": (0, COND, 3, 1),
}


def _prior(ctx: int, cond: int, k: int, d: int, device, *, scale: float = 0.3) -> ChannelARPrior:
    prior = ChannelARPrior(
        C, ctx, cond, hidden=6, layers=3, embed_channels=4, embed_hidden=5, kernel_size=k, dilation=d
    )
    prior = prior.to(device=device, dtype=DT)
    # Off the N(0, I) init: the zero output conv would make mu = log_std = 0 everywhere.
    return perturb_parameters(prior, scale)


def _inputs(b: int, ctx: int, cond: int, device, c: int = C):
    z = torch.randn(b, c, H, W, dtype=DT, device=device)
    context = torch.randn(b, ctx, H, W, dtype=DT, device=device) if ctx else None
    cnd = torch.randn(b, cond, H, W, dtype=DT, device=device) if cond else None
    return z, context, cnd


def naive_mean_log_std(prior: ChannelARPrior, z, context, cond):
    """Straight from the math, time-major: per step t, concatenate [z_{t-1}, E(side)], conv, every
    LSTM layer (gates [i, f, o, g], hidden-to-gate conv on zeros at t = 0 too), conv3x3."""
    b, t_len, h, w = z.shape
    side = [t for t in (context, cond) if t is not None]
    e = prior.embed(torch.cat(side, dim=1)) if side else None
    n_layers, hid = len(prior.lstm), prior.hidden
    hs = [z.new_zeros(b, hid, h, w) for _ in range(n_layers)]
    cs = [z.new_zeros(b, hid, h, w) for _ in range(n_layers)]
    mus, logs = [], []
    for t in range(t_len):
        z_prev = z.new_zeros(b, 1, h, w) if t == 0 else z[:, t - 1 : t]
        x = z_prev if e is None else torch.cat([z_prev, e], dim=1)
        x = prior.conv_in(x)
        for l, layer in enumerate(prior.lstm):
            kw = dict(padding=layer.padding, dilation=layer.dilation)
            gates = (
                F.conv2d(x, layer.weight_ih, layer.bias, **kw)
                + F.conv2d(hs[l], layer.weight_hh, None, **kw)
            )
            i, f, o, g = gates.chunk(4, dim=1)
            cs[l] = torch.sigmoid(f) * cs[l] + torch.sigmoid(i) * torch.tanh(g)
            hs[l] = torch.sigmoid(o) * torch.tanh(cs[l])
            x = hs[l]
        out = prior.conv_out(x)
        mus.append(out[:, 0:1])
        logs.append(soft_clamp(out[:, 1:2], prior.max_log_std))
    return torch.cat(mus, 1), torch.cat(logs, 1)


def naive_log_prob(prior, z, context, cond):
    mu, ls = naive_mean_log_std(prior, z, context, cond)
    lp = -0.5 * math.log(2 * math.pi) - ls - 0.5 * ((z - mu) / torch.exp(ls)) ** 2
    return lp.flatten(1).sum(1)


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_log_prob_matches_naive(cfg, b, device):
    ctx, cond, k, d = CONFIGS[cfg]
    prior = _prior(ctx, cond, k, d, device)
    z, context, cnd = _inputs(b, ctx, cond, device)
    mu, ls = prior.mean_log_std(z, context, cnd)
    mu_ref, ls_ref = naive_mean_log_std(prior, z, context, cnd)
    assert mu.shape == ls.shape == z.shape
    assert ls.abs().max() > 1e-2 and mu.abs().max() > 1e-2  # not a trivial comparison
    torch.testing.assert_close(mu, mu_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(ls, ls_ref, rtol=0, atol=1e-10)
    lp = prior.log_prob(z, context, cnd)
    assert lp.shape == (b,)
    torch.testing.assert_close(lp, naive_log_prob(prior, z, context, cnd), rtol=1e-10, atol=1e-10)


def test_time_groups_are_exact(device):
    """The CPU grouping of steps per input-to-gate conv (1, 2+2, 3+1 steps) changes nothing."""
    ctx, cond, k, d = CONFIGS["context+cond"]
    prior = _prior(ctx, cond, k, d, device)
    z, context, cnd = _inputs(2, ctx, cond, device)
    mu_ref, ls_ref = naive_mean_log_std(prior, z, context, cnd)
    step = 2 * 4 * prior.hidden * H * W  # gate elements of one step
    for numel in (1, 2 * step, 3 * step, 10**9):
        prior.cpu_fold_numel = numel
        mu, ls = prior.mean_log_std(z, context, cnd)
        torch.testing.assert_close(mu, mu_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(ls, ls_ref, rtol=0, atol=1e-10)
    prior.cpu_fold_numel = 3 * step
    assert prior._time_span(C, step, torch.device("cpu")) == 3
    assert prior._time_span(C, 10 * step, torch.device("cpu")) == 1
    assert prior._time_span(C, 10 * step, torch.device("cuda")) == C  # one conv on GPU


@pytest.mark.parametrize("grouped", [False, True], ids=["one-conv", "step-groups"])
@pytest.mark.parametrize("cfg", ["top", "context+cond"])
def test_gradients_match_naive(cfg, grouped, device):
    ctx, cond, k, d = CONFIGS[cfg]
    prior = _prior(ctx, cond, k, d, device)
    if grouped:
        prior.cpu_fold_numel = 3 * 2 * 4 * prior.hidden * H * W  # 3 + 1 steps (CPU)
    z, context, cnd = _inputs(2, ctx, cond, device)
    leaves = [t.requires_grad_() for t in (z, context, cnd) if t is not None]
    weights = torch.randn(2, dtype=DT, device=device)
    grads = []
    for fn in (lambda: prior.log_prob(z, context, cnd), lambda: naive_log_prob(prior, z, context, cnd)):
        out = (fn() * weights).sum()
        grads.append(torch.autograd.grad(out, leaves + list(prior.parameters())))
    for g, g_ref in zip(*grads):
        assert g_ref.abs().max() > 0
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def test_starts_as_standard_normal(device):
    prior = ChannelARPrior(C, CTX, hidden=6, layers=2, kernel_size=3).to(device=device, dtype=DT)
    z, context, _ = _inputs(2, CTX, 0, device)
    ref = (-0.5 * math.log(2 * math.pi) - 0.5 * z**2).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, context), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", ["top", "context+cond"])
def test_sample_noise_roundtrip(cfg, device):
    ctx, cond, k, d = CONFIGS[cfg]
    prior = _prior(ctx, cond, k, d, device)
    _, context, cnd = _inputs(3, ctx, cond, device)
    shape = (3, C, H, W)
    noise = torch.randn(shape, dtype=DT, device=device)

    z = prior.sample(shape, context, cnd, temperature=1.0, noise=noise)
    assert z.shape == shape
    mu, ls = prior.mean_log_std(z, context, cnd)
    torch.testing.assert_close((z - mu) * torch.exp(-ls), noise, rtol=0, atol=1e-10)
    expected = (-0.5 * math.log(2 * math.pi) - 0.5 * noise**2 - ls).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, context, cnd), expected, rtol=1e-10, atol=1e-10)

    # temperature tau scales the std: noise recovered as tau * eps
    z_half = prior.sample(shape, context, cnd, temperature=0.5, noise=noise)
    mu, ls = prior.mean_log_std(z_half, context, cnd)
    torch.testing.assert_close((z_half - mu) * torch.exp(-ls), 0.5 * noise, rtol=0, atol=1e-10)

    # temperature 0: each channel is its (teacher-forced) mean
    z0 = prior.sample(shape, context, cnd, temperature=0.0, noise=noise)
    mu0, _ = prior.mean_log_std(z0, context, cnd)
    torch.testing.assert_close(z0, mu0, rtol=0, atol=1e-10)

    # same noise, same sample; random noise gives finite samples of the right shape
    torch.testing.assert_close(prior.sample(shape, context, cnd, noise=noise), z, rtol=0, atol=0)
    zr = prior.sample(shape, context, cnd)
    assert zr.shape == shape and torch.isfinite(zr).all()


@pytest.mark.parametrize("cfg", ["top", "context+cond"])
def test_autoregressive(cfg, device):
    ctx, cond, k, d = CONFIGS[cfg]
    prior = _prior(ctx, cond, k, d, device)
    z, context, cnd = _inputs(2, ctx, cond, device)
    mu, ls = prior.mean_log_std(z, context, cnd)
    for t in range(C):
        z2 = z.clone()
        z2[:, t:] += torch.randn_like(z2[:, t:])  # change channel t and later ones
        mu2, ls2 = prior.mean_log_std(z2, context, cnd)
        # (mu, log_std) of channels <= t do not see channel t or later ...
        torch.testing.assert_close(mu2[:, : t + 1], mu[:, : t + 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(ls2[:, : t + 1], ls[:, : t + 1], rtol=0, atol=1e-12)
        # ... while the later ones do (the check can fail)
        if t + 1 < C:
            assert (mu2[:, t + 1 :] - mu[:, t + 1 :]).abs().max() > 1e-6

    # full Jacobian: d(mu, log_std)_{b,t} / d z_{b',s} is zero unless b == b' and s < t
    def f(x):
        m, l = prior.mean_log_std(x, context, cnd)
        return torch.stack([m, l])

    jac = torch.autograd.functional.jacobian(f, z)  # [2, B, C, H, W, B, C, H, W]
    mag = jac.abs().sum(dim=(0, 3, 4, 7, 8))  # [B, C(out), B, C(in)]
    for b in range(2):
        for b2 in range(2):
            block = mag[b, :, b2, :]
            if b != b2:
                assert block.max() == 0
            else:
                assert torch.triu(block).max() == 0  # s >= t: no dependence
                assert (torch.tril(block, -1) + torch.triu(torch.ones_like(block))).min() > 0


def test_batch_independence(device):
    ctx, cond, k, d = CONFIGS["context+cond"]
    prior = _prior(ctx, cond, k, d, device)
    z, context, cnd = _inputs(3, ctx, cond, device)
    lp = prior.log_prob(z, context, cnd)
    single = torch.cat(
        [prior.log_prob(z[i : i + 1], context[i : i + 1], cnd[i : i + 1]) for i in range(3)]
    )
    torch.testing.assert_close(lp, single, rtol=1e-12, atol=1e-12)
    z = z.requires_grad_()
    (g,) = torch.autograd.grad(prior.log_prob(z, context, cnd)[0], z)
    assert g[1:].abs().max() == 0 and g[0].abs().max() > 0


@pytest.mark.parametrize("cfg", ["top", "context+cond"])
def test_every_parameter_trains(cfg, device):
    ctx, cond, k, d = CONFIGS[cfg]
    prior = ChannelARPrior(C, ctx, cond, hidden=6, layers=3, embed_hidden=5, kernel_size=k, dilation=d)
    prior = prior.to(device=device, dtype=DT)  # from the real init (zero output conv)
    gen = torch.Generator().manual_seed(1)
    z = (torch.randn(4, C, H, W, generator=gen, dtype=DT) * 0.5 + 0.3).to(device)
    z[:, 1:] += 0.8 * z[:, :-1].clone()  # channel correlations to learn
    context = torch.randn(4, ctx, H, W, generator=gen, dtype=DT).to(device) if ctx else None
    cnd = torch.randn(4, cond, H, W, generator=gen, dtype=DT).to(device) if cond else None
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = -prior.log_prob(z, context, cnd).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    opt.zero_grad()
    (-prior.log_prob(z, context, cnd).mean()).backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_state_dict_roundtrip(device):
    ctx, cond, k, d = CONFIGS["context+cond"]
    prior = _prior(ctx, cond, k, d, device)
    z, context, cnd = _inputs(2, ctx, cond, device)
    fresh = ChannelARPrior(C, ctx, cond, hidden=6, layers=3, embed_hidden=5, kernel_size=k, dilation=d)
    fresh = fresh.to(device=device, dtype=DT)
    assert not torch.allclose(fresh.log_prob(z, context, cnd), prior.log_prob(z, context, cnd))
    fresh.load_state_dict(prior.state_dict())
    torch.testing.assert_close(
        fresh.log_prob(z, context, cnd), prior.log_prob(z, context, cnd), rtol=0, atol=0
    )
    noise = torch.randn(2, C, H, W, dtype=DT, device=device)
    torch.testing.assert_close(
        fresh.sample(z.shape, context, cnd, noise=noise),
        prior.sample(z.shape, context, cnd, noise=noise),
        rtol=0,
        atol=0,
    )


def test_soft_clamped_log_std(device):
    prior = ChannelARPrior(C, hidden=4, layers=1, kernel_size=3, max_log_std=2.0)
    prior = prior.to(device=device, dtype=DT)
    with torch.no_grad():
        prior.conv_out.bias.copy_(torch.tensor([0.0, 1e4]))
    z = torch.randn(1, C, H, W, dtype=DT, device=device)
    _, ls = prior.mean_log_std(z)
    assert ls.max() <= 2.0 and torch.isfinite(prior.log_prob(z)).all()


def test_bad_inputs(device):
    prior = ChannelARPrior(C, CTX, hidden=4, layers=1, kernel_size=3).to(device=device, dtype=DT)
    z, context, _ = _inputs(2, CTX, 0, device)
    shp = r"\(2, 3, 5, 3\)"  # expected context shape in the messages
    cases = [
        (lambda: prior.log_prob(z[:, :3], context),
         r"ChannelARPrior: expected z of shape \[B, 4, H, W\], got \(2, 3, 5, 3\)"),
        (lambda: prior.log_prob(z[0], context), r"ChannelARPrior: expected z .* got \(4, 5, 3\)"),
        (lambda: prior.log_prob(z), rf"ChannelARPrior: expected context of shape {shp}, got None"),
        (lambda: prior.log_prob(z, context[:, :2]), rf"context of shape {shp}, got \(2, 2, 5, 3\)"),
        (lambda: prior.log_prob(z, context[:1]), rf"context of shape {shp}, got \(1, 3, 5, 3\)"),
        (lambda: prior.log_prob(z, context[..., :2]), rf"context of shape {shp}, got \(2, 3, 5, 2\)"),
        (lambda: prior.log_prob(z, context, context),
         r"ChannelARPrior: built with cond_channels=0 but got cond of shape \(2, 3, 5, 3\)"),
        (lambda: prior.sample((2, 5, H, W), context),
         r"ChannelARPrior: expected sample shape \[B, 4, H, W\], got \(2, 5, 5, 3\)"),
        (lambda: prior.sample((2, C, H, W)), rf"ChannelARPrior: expected context of shape {shp}, got None"),
        (lambda: prior.sample((2, C, H, W), context, noise=z[:1]),
         r"ChannelARPrior: expected noise of shape \(2, 4, 5, 3\), got \(1, 4, 5, 3\)"),
    ]
    for fn, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            fn()
    with pytest.raises(ValueError, match="ChannelARPrior: kernel_size must be odd"):
        ChannelARPrior(C, kernel_size=4)


# Reference (visinf/mar-scf, ChannelPriorMultiScale(..., num_layers=3, hidden_size=32)) on 3x32x32,
# 3 levels: per level E = conv5x5(ctx->32)+conv5x5(32->4), In = conv k (5->32 or 1->32),
# Conv2dLSTM(32, 32, k, 3 layers, dilation d, biases b_ih and b_hh), conv3x3(32->2);
# (k, d) = (5, 2), (5, 1), (3, 1). Used parameters: 627,814 + 632,614 + 222,850 = 1,483,278;
# the reference also builds an unused E at the top level (41,636 more: 1,524,914 in all).
# Ours drops the redundant second gate bias (-384 per level) and the unused top E.
REF_USED = (627_814, 632_614, 222_850)
PARAM_RANGE = (1_400_000, 1_600_000)  # the paper gives about 1.5M prior parameters for every configuration


def _level_priors(image_channels: int, levels: int, **kwargs) -> list[ChannelARPrior]:
    """The priors of a multi-scale model, as the one level builder makes them (no steps)."""
    built, top = build_levels(image_channels, levels, steps=lambda level, c: [], prior=ar_priors(**kwargs))
    return [lv.split.prior for lv in built if lv.split is not None] + [top]


def test_cifar_parameter_count():
    priors = _level_priors(3, 3)
    counts = [sum(p.numel() for p in pr.parameters()) for pr in priors]
    print("ChannelARPrior params per level (CIFAR 3 levels):", counts, "total", sum(counts))
    assert [(pr.channels, pr.context_channels) for pr in priors] == [(6, 6), (12, 12), (48, 0)]
    assert [reference_geometry(l) for l in (1, 2, 3)] == [(5, 2), (5, 1), (3, 1)]
    assert counts == [r - 3 * 128 for r in REF_USED]
    assert PARAM_RANGE[0] <= sum(counts) <= PARAM_RANGE[1]


def test_level_priors_shapes(device):
    priors = torch.nn.ModuleList(_level_priors(1, 2, hidden=4, layers=1)).to(device=device, dtype=DT)
    z1 = torch.randn(2, 2, 4, 6, dtype=DT, device=device)  # level 1 of 1x(8x12): split 2|2
    assert priors[0].log_prob(z1, z1.clone()).shape == (2,)
    top = torch.randn(2, 8, 2, 3, dtype=DT, device=device)
    assert priors[1].log_prob(top).shape == (2,)
    with pytest.raises(ValueError, match="prior geometry must be one of reference, uniform"):
        ar_priors(geometry="wide")
