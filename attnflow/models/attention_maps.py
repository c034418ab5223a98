"""What the attention layers of a model compute for a batch: iMap's weights ``a`` and iTrans's
mixing matrices ``W``, per layer and level, and one-number summaries of them.

The model runs its own forward pass (``bits_per_dim`` of the batch, so every family and its
conditions work the same way); a forward pre-hook on every :class:`~attnflow.layers.IMap` /
:class:`~attnflow.layers.ITrans` hands the layer's input to :meth:`IMap.attention_map` /
:meth:`ITrans.mixing_matrix`, which compute exactly what the layer's forward uses.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.attention import IMap, ITrans

__all__ = ["attention_layers", "attention_maps", "summarize_attention", "attention_summary"]

_LEVEL = re.compile(r"(?:^|\.)levels\.(\d+)(?:\.|$)")


def attention_layers(model: nn.Module) -> list[tuple[str, int | None, IMap | ITrans]]:
    """``(module name, level, layer)`` of every iMap / iTrans layer of ``model``, in forward order
    of registration; ``level`` is the multi-scale level (``None`` if the name names none)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (IMap, ITrans)):
            m = _LEVEL.search(name)
            found.append((name, int(m.group(1)) if m else None, module))
    return found


@torch.no_grad()
def attention_maps(model: nn.Module, batch: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """Per attention layer: ``{"name", "level", "kind", "map"}`` for ``batch`` (as the task's
    DataLoader yields it). ``map`` is iMap's ``a`` (``[B, 1, H, W]`` spatial, ``[B, C, 1, 1]``
    channel) or iTrans's ``W`` (``[B, N, N]``). Runs in eval mode with the dequantisation noise
    seeded by ``seed``; the global RNG state and the model's mode are restored. A model without
    attention layers gives ``[]``."""
    layers = attention_layers(model)
    if not layers:
        return []
    results: dict[str, dict[str, Any]] = {}

    def hook_for(name: str, level: int | None, layer: IMap | ITrans):
        def hook(module, args):
            x = args[0]
            if isinstance(layer, IMap):
                value, kind = layer.attention_map(x), "imap"
            else:
                value, kind = layer.mixing_matrix(x), "itrans"
            # a layer run twice in one pass (none of ours is) would keep its first input's map
            results.setdefault(name, {"name": name, "level": level, "kind": kind, "map": value.detach().cpu()})

        return hook

    handles = [entry[2].register_forward_pre_hook(hook_for(*entry)) for entry in layers]
    was_training = model.training
    ref = next((p for p in model.parameters()), None)
    devices = [ref.device] if ref is not None and ref.device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model.bits_per_dim(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [results[name] for name, _, _ in layers if name in results]


def _offdiag_mean(w: Tensor) -> float | None:
    n = w.shape[-1]
    if n < 2:
        return None
    eye = torch.eye(n, dtype=torch.bool)
    return float(w[:, ~eye].mean())


def summarize_attention(maps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per layer of :func:`attention_maps`: name, level, kind; iMap: ``a_mean``,
    ``a_std`` (over the batch and every weight); iTrans: ``patches``, ``w_offdiag_mean`` (mean
    off-diagonal weight: how much of a patch comes from the others; ``None`` for one patch) and
    ``w_diag_mean``."""
    out = []
    for m in maps:
        v = m["map"].double()
        row = {"name": m["name"], "level": m["level"], "kind": m["kind"]}
        if m["kind"] == "imap":
            row["a_mean"] = float(v.mean())
            row["a_std"] = float(v.std(unbiased=False))
            row["a_shape"] = list(v.shape[1:])
        else:
            row["patches"] = int(v.shape[-1])
            row["w_offdiag_mean"] = _offdiag_mean(v)
            row["w_diag_mean"] = float(torch.diagonal(v, dim1=-2, dim2=-1).mean())
        out.append({k: (None if isinstance(x, float) and not math.isfinite(x) else x) for k, x in row.items()})
    return out


def attention_summary(model: nn.Module, batch: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`summarize_attention` of :func:`attention_maps` (``[]`` without attention layers)."""
    return summarize_attention(attention_maps(model, batch, seed=seed))
