"""``attnflow.nn``'s arithmetic against the direct computation: GlowNet's folded actnorms against the
layer-by-layer network, ``tanh_by_sigmoid`` against ``torch.tanh``, the CPU dropout against its
definition, and the head-major attention against ``scaled_dot_product_attention``; values and
gradients, in the session's dtype (float64 by default)."""

import pytest
import torch
import torch.nn.functional as F

import attnflow.nn.flowpp as flowpp
import attnflow.nn.head_major as head_major
from attnflow.nn import (
    GlowNet,
    dropout,
    head_major_attention,
    head_major_attention_pays,
    tanh_by_sigmoid,
)


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


@pytest.mark.parametrize("dtype_", [torch.float32, torch.float64])
def test_tanh_by_sigmoid_equals_tanh(dtype_):
    """Within 2e-7 (float32) / 4e-16 (float64) absolute over [-60, 60], exact limits at +-inf,
    NaN stays NaN, and the gradient is tanh's, 1 - tanh^2."""
    x = torch.cat([torch.linspace(-60, 60, 20001, dtype=dtype_), torch.tensor([0.0, 1e-30, -1e-30], dtype=dtype_)])
    x.requires_grad_()
    y = tanh_by_sigmoid(x)
    tol = 2e-7 if dtype_ == torch.float32 else 4e-16
    assert (y - torch.tanh(x)).abs().max() <= tol
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert (grad - (1 - torch.tanh(x.detach()) ** 2)).abs().max() <= 4 * tol
    edge = tanh_by_sigmoid(torch.tensor([float("inf"), -float("inf"), float("nan")], dtype=dtype_))
    assert edge[0] == 1 and edge[1] == -1 and edge[2].isnan()


def test_cpu_dropout_keeps_1_minus_p_scaled_and_passes_the_mask_back(dtype):
    """Entries are kept with probability 1 - p (binomial bounds at 5 sigma) and scaled by 1/(1 - p),
    the gradient is the same mask, and eval, p = 0 and p = 1 behave as ``F.dropout``."""
    p, n = 0.2, 200_000
    x = (torch.rand(n, dtype=dtype) + 0.5).requires_grad_()
    y = dropout(x, p, True)
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, kept.to(dtype) / (1 - p))
    assert dropout(x, p, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    torch.manual_seed(3)
    a = dropout(x, p, True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, p, True), a)  # the global generator's stream: seeds reproduce it


def _sdpa_head_major(q, k, v):
    """``scaled_dot_product_attention`` on head-major ``[N, d, L]`` tensors."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("block_bytes", [None, 1])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (10, 12, 40)])
def test_head_major_attention_equals_sdpa(shape, block_bytes, monkeypatch, device, dtype):
    """Values and the gradients of q, k, v; with blocks of one head each (``block_bytes=1``), of
    several heads, and of all heads at once; logits spread over hundreds (the max subtraction)."""
    if block_bytes is not None:
        monkeypatch.setattr(head_major, "HEAD_MAJOR_BLOCK_BYTES", block_bytes)
    q, k, v = (torch.randn(*shape, dtype=dtype, device=device) for _ in range(3))
    q = (q * 12).requires_grad_()
    k.requires_grad_()
    v.requires_grad_()
    g = torch.randn(*shape, dtype=dtype, device=device)
    ref = _sdpa_head_major(q, k, v)
    out = head_major_attention(q, k, v)
    torch.testing.assert_close(out, ref, **_tol(dtype))
    for a, b in zip(torch.autograd.grad(ref, [q, k, v], g), torch.autograd.grad(out, [q, k, v], g)):
        torch.testing.assert_close(b, a, **_tol(dtype))


def test_head_major_attention_blocks_cover_every_head(monkeypatch):
    """Three heads per block over ten heads (a partial last block): each head's output is that
    head's attention alone, so a block that skipped, repeated or mixed heads would fail."""
    monkeypatch.setattr(head_major, "HEAD_MAJOR_BLOCK_BYTES", 3 * 6 * 6 * 8)
    assert head_major._head_blocks(10, 6, 8) == (3, [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)])
    q, k, v = (torch.randn(10, 4, 6, dtype=torch.float64) for _ in range(3))
    out = head_major_attention(q, k, v)
    for h in range(10):
        torch.testing.assert_close(out[h : h + 1], _sdpa_head_major(q[h : h + 1], k[h : h + 1], v[h : h + 1]))


