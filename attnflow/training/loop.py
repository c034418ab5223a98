"""Training loop: likelihood training with warm-up, clipping, a non-finite guard, evaluation,
samples, TensorBoard + ``metrics.jsonl``, atomic checkpoints, exact ``resume``, and DDP.

Output folder::

    OUT/config.yaml            the resolved config
    OUT/metrics.jsonl          one JSON line per log/eval event
    OUT/tb/                    TensorBoard scalars
    OUT/checkpoints/last.pt    latest (atomic); best.pt: lowest test bits/dim
    OUT/samples/step_XXXXXXX_tT.png   sample grids at each evaluation
    OUT/curves.png             train / test bits/dim against step
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..config import ConfigError
from ..data import dataset_from_config
from ..evaluation.likelihood import evaluate_bpd
from ..images import save_grid
from ..models import FlowModel, build_model, complete_config
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .logging import log_jsonl, plot_curves
from .optim import lr_factor, make_optimizer

__all__ = ["TrainingError", "ResumableBatches", "train"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


class ResumableBatches(Sampler[list[int]]):
    """Deterministic batches for steps ``start..total-1``: epoch ``e`` uses ``randperm`` seeded by
    ``(seed, e)``, rank ``r`` of ``world`` takes its slice. Restarting at any step reproduces the
    same sequence, which makes ``--resume`` exact."""

    def __init__(
        self, n: int, batch_size: int, total: int, *, seed: int, start: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch_size, self.total = n, batch_size, total
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch < 1:
            raise ConfigError(
                f"the training set has {n} images, fewer than one batch of {batch_size} x {world} "
                f"process(es); lower train.batch_size"
            )

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=gen), epoch
            first = (k * self.world + self.rank) * self.batch_size
            yield perm[first : first + self.batch_size].tolist()


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


def train(
    config: dict,
    out_dir: str | Path,
    *,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train the model a config describes; returns a summary (final test bits/dim, paths).

    With ``resume=True``, training continues from ``out_dir/checkpoints/last.pt`` exactly where it
    stopped (same data order, RNG states, optimiser and scheduler); the checkpoint's config is
    used, except ``train.steps`` which may be raised.
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    world, rank, local_rank = _dist_info()
    is_main = rank == 0

    state = None
    if resume:
        if not last_path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {last_path}")
        state = load_checkpoint(last_path)
        steps = int(config["train"]["steps"])
        config = state["config"]
        config["train"]["steps"] = max(steps, int(config["train"]["steps"]))
    config = complete_config(config)
    t = config["train"]
    device_name = device or t.get("device") or "cpu"
    if world > 1:
        backend = "nccl" if device_name.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        if device_name.startswith("cuda"):
            device_name = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
    dev = torch.device(device_name)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = bool(t.get("tf32", True))
        torch.backends.cudnn.allow_tf32 = bool(t.get("tf32", True))

    _seed_all(int(t["seed"]) + rank)
    shape = config["model"].get("image_shape")
    train_set = dataset_from_config(config["data"], "train", shape)
    test_set = dataset_from_config(config["data"], config["data"].get("test_split", "test"), shape)
    total = int(t["steps"])
    start = int(state["step"]) if state else 0
    batches = ResumableBatches(
        len(train_set), int(t["batch_size"]), total, seed=int(t["seed"]), start=start, rank=rank, world=world
    )
    # Own generators: a DataLoader iterator otherwise draws its seed from the global RNG, which
    # would shift the dequantisation noise of a resumed run.
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=int(t["num_workers"]),
                        generator=torch.Generator().manual_seed(int(t["seed"])))
    test_loader = DataLoader(test_set, batch_size=int(t["eval_batch_size"]), shuffle=False,
                             generator=torch.Generator())

    model: FlowModel = build_model(config).to(dev)
    if state:
        model.load_state_dict(state["model"])
    else:
        first = next(iter(DataLoader(train_set, generator=torch.Generator(), batch_sampler=ResumableBatches(
            len(train_set), int(t["batch_size"]), 1, seed=int(t["seed"]), rank=rank, world=world))))
        model.initialize(first)  # data-dependent init, before any DDP wrap
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if t.get("compile"):
        net = torch.compile(net)
    optimizer = make_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(t))
    best = math.inf
    bad_in_a_row = 0
    last_test: float | None = None
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        best = float(state.get("best_test_bpd", math.inf))
        bad_in_a_row = int(state.get("bad_steps", 0))

    writer = None
    metrics_path = out / "metrics.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start if state else None)

    def checkpoint(step: int, test_bpd: float | None = None) -> None:
        nonlocal best
        if not is_main:
            return
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "config": config,
            "best_test_bpd": best,
            "last_test_bpd": test_bpd if test_bpd is not None else last_test,
            "bad_steps": bad_in_a_row,
            "attnflow_version": _version(),
        }
        save_checkpoint(payload, last_path)
        if test_bpd is not None and test_bpd < best:
            best = test_bpd
            payload["best_test_bpd"] = best
            save_checkpoint(payload, ckpt_dir / "best.pt")

    def evaluate_and_sample(step: int) -> float:
        nonlocal last_test
        test_bpd = evaluate_bpd(model, test_loader, t.get("eval_max_batches"))
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(t["seed"]) + 12345)
            model.eval()
            cond = _sample_conditions(model, test_set, int(t["n_samples"]))
            for temp in t["sample_temperatures"]:
                n = int(t["n_samples"]) if cond is None else cond.shape[0]
                imgs = model.visualize(cond, model.sample(n, cond, temperature=float(temp)))
                save_grid(imgs, out / "samples" / f"step_{step:07d}_t{float(temp):.2f}.png")
            model.train()
        log_jsonl(metrics_path, {"step": step, "split": "test", "bpd": test_bpd, "time": time.time()})
        if writer:
            writer.add_scalar("bpd/test", test_bpd, step)
        plot_curves(metrics_path, out / "curves.png")
        last_test = test_bpd
        return test_bpd

    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=config.get("name", "train"), dynamic_ncols=True)
    model.train()
    step = start
    last_saved = start
    running = None
    test_bpd = last_test = state.get("last_test_bpd") if state else None
    started = time.time()
    try:
        for batch in loader:
            bpd = net(batch)  # the model's objective: mean bits/dim of what training maximises
            optimizer.zero_grad(set_to_none=True)
            bpd.backward()
            clip = float(t["grad_clip"] or 0) or math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            finite = bool(torch.isfinite(bpd) & torch.isfinite(grad_norm))
            if world > 1:  # every rank must agree to skip
                flag = torch.tensor([float(finite)], device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = bool(flag.item() > 0)
            if finite:
                optimizer.step()
                bad_in_a_row = 0
                value = float(bpd.detach())
                running = value if running is None else 0.98 * running + 0.02 * value
            else:
                optimizer.zero_grad(set_to_none=True)
                bad_in_a_row += 1
                if bad_in_a_row > int(t["max_bad_steps"]):
                    raise TrainingError(
                        f"the loss or its gradient was non-finite for {bad_in_a_row} steps in a row "
                        f"(at step {step + 1}); stopping. The last good checkpoint is {last_path}. "
                        f"Try a lower train.lr or a smaller train.grad_clip."
                    )
            with warnings.catch_warnings():  # a skipped step still advances the schedule
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
            step += 1
            if is_main:
                if bar:
                    bar.update(1)
                    if running is not None:
                        bar.set_postfix(bpd=f"{running:.3f}", skipped=bad_in_a_row)
                if step % int(t["log_every"]) == 0 and finite:
                    lr = scheduler.get_last_lr()[0]
                    log_jsonl(metrics_path, {"step": step, "split": "train", "bpd": value,
                                              "lr": lr, "grad_norm": float(grad_norm), "time": time.time()})
                    writer.add_scalar("bpd/train", value, step)
                    writer.add_scalar("lr", lr, step)
            do_eval = step % int(t["eval_every"]) == 0 or step == total
            do_ckpt = step % int(t["checkpoint_every"]) == 0 or step == total
            if do_eval or do_ckpt:
                if is_main and do_eval:
                    test_bpd = evaluate_and_sample(step)
                if is_main:
                    checkpoint(step, test_bpd if do_eval else None)
                    last_saved = step
                if world > 1:
                    dist.barrier()
    except KeyboardInterrupt:
        if is_main and step > last_saved:
            checkpoint(step)
            print(f"\ninterrupted: saved step {step} to {last_path}; continue with --resume")
        raise
    finally:
        if bar:
            bar.close()
        if writer:
            writer.close()
    summary = {
        "steps": step,
        "test_bpd": test_bpd,
        "best_test_bpd": best,
        "seconds": time.time() - started,
        "out_dir": str(out),
        "checkpoint": str(last_path),
        "metrics": str(metrics_path),
        "samples": str(out / "samples"),
        "curves": str(out / "curves.png"),
    }
    if world > 1 and dist.is_initialized():
        dist.barrier()
    return summary


def _sample_conditions(model: FlowModel, dataset: Dataset, n: int) -> Tensor | None:
    """For conditional models, the conditions of the first ``n`` (at most 16) test items."""
    if not model.conditional:
        return None
    n = min(n, len(dataset), 16)
    return model.sample_conditions(default_collate([dataset[i] for i in range(n)]))


def _version() -> str:
    from .. import __version__

    return __version__
