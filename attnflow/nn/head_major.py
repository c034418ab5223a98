"""Exact softmax attention over head-major ``[N, d, L]`` tensors: the CPU kernel for many narrow
heads (:func:`head_major_attention`) and the rule for where it beats the fused kernel
(:func:`head_major_attention_pays`)."""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["HEAD_MAJOR_BLOCK_BYTES", "head_major_attention", "head_major_attention_pays"]

_LOG2E = 1.4426950408889634
#: bytes of the ``[heads, L, L]`` attention weights one block of :func:`head_major_attention` holds
HEAD_MAJOR_BLOCK_BYTES = 1 << 21

_scratch_store = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised ``shape`` tensor of ``like``'s dtype and device, the same memory on every
    call with the same ``slot`` in this thread (it grows to the largest size asked for).

    For the head-major attention's block buffers (at most :data:`HEAD_MAJOR_BLOCK_BYTES` each):
    a fresh multi-MiB tensor per call is page-faulted in again on every call once the C allocator
    has returned it to the system. A slot is only used inside one forward or one backward call,
    which never nest."""
    store = _scratch_store.__dict__
    key = (slot, like.dtype, like.device)
    numel = math.prod(shape)
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = store[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buf[:numel].view(shape)


def _head_blocks(n: int, length: int, element_size: int) -> tuple[int, list[slice]]:
    """Heads per block (their ``[L, L]`` weights fill about :data:`HEAD_MAJOR_BLOCK_BYTES`) and
    the blocks' slices over ``n`` heads."""
    per = max(1, HEAD_MAJOR_BLOCK_BYTES // (length * length * element_size))
    return per, [slice(s, min(n, s + per)) for s in range(0, n, per)]


class _HeadMajorAttention(torch.autograd.Function):
    """Exact softmax attention over head-major ``[N, d, L]`` queries, keys and values.

    Forward, per block of heads: ``S = (c Q) K^T`` with ``c = log2(e) / sqrt(d)``, so that
    ``softmax(Q K^T / sqrt(d))_ij = 2^(S_ij - m_i) / z_i`` (``m_i = max_j S_ij``); then
    ``O^T = V^T P^T / z``. Saves ``Q, K, V, O`` and the base-2 log-sum-exp ``m + log2 z`` per query.
    Backward recomputes ``P = 2^(S - lse)`` block by block and forms
    ``dV^T = dO^T P``, ``dS = P (dO V^T - rowsum(dO O))``, ``dQ^T = K^T dS^T / sqrt(d)``,
    ``dK^T = Q^T dS / sqrt(d)``.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n, d, length = q.shape
        q_scaled = torch.mul(q, _LOG2E / math.sqrt(d), out=_scratch("q_scaled", q.shape, q))
        out = torch.empty_like(v)
        backward = any(ctx.needs_input_grad)
        lse = torch.empty(n, 1, length, dtype=q.dtype, device=q.device) if backward else None
        per, blocks = _head_blocks(n, length, q.element_size())
        weights = _scratch("weights", (min(per, n), length, length), q)
        for blk in blocks:
            s = torch.bmm(q_scaled[blk].transpose(1, 2), k[blk], out=weights[: blk.stop - blk.start])
            row_max = s.amax(-1, keepdim=True)
            s.sub_(row_max).exp2_()
            z = s.sum(-1)
            o = out[blk]
            torch.bmm(v[blk], s.transpose(1, 2), out=o)
            o.div_(z.unsqueeze(1))
            if backward:
                torch.add(row_max.squeeze(-1), z.log2(), out=lse[blk, 0])
        if backward:
            ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, out, lse = ctx.saved_tensors
        n, d, length = q.shape
        grad_out = grad_out.contiguous()
        q_scaled = torch.mul(q, _LOG2E / math.sqrt(d), out=_scratch("q_scaled", q.shape, q))
        delta = (grad_out * out).sum(1, keepdim=True)  # rowsum(dO O), [n, 1, L]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        per, blocks = _head_blocks(n, length, q.element_size())
        p_buf = _scratch("weights", (min(per, n), length, length), q)
        ds_buf = _scratch("weight_grads", (min(per, n), length, length), q)
        for blk in blocks:
            m = blk.stop - blk.start
            p = torch.bmm(q_scaled[blk].transpose(1, 2), k[blk], out=p_buf[:m])
            p.sub_(lse[blk].transpose(1, 2)).exp2_()
            torch.bmm(grad_out[blk], p, out=dv[blk])
            ds = torch.bmm(grad_out[blk].transpose(1, 2), v[blk], out=ds_buf[:m])
            ds.sub_(delta[blk].transpose(1, 2)).mul_(p)
            torch.bmm(k[blk], ds.transpose(1, 2), out=dq[blk])
            torch.bmm(q[blk], ds, out=dk[blk])
        scale = 1.0 / math.sqrt(d)
        return dq.mul_(scale), dk.mul_(scale), dv


def head_major_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` per head, with every tensor head-major: ``[N, d, L]`` (``N``
    heads of width ``d`` over ``L`` positions; the transpose of ``scaled_dot_product_attention``'s
    ``[N, L, d]``), returned ``[N, d, L]``.

    Exact (no dropout, no mask), differentiable once. On the CPU with narrow heads it is faster
    than the fused kernel, whose small matrix products run below this CPU's rate: in blocks of
    heads whose ``[L, L]`` weights stay in cache, every product has ``L`` on its long side, and
    the exponential is ``exp2`` (see :func:`head_major_attention_pays`).
    """
    if q.dim() != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            "head_major_attention: expected q, k, v of one shape [N, d, L], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[1] < 1:
        raise ValueError(f"head_major_attention: heads need width d >= 1, got shape {tuple(q.shape)}")
    if q.shape[0] == 0 or q.shape[2] == 0:  # no head or no position: nothing to attend
        return v.clone()
    return _HeadMajorAttention.apply(q.contiguous(), k.contiguous(), v.contiguous())


def head_major_attention_pays(
    heads: int, length: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> bool:
    """Whether :func:`head_major_attention` beats the fused kernel for ``heads`` heads (batch x
    heads per image) of width ``head_dim`` over ``length`` positions: float32 on the CPU, heads at
    most 16 wide, 25 to 362 positions (at least four heads' weights per block), at least 64 heads.
    The two kernels' timings: ``docs/results.md``.
    """
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and heads >= 64
        and head_dim <= 16
        and 25 <= length
        and 4 * length * length * 4 <= HEAD_MAJOR_BLOCK_BYTES
    )