def test_head_major_attention_reuses_its_buffers_safely():
    """The block buffers are shared by every call of a thread: a second, larger call between the
    first call's forward and backward (which regrows them) changes neither result."""
    q1, k1, v1 = (torch.randn(6, 4, 30, dtype=torch.float64, requires_grad=True) for _ in range(3))
    q2, k2, v2 = (torch.randn(9, 4, 50, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g1, g2 = torch.randn(6, 4, 30, dtype=torch.float64), torch.randn(9, 4, 50, dtype=torch.float64)
    out1 = head_major_attention(q1, k1, v1)
    out2 = head_major_attention(q2, k2, v2)
    grads2 = torch.autograd.grad(out2, [q2, k2, v2], g2)
    grads1 = torch.autograd.grad(out1, [q1, k1, v1], g1)
    for out, grads, (q, k, v), g in ((out1, grads1, (q1, k1, v1), g1), (out2, grads2, (q2, k2, v2), g2)):
        ref = _sdpa_head_major(q, k, v)
        torch.testing.assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(ref, [q, k, v], g), grads):
            torch.testing.assert_close(b, a)

def test_head_major_attention_gradcheck(monkeypatch):
    monkeypatch.setattr(head_major, "HEAD_MAJOR_BLOCK_BYTES", 2 * 5 * 5 * 8)  # two heads per block
    q, k, v = (torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(head_major_attention, (q, k, v))


def test_head_major_attention_rejects_bad_shapes_and_passes_empty_ones():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"one shape \[N, d, L\].*\(2, 3, 4\), \(2, 3, 5\)"):
        head_major_attention(q, torch.randn(2, 3, 5), q)
    with pytest.raises(ValueError, match=r"one shape"):
        head_major_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match=r"width d >= 1"):
        head_major_attention(q[:, :0], q[:, :0], q[:, :0])
    empty = torch.randn(2, 3, 0)
    assert head_major_attention(empty, empty, empty).shape == (2, 3, 0)


def test_head_major_attention_pays_only_where_measured_faster():
    cpu = torch.device("cpu")
    assert head_major_attention_pays(128, 256, 12, torch.float32, cpu)
    assert head_major_attention_pays(64, 64, 16, torch.float32, cpu)
    assert head_major_attention_pays(64, 25, 12, torch.float32, cpu)
    assert not head_major_attention_pays(32, 256, 12, torch.float32, cpu)  # few heads: per-block overhead
    assert not head_major_attention_pays(128, 16, 12, torch.float32, cpu)  # 4x4 maps: the fused kernel
    assert not head_major_attention_pays(128, 256, 24, torch.float32, cpu)  # wider heads
    assert not head_major_attention_pays(128, 256, 12, torch.float64, cpu)
    assert not head_major_attention_pays(128, 1024, 12, torch.float32, cpu)  # under 4 heads per block
    assert not head_major_attention_pays(128, 256, 12, torch.float32, torch.device("cuda"))


@pytest.mark.parametrize("dropout_on", ["output", "weights"])
def test_flowpp_attention_head_major_and_fused_paths_agree(dropout_on, monkeypatch):
    """The Flow++ attention block on 8x8 float32 maps, 16 images of 4 heads 12 wide, takes the
    head-major path (counted), except with dropout on its weights in training or with
    ``HEAD_MAJOR_ATTENTION`` off; in eval both paths give the same output and gradients to float32
    rounding."""
    calls = []
    real = flowpp.head_major_attention
    monkeypatch.setattr(flowpp, "head_major_attention", lambda *a: calls.append(1) or real(*a))
    block = flowpp._GatedAttention(48, 4, 0.5, dropout_on).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(16, 48, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(16, 48, 8, 8)
    out = block(x)
    assert len(calls) == 1 and out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out, [x, *block.parameters()], g)
    monkeypatch.setattr(flowpp, "HEAD_MAJOR_ATTENTION", False)
    ref = block(x)
    assert len(calls) == 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, [x, *block.parameters()], g), grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    monkeypatch.undo()
    monkeypatch.setattr(flowpp, "head_major_attention", lambda *a: calls.append(1) or real(*a))
    block.train()
    block(x)
    assert len(calls) == (2 if dropout_on == "output" else 1)
