"""SRFlow's factored conditioning maps (``attnflow.models.upsampled_concat``) and the layers that
take them (``attnflow.models.srflow_layers``).

What the multi-scale model asks of a conditioning map gives the same result as on the dense map;
the convolution of a nearest-upsampled map at the coarse resolution equals the convolution of the
upsampled (dense) map, values and gradients, in the session's dtype (float64 by default); the
factored layers give the generic layers' results on the dense map, also through invertible
backpropagation; the checks name what was expected."""

import pytest
import torch
import torch.nn.functional as F

from attnflow.core import zeros_logdet
from attnflow.invertible_backprop import invertible_forward
from attnflow.layers import AffineInjector, ConditionalAffineCoupling, InvConv1x1
from attnflow.models.srflow_layers import (
    FactoredAffineInjector,
    FactoredConditionalAffineCoupling,
    FactoredDiagonalGaussian,
    FactoredGlowNet,
    check_factored_cond,
)
from attnflow.models.upsampled_concat import UpsampledConcat, conv2d_on_map, conv3x3_upsampled, dense_map
from attnflow.nn import GlowNet
from attnflow.priors import DiagonalGaussian


def _map(batch=2, fine=3, coarse=4, size=(2, 3), factor=2, dtype=torch.float64, requires_grad=False):
    h, w = size
    f = torch.randn(batch, fine, h * factor, w * factor, dtype=dtype, requires_grad=requires_grad) if fine else None
    c = torch.randn(batch, coarse, h, w, dtype=dtype, requires_grad=requires_grad)
    return UpsampledConcat(f, c, factor)


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)


def _up(x, factor):
    return F.interpolate(x, scale_factor=factor, mode="nearest")


# ------------------------------------------------------------------------------------------------
# the map
# ------------------------------------------------------------------------------------------------


def test_dense_and_the_tensor_like_calls():
    m = _map()
    dense = m.dense()
    up = F.interpolate(m.coarse, scale_factor=2, mode="nearest")
    assert torch.equal(dense, torch.cat([m.fine, up], dim=1))
    assert m.shape == dense.shape == (2, 7, 4, 6) and m.dim() == 4 and m.fine_channels == 3
    assert (m.dtype, m.device, m.is_floating_point()) == (torch.float64, dense.device, True)
    assert dense_map(m).equal(dense) and dense_map(dense) is dense and dense_map(None) is None
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    assert torch.equal(m.prepend(x).dense(), torch.cat([x, dense], dim=1))
    assert torch.equal(_map(fine=0).prepend(x).fine, x)
    assert m.to(torch.float32).dtype == torch.float32
    assert torch.equal(m.repeat_interleave(3).dense(), dense.repeat_interleave(3, dim=0))
    one = UpsampledConcat(m.fine[:1], m.coarse[:1], 2)
    assert torch.equal(one.expand(4, *one.shape[1:]).dense(), one.dense().expand(4, -1, -1, -1))
    assert m.with_tensors(m.tensors()).dense().equal(dense)
    assert "factor=2" in repr(m)


def test_bad_parts_are_named():
    c = torch.randn(2, 4, 2, 3)
    with pytest.raises(ValueError, match=r"fine map must be \[2, C, 4, 6\].*got \(2, 3, 4, 4\)"):
        UpsampledConcat(torch.randn(2, 3, 4, 4), c, 2)
    with pytest.raises(ValueError, match="factor must be a positive int"):
        UpsampledConcat(None, c, 0)
    with pytest.raises(ValueError, match="4D coarse map"):
        UpsampledConcat(None, torch.randn(4, 2, 3), 2)
    with pytest.raises(ValueError, match="differ in dtype"):
        UpsampledConcat(torch.randn(2, 3, 4, 6, dtype=torch.float64), c, 2)
    with pytest.raises(ValueError, match="only the batch"):
        _map().expand(4, 1, 4, 6)
    with pytest.raises(ValueError, match="only along the batch"):
        _map().repeat_interleave(2, dim=1)


# ------------------------------------------------------------------------------------------------
# the convolution at the coarse resolution
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4)])
def test_conv3x3_upsampled_equals_the_direct_convolution(factor, size, device, dtype):
    x = torch.randn(2, 5, *size, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(7, 5, 3, 3, dtype=dtype, device=device, requires_grad=True)
    g = torch.randn(2, 7, size[0] * factor, size[1] * factor, dtype=dtype, device=device)
    direct = F.conv2d(_up(x, factor), w, padding=1)
    folded = conv3x3_upsampled(x, w, factor)
    torch.testing.assert_close(folded, direct, **_tol(dtype))
    ga = torch.autograd.grad(direct, [x, w], g)
    gb = torch.autograd.grad(folded, [x, w], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, **_tol(dtype))


def test_conv3x3_upsampled_gradcheck():
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv3x3_upsampled(a, b, 4), (x, w))


def test_conv3x3_upsampled_rejects_other_kernels():
    with pytest.raises(ValueError, match=r"\[O, 4, 3, 3\] weight"):
        conv3x3_upsampled(torch.randn(1, 4, 2, 2), torch.randn(3, 4, 5, 5), 2)


@pytest.mark.parametrize("fine_channels", [0, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_on_map_equals_the_dense_map(fine_channels, bias, device, dtype):
    coarse = torch.randn(2, 4, 3, 2, dtype=dtype, device=device, requires_grad=True)
    fine = torch.randn(2, fine_channels, 12, 8, dtype=dtype, device=device, requires_grad=True)
    m = UpsampledConcat(fine if fine_channels else None, coarse, 4)
    conv = torch.nn.Conv2d(fine_channels + 4, 6, 3, padding=1, bias=bias).to(device, dtype)
    out, ref = conv2d_on_map(conv, m), conv(m.dense())
    torch.testing.assert_close(out, ref, **_tol(dtype))
    inputs = [coarse, *conv.parameters()] + ([fine] if fine_channels else [])
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g)):
        torch.testing.assert_close(b, a, **_tol(dtype))


