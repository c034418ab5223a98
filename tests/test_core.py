"""``attnflow.core.UpsampledConcat``: a conditioning map kept as ``[fine, nearest(coarse)]``.

What the layers and models ask of a conditioning map gives the same result as on the dense map,
the checks name what was expected, and invertible backpropagation passes its gradients on."""

import pytest
import torch
import torch.nn.functional as F

from attnflow.core import UpsampledConcat, check_cond, dense_map, invertible_forward, zeros_logdet
from attnflow.layers import AffineInjector, ConditionalAffineCoupling, InvConv1x1


def _map(batch=2, fine=3, coarse=4, size=(2, 3), factor=2, dtype=torch.float64, requires_grad=False):
    h, w = size
    f = torch.randn(batch, fine, h * factor, w * factor, dtype=dtype, requires_grad=requires_grad) if fine else None
    c = torch.randn(batch, coarse, h, w, dtype=dtype, requires_grad=requires_grad)
    return UpsampledConcat(f, c, factor)


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


def test_check_cond_checks_the_shape_and_densifies_unless_asked():
    m, x = _map(), torch.randn(2, 6, 4, 6, dtype=torch.float64)
    out = check_cond("Layer", m, x, 7)
    assert isinstance(out, torch.Tensor) and out.equal(m.dense())
    assert check_cond("Layer", m, x, 7, keep_factored=True) is m
    with pytest.raises(ValueError, match=r"Layer: expected cond of shape \(2, 8, 4, 6\).*got \(2, 7, 4, 6\)"):
        check_cond("Layer", m, x, 8)


@pytest.mark.parametrize("invertible", [False, True])
def test_conditional_layers_give_the_dense_map_result(invertible):
    """An injector and a coupling (which prepends its pass-through half) on a factored map: values and
    every gradient (parameters, both parts of the map) as on the dense map, also through
    invertible backpropagation."""
    torch.manual_seed(0)
    layers = [AffineInjector(4, 7, hidden=8), InvConv1x1(4), ConditionalAffineCoupling(4, 7, hidden=8)]
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
