"""Processes under ``torchrun`` (DDP): the rank, the device of each process, and agreement on a
step's skip decision."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from .checks import check_device

__all__ = ["dist_info", "training_device", "all_agree"]


def dist_info() -> tuple[int, int, int]:
    """``(world size, rank, local rank)`` under ``torchrun``; ``(1, 0, 0)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def training_device(device: str | None, t: dict) -> torch.device:
    """The device to train on (``device``, else ``train.device``); under ``torchrun`` joins the
    process group (NCCL on CUDA, gloo on CPU) and takes the local rank's GPU."""
    world, _, local_rank = dist_info()
    name = check_device(device or t["device"], "--device" if device else "train.device")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if name.startswith("cuda") else "gloo")
        if name.startswith("cuda"):
            name = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
    dev = torch.device(name)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = t["tf32"]
        torch.backends.cudnn.allow_tf32 = t["tf32"]
    return dev


def all_agree(finite: Tensor) -> Tensor:
    """``finite`` (0-dim bool) where every process's holds: every process must skip the same steps."""
    flag = finite.to(torch.float32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag[0] > 0
