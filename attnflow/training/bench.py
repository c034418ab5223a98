"""Speed and memory of a config's training step and sampling (``attnflow bench``, benchmarks/)."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch

from ..models import FlowModel, build_model
from ..nn import AUTOCAST_DTYPES, network_autocast

__all__ = ["bench_config", "format_table", "synchronize", "training_step"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
) -> dict:
    """Median ms per training step (forward, backward, Adamax step) and per sampling batch.

    Random data (the model's ``example_batch``). ``train.autocast`` (``bf16``/``fp16``) runs the
    conditioner networks of both in that precision (:func:`~attnflow.nn.network_autocast`). Peak memory: CUDA's
    ``max_memory_allocated`` on GPU; on CPU the process's peak resident set (a high-water mark
    over the whole process, so it only grows across rows).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model: FlowModel = build_model(config).to(dev)
    batch = model.example_batch(batch_size, dev)
    model.initialize(batch)
    model.train()
    net = torch.compile(model) if compile else model
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    low = AUTOCAST_DTYPES.get(config.get("train", {}).get("autocast"))
    step = training_step(model, batch, opt, low, net)

    times = []
    for i in range(warmup + repeats):
        synchronize(dev)
        t0 = time.perf_counter()
        step()
        synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    train_ms = 1000 * statistics.median(times)
    row = {
        "model": label or config.get("name", "model"),
        "attention": config["model"]["attention"],
        "batch": batch_size,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_ms": train_ms,
        "img_per_s": batch_size / (train_ms / 1000),
    }
    if sample:
        model.eval()
        s_times = []
        with torch.no_grad(), network_autocast(low):
            for i in range(max(1, warmup // 2) + max(1, repeats // 2)):
                synchronize(dev)
                t0 = time.perf_counter()
                model.sample(batch_size, model.sample_conditions(batch))
                synchronize(dev)
                if i >= max(1, warmup // 2):
                    s_times.append(time.perf_counter() - t0)
        row["sample_ms"] = 1000 * statistics.median(s_times)
    if dev.type == "cuda":
        row["peak_mem_GiB"] = torch.cuda.max_memory_allocated(dev) / 2**30
    else:
        row["peak_mem_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def format_table(rows: list[dict], baseline_key: str = "model") -> str:
    """Markdown table; adds ``overhead`` = train time / the ``none`` row of the same model."""
    base = {r[baseline_key]: r["train_ms"] for r in rows if r["attention"] == "none"}
    head = "| model | attention | batch | params (M) | train ms/step | img/s | sample ms/batch | peak mem (GiB) | overhead |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        over = r["train_ms"] / base[r[baseline_key]] if r[baseline_key] in base else float("nan")
        lines.append(
            f"| {r['model']} | {r['attention']} | {r['batch']} | {r['params_M']:.2f} | {r['train_ms']:.1f} | "
            f"{r['img_per_s']:.1f} | {r.get('sample_ms', float('nan')):.1f} | {r['peak_mem_GiB']:.2f} | "
            f"{over:.3f} |"
        )
    return "\n".join(lines)
