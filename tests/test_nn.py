"""``attnflow.nn``'s arithmetic against the direct computation: GlowNet's folded actnorms against the
layer-by-layer network, in the session's dtype (float64 by default)."""

import torch
import torch.nn.functional as F

from attnflow.nn import GlowNet


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)


def test_glownet_with_folded_actnorms_equals_the_layer_by_layer_network(dtype):
    """After the data-dependent init, GlowNet folds each actnorm (and the zero conv's scale) into
    the convolution before it; the result is the layer-by-layer composition."""
    net = GlowNet(3, 4, 8).to(dtype)
    x = torch.randn(2, 3, 5, 6, dtype=dtype)
    net.norm_in._init_pending = net.norm_mid._init_pending = True
    first = net(x)  # initialises the actnorms (unfolded path)
    assert bool(net.norm_in.initialized) and not net.norm_in._init_pending
    for p in net.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    h = F.relu(net.norm_in(net.conv_in(x)))
    h = F.relu(net.norm_mid(net.conv_mid(h)))
    ref = net.conv_out.conv(h) * torch.exp(3.0 * net.conv_out.logs)
    torch.testing.assert_close(net(x), ref, **_tol(dtype))
    assert not torch.allclose(first, ref)
