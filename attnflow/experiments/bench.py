"""Speed, FLOPs and memory of a config's training step and sampling (``attnflow bench``).

Every variant (one config each, e.g. one per attention kind) is built (seed 0), initialised on a
random batch of the training shape (the model's ``example_batch``) and given an Adamax optimiser.
Then, per variant: ``warmup`` untimed training steps (at least one) and one untimed sampling batch,
during which CUDA's ``max_memory_allocated`` gives the variant's peak memory (less what was
allocated before it was built: the other variants); and the FLOPs of one training step (forward
and backward, counted by :class:`torch.utils.flop_counter.FlopCounterMode`: convolutions, matrix
products and attention; element-wise work is not counted). The timed rounds come last and run the
variants in turn (:func:`~attnflow.experiments.timing.time_rounds`): ``repeats`` training steps
each, then ``max(1, repeats // 2)`` sampling batches each; the medians are reported.

A training step is forward, backward, gradient clipping at norm 100 and one Adamax step
(:func:`training_step`); ``train.autocast`` runs the conditioner networks in that precision, as
training does. Sampling draws one batch of ``batch_size`` images (conditional models: for the
batch's conditions) at temperature 1.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ConfigError, apply_overrides, validate_config
from ..models import build_model
from ..nn import AUTOCAST_DTYPES, network_autocast
from .timing import time_rounds

__all__ = [
    "ATTENTIONS",
    "attention_variants",
    "bench_config",
    "bench_variants",
    "count_training_flops",
    "format_table",
    "training_step",
]

#: the attention kinds ``attnflow bench`` compares by default
ATTENTIONS = ("none", "imap", "itrans")


def training_step(
    model: torch.nn.Module,
    batch,
    optimizer: torch.optim.Optimizer,
    low_precision: torch.dtype | None = None,
    net: Callable[..., torch.Tensor] | None = None,
) -> Callable[[], None]:
    """The training step the benchmarks time, as a function: the loss of ``net`` (default ``model``,
    e.g. its compiled form) under :func:`~attnflow.nn.network_autocast` ``(low_precision)``, backward,
    gradients clipped to norm 100, one ``optimizer`` step."""
    run = model if net is None else net

    def step() -> None:
        with network_autocast(low_precision):
            loss = run(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()

    return step


def count_training_flops(model: torch.nn.Module, batch, low_precision: torch.dtype | None = None) -> int:
    """FLOPs of one training forward and backward of ``model`` on ``batch`` (gradients cleared after)."""
    with FlopCounterMode(display=False) as counter:
        with network_autocast(low_precision):
            loss = model(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def attention_variants(config: dict, kinds: Sequence[str], *, skip_refused: bool = False) -> list[dict]:
    """``config`` once per attention kind (``model.attention=KIND``), completed for its backbone.

    ``skip_refused``: leave out the kinds the backbone refuses (a model without attention, such as
    ``rrdb``, takes only ``none``) instead of raising their ``ConfigError``; checked by building the
    model on the ``meta`` device (no memory, no computation)."""
    out = []
    for kind in kinds:
        variant = apply_overrides(copy.deepcopy(config), [f"model.attention={kind}"])
        try:
            variant = validate_config(variant)
            if skip_refused:
                with torch.device("meta"):
                    build_model(variant)
        except ConfigError:
            if not skip_refused:
                raise
            continue
        except Exception:  # noqa: BLE001 - not a refusal: an operation without a meta kernel
            pass
        out.append(variant)
    if not out:
        raise ConfigError(f"backbone {config['model']['backbone']!r} takes none of the attentions {', '.join(kinds)}")
    return out


@dataclass
class _Subject:
    """One variant, built and warmed up: what the timed rounds call and what its row reports."""

    label: str
    config: dict
    model: Any
    step: Callable[[], None]
    draw: Callable[[], None]
    flops: int | None
    peak_GiB: float | None


def _prepare(label: str, config: dict, batch_size: int, dev: torch.device, *, warmup: int, sample: bool,
             compile: bool, count_flops: bool) -> _Subject:
    cuda = dev.type == "cuda"
    if cuda:  # as training sets them up
        tf32 = bool(config.get("train", {}).get("tf32", True))
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    torch.manual_seed(0)
    model = build_model(config).to(dev)
    batch = model.example_batch(batch_size, dev)
    model.initialize(batch)
    model.train()
    low = AUTOCAST_DTYPES.get(config.get("train", {}).get("autocast"))
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-4)
    step = training_step(model, batch, optimizer, low, torch.compile(model) if compile else model)
    cond = model.sample_conditions(batch)

    def draw() -> None:
        with torch.no_grad(), network_autocast(low):
            model.sample(batch_size, cond)

    for _ in range(max(1, warmup)):  # the first builds lazy state (optimiser moments, compiled graphs)
        step()
    if sample:
        model.eval()
        draw()
        model.train()
    peak = None
    if cuda:
        torch.cuda.synchronize(dev)
        peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**30
    flops = count_training_flops(model, batch, low) if count_flops else None  # eager, after the peak
    return _Subject(label, config, model, step, draw, flops, peak)


def bench_variants(
    variants: Sequence[tuple[str, dict]],
    *,
    batch_size: int = 32,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 2,
    sample: bool = True,
    compile: bool = False,
    count_flops: bool = True,
) -> list[dict]:
    """One row per ``(label, config)`` of ``variants``, timed in turn (see the module docstring).

    Row keys: ``model`` (the label), ``attention``, ``batch``, ``device``, ``compiled``,
    ``params_M``, ``train_ms`` (median per step), ``img_per_s`` (training), ``sample_ms`` and
    ``sample_img_per_s`` (with ``sample``), ``train_flops`` (per step) and ``flop_rate`` (FLOP/s
    of the median step; with ``count_flops``), ``peak_mem_GiB`` (CUDA; None on the CPU).
    ``compile``: ``torch.compile`` the training forward (sampling stays eager; FLOPs are counted
    on the eager model).
    """
    dev = torch.device(device)
    subjects = [
        _prepare(label, config, batch_size, dev, warmup=warmup, sample=sample, compile=compile,
                 count_flops=count_flops)
        for label, config in variants
    ]
    keys = [str(i) for i in range(len(subjects))]
    train = time_rounds(dict(zip(keys, (s.step for s in subjects))), dev, repeats=repeats)
    draws = {}
    if sample:
        for s in subjects:
            s.model.eval()
        draws = time_rounds(dict(zip(keys, (s.draw for s in subjects))), dev, repeats=max(1, repeats // 2))
    return [_row(s, train[k], draws.get(k), batch_size, dev, compile) for k, s in zip(keys, subjects)]


def _row(s: _Subject, train_ms: list[float], sample_ms: list[float] | None, batch: int, dev: torch.device,
         compiled: bool) -> dict:
    t = statistics.median(train_ms)
    row = {
        "model": s.label,
        "attention": s.config["model"]["attention"],
        "batch": batch,
        "device": str(dev),
        "compiled": compiled,
        "params_M": sum(p.numel() for p in s.model.parameters()) / 1e6,
        "train_ms": t,
        "img_per_s": batch / (t / 1000),
        "peak_mem_GiB": s.peak_GiB,
    }
    if sample_ms:
        row["sample_ms"] = statistics.median(sample_ms)
        row["sample_img_per_s"] = batch / (row["sample_ms"] / 1000)
    if s.flops is not None:
        row["train_flops"] = s.flops
        row["flop_rate"] = s.flops / (t / 1000)
    return row


def bench_config(
    config: dict,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 2,
    sample: bool = True,
    label: str | None = None,
    compile: bool = False,
    count_flops: bool = False,
) -> dict:
    """The row of one config (:func:`bench_variants`); without the FLOP count unless asked
    (``benchmarks/against.py`` calls this in every tree it compares)."""
    return bench_variants([(label or config.get("name", "model"), config)], batch_size=batch_size, device=device,
                          repeats=repeats, warmup=warmup, sample=sample, compile=compile,
                          count_flops=count_flops)[0]


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def format_table(rows: list[dict]) -> str:
    """Markdown: times, throughput, FLOPs, memory, and each row's times over the ``none`` row of the
    same model and batch (``overhead``)."""
    base = {(r["model"], r["batch"]): r for r in rows if r["attention"] == "none"}
    rates = [r["flop_rate"] for r in rows if r.get("flop_rate")]
    scale, unit, digits = (1e12, "TFLOP/s", ".2f") if rates and max(rates) >= 1e12 else (1e9, "GFLOP/s", ".1f")
    lines = [
        "| model | attention | batch | params (M) | train ms/step | train img/s | sample ms/batch | sample img/s "
        f"| GFLOP/img (train) | {unit} | peak mem (GiB) | train overhead | sample overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        over_t = r["train_ms"] / b["train_ms"] if b else None
        over_s = r["sample_ms"] / b["sample_ms"] if b and "sample_ms" in r and "sample_ms" in b else None
        flops = r.get("train_flops")
        lines.append(
            f"| {r['model']} | {r['attention']} | {r['batch']} | {r['params_M']:.2f} | {r['train_ms']:.1f} | "
            f"{r['img_per_s']:.1f} | {_cell(r.get('sample_ms'), '.1f')} | {_cell(r.get('sample_img_per_s'), '.1f')} | "
            f"{_cell(None if flops is None else flops / r['batch'] / 1e9, '.4g')} | "
            f"{_cell(None if flops is None else r['flop_rate'] / scale, digits)} | "
            f"{_cell(r.get('peak_mem_GiB'), '.2f')} | {_cell(over_t, '.3f')} | {_cell(over_s, '.3f')} |"
        )
    return "\n".join(lines)