@pytest.mark.parametrize("kind", ["1x1", "strided", "factor 1"])
def test_conv2d_on_map_falls_back_to_the_dense_map(kind, dtype):
    factor = 1 if kind == "factor 1" else 2
    fine, coarse = torch.randn(1, 2, 4 * factor, 4 * factor, dtype=dtype), torch.randn(1, 3, 4, 4, dtype=dtype)
    m = UpsampledConcat(fine, coarse, factor)
    conv = {
        "1x1": torch.nn.Conv2d(5, 4, 1),
        "strided": torch.nn.Conv2d(5, 4, 3, padding=1, stride=2),
        "factor 1": torch.nn.Conv2d(5, 4, 3, padding=1),
    }[kind].to(dtype)
    torch.testing.assert_close(conv2d_on_map(conv, m), conv(m.dense()), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# SRFlow's layers on factored maps
# ------------------------------------------------------------------------------------------------


def test_check_factored_cond_checks_the_shape_and_keeps_the_map():
    m, x = _map(), torch.randn(2, 6, 4, 6, dtype=torch.float64)
    layer = FactoredAffineInjector(6, 7, hidden=4)
    assert check_factored_cond(layer, m, x, 7) is m
    dense = m.dense()
    assert check_factored_cond(layer, dense, x, 7) is dense
    with pytest.raises(ValueError, match=r"FactoredAffineInjector: expected cond of shape \(2, 8, 4, 6\)"):
        check_factored_cond(layer, m, x, 8)
    with pytest.raises(ValueError, match=r"FactoredAffineInjector: .*needs cond"):
        check_factored_cond(layer, None, x, 7)


def test_the_generic_layers_refuse_a_factored_map():
    """Only SRFlow's own layers take one: the generic ones name what they got."""
    m, x = _map(), torch.randn(2, 4, 4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"AffineInjector: expected a 4D cond \[B, 7, H, W\], got UpsampledConcat"):
        AffineInjector(4, 7, hidden=4).double()(x, m)


def test_factored_glownet_equals_glownet_on_the_dense_map():
    torch.manual_seed(0)
    net = FactoredGlowNet(3, 4, 8).double()
    for p in net.parameters():
        p.data.normal_()
    plain = GlowNet(3, 4, 8).double()
    plain.load_state_dict(net.state_dict())
    m = UpsampledConcat(None, torch.randn(2, 3, 2, 3, dtype=torch.float64), 4)
    torch.testing.assert_close(net(m), plain(m.dense()), rtol=1e-10, atol=1e-10)
    x = m.dense()
    assert torch.equal(net(x), plain(x))  # a tensor takes the generic path, bit for bit


def test_factored_layers_are_the_generic_ones_with_the_same_parameters():
    """Same state-dict names and shapes, and the same random initialisation from the same seed."""
    pairs = [
        (lambda: FactoredAffineInjector(6, 5, hidden=8), lambda: AffineInjector(6, 5, hidden=8)),
        (lambda: FactoredConditionalAffineCoupling(5, 7, hidden=8), lambda: ConditionalAffineCoupling(5, 7, hidden=8)),
        (lambda: FactoredDiagonalGaussian(3, context_channels=2, cond_channels=4),
         lambda: DiagonalGaussian(3, context_channels=2, cond_channels=4)),
    ]
    for factored, generic in pairs:
        torch.manual_seed(3)
        a = factored().state_dict()
        torch.manual_seed(3)
        b = generic().state_dict()
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("invertible", [False, True])
def test_conditional_layers_give_the_dense_map_result(invertible):
    """An injector and a coupling (which prepends its pass-through half) on a factored map: values and
    every gradient (parameters, both parts of the map) as on the dense map, also through
    invertible backpropagation."""
    torch.manual_seed(0)
    layers = [FactoredAffineInjector(4, 7, hidden=8), InvConv1x1(4), FactoredConditionalAffineCoupling(4, 7, hidden=8)]
    for layer in layers:
        layer.double()
        for p in layer.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    params = [p for layer in layers for p in layer.parameters()]
    x = torch.randn(2, 4, 4, 6, dtype=torch.float64, requires_grad=True)
    m = _map(requires_grad=True)

    def run(cond):
        if invertible:
            y, ld = invertible_forward([[(layer, cond) for layer in layers]], x, zeros_logdet(x))
        else:
            y, ld = x, zeros_logdet(x)
            for layer in layers:
                y, d = layer(y, cond)
                ld = ld + d
        loss = y.square().sum() + ld.sum()
        return loss.detach(), torch.autograd.grad(loss, [x, m.fine, m.coarse, *params])

    (loss_a, ga), (loss_b, gb) = run(m.dense()), run(m)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    z, _ = layers[2](layers[1](layers[0](x, m)[0])[0], m)
    back = layers[0].inverse(layers[1].inverse(layers[2].inverse(z, m)[0])[0], m)[0]
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)


def test_factored_gaussian_densifies_its_condition():
    torch.manual_seed(0)
    prior = FactoredDiagonalGaussian(3, context_channels=2, cond_channels=7).double()
    for p in prior.parameters():
        p.data.normal_()
    m = _map()
    z, ctx = torch.randn(2, 3, 4, 6, dtype=torch.float64), torch.randn(2, 2, 4, 6, dtype=torch.float64)
    assert torch.equal(prior.log_prob(z, ctx, m), prior.log_prob(z, ctx, m.dense()))
