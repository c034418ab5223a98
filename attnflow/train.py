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

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError
from .images import save_grid
from .metrics import bits_per_dim
from .models import build_model

__all__ = [
    "TrainingError",
    "train",
    "make_dataset",
    "evaluation_data_config",
    "evaluate_bpd",
    "model_bpd",
    "split_batch",
    "load_model",
    "plot_curves",
]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def make_dataset(data_cfg: dict, split: str, image_shape=None) -> Dataset:
    """The dataset a config's ``data`` section names, for ``split`` (train / test / val).

    For a generic image ``folder``, ``image_shape`` (the model's C, H, W) sets the channels and
    size unless the config's ``data.options`` does.
    """
    from .data import get_dataset

    options = dict(data_cfg.get("options") or {})
    if data_cfg["name"] == "folder" and image_shape is not None:
        options.setdefault("channels", int(image_shape[0]))
        options.setdefault("image_size", (int(image_shape[1]), int(image_shape[2])))
    for key in ("pad_to", "grey_to_rgb"):
        if data_cfg.get(key):
            options[key] = data_cfg[key]
    if data_cfg.get("flip"):
        options["flip"] = split == "train"
    return get_dataset(data_cfg["name"], data_cfg.get("root"), split, **options)


def evaluation_data_config(config: dict, name: str | None, root: str | None) -> dict:
    """The training config's ``data`` section with ``--data``/``--data-dir`` applied: another
    dataset name without a root drops the training root (it belonged to the other dataset)."""
    data_cfg = dict(config["data"])
    if name:
        data_cfg["name"] = name
    if root:
        data_cfg["root"] = root
    elif name and name != config["data"]["name"]:
        data_cfg["root"] = None
    return data_cfg


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


def split_batch(batch: Any, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """``(x, cond)`` on ``device`` as float from a dataset batch (a tensor or a pair)."""
    if isinstance(batch, (list, tuple)):
        x, cond = batch[0], batch[1]
        return x.to(device).float(), cond.to(device).float()
    return batch.to(device).float(), None


def model_bpd(model: nn.Module, x: Tensor, cond: Tensor | None, *, objective: bool = False) -> Tensor:
    """Bits/dim of each image, ``[B]``, from ``log_prob(x, cond)`` (the integer image's log-likelihood).

    With ``objective=True`` it uses ``model(x, cond)`` instead: the training objective, which is
    ``log_prob`` for most models and, e.g., ``log p(x|c) + lambda log p(c)`` for Full-Glow. It goes
    through ``forward`` so DistributedDataParallel sees the call. The log-likelihood already
    includes the dequantisation log-det ``-D ln n_bins``; the unit-scale density that
    :func:`attnflow.metrics.bits_per_dim` takes is ``log p + D ln n_bins``.
    """
    core = model.module if hasattr(model, "module") else model
    n_bins = core.n_bins
    d = x[0].numel()
    log_p = model(x, cond) if objective else core.log_prob(x, cond)
    return bits_per_dim(log_p + d * math.log(n_bins), d, n_bins)


@torch.no_grad()
def evaluate_bpd(
    model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int | None = None
) -> float:
    """Mean bits/dim over a loader (uniform dequantisation noise, eval mode)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, cond = split_batch(batch, device)
        bpd = model_bpd(model, x, cond)
        total += float(bpd.sum())
        count += bpd.numel()
    model.train(was)
    if count == 0:
        raise ValueError("evaluation set is empty")
    return total / count


# ------------------------------------------------------------------------------------------------
# optimisation
# ------------------------------------------------------------------------------------------------


def _make_optimizer(model: nn.Module, t: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kind = t["optimizer"].lower()
    kwargs = dict(lr=float(t["lr"]), betas=tuple(float(b) for b in t.get("betas", (0.9, 0.999))),
                  weight_decay=float(t["weight_decay"]))
    if kind == "adam":
        return torch.optim.Adam(params, **kwargs)
    if kind == "adamax":
        return torch.optim.Adamax(params, **kwargs)
    raise ConfigError(f"train.optimizer must be 'adam' or 'adamax', got {t['optimizer']!r}")


def _lr_factor(t: dict):
    warmup = int(t["warmup_steps"])
    total = int(t["steps"])
    milestones = sorted(int(float(f) * total) for f in (t.get("lr_milestones") or []))

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return f * 0.5 ** sum(step >= m for m in milestones)

    return factor


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


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


def _log_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """Train (smoothed) and test bits/dim against step, from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = [], []
    for line in Path(metrics_path).read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "train":
            train.append((r["step"], r["bpd"]))
        elif r.get("split") == "test":
            test.append((r["step"], r["bpd"]))
    if not train and not test:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.8)
    if test:
        ax.plot(*zip(*test), "o-", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict, dict]:
    """``(model in eval mode, config, checkpoint dict)`` from a checkpoint file."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = state["config"]
    model = build_model(config)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, config, state


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
    train_set = make_dataset(config["data"], "train", shape)
    test_set = make_dataset(config["data"], config["data"].get("test_split", "test"), shape)
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

    model = build_model(config).to(dev)
    if state:
        model.load_state_dict(state["model"])
    else:
        first = next(iter(DataLoader(train_set, generator=torch.Generator(), batch_sampler=ResumableBatches(
            len(train_set), int(t["batch_size"]), 1, seed=int(t["seed"]), rank=rank, world=world))))
        x0, c0 = split_batch(first, dev)
        model.initialize(x0, c0)  # data-dependent init, before any DDP wrap
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if t.get("compile"):
        net = torch.compile(net)
    optimizer = _make_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(t))
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
        test_bpd = evaluate_bpd(model, test_loader, dev, t.get("eval_max_batches"))
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(t["seed"]) + 12345)
            model.eval()
            cond = _sample_conditions(test_set, int(t["n_samples"]), dev)
            for temp in t["sample_temperatures"]:
                imgs = model.sample(int(t["n_samples"]) if cond is None else cond.shape[0], cond, float(temp))
                if hasattr(model, "visualize"):  # e.g. LR | SR pairs for conditional models
                    imgs = model.visualize(cond, imgs)
                save_grid(imgs, out / "samples" / f"step_{step:07d}_t{float(temp):.2f}.png")
            model.train()
        _log_jsonl(metrics_path, {"step": step, "split": "test", "bpd": test_bpd, "time": time.time()})
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
            x, cond = split_batch(batch, dev)
            bpd = model_bpd(net, x, cond, objective=True).mean()
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
                    _log_jsonl(metrics_path, {"step": step, "split": "train", "bpd": value,
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


def _sample_conditions(dataset: Dataset, n: int, device: torch.device) -> Tensor | None:
    """For conditional models, the conditions of the first ``n`` test items; else ``None``."""
    item = dataset[0]
    if not isinstance(item, (list, tuple)):
        return None
    n = min(n, len(dataset), 16)
    return torch.stack([dataset[i][1] for i in range(n)]).to(device).float()


def _version() -> str:
    from . import __version__

    return __version__
