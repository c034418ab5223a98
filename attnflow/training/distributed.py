"""Devices and processes: whether a device can be used here, the rank and device of each process
under ``torchrun`` (DDP), and agreement on a step's skip decision."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import ConfigError

__all__ = ["dist_info", "check_device", "training_device", "all_agree"]


def dist_info() -> tuple[int, int, int]:
    """``(world size, rank, local rank)`` under ``torchrun``; ``(1, 0, 0)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def check_device(name: str, what: str = "--device") -> str:
    """``name`` if it is a device torch can use here; else a ConfigError saying what is allowed."""
    text = str(name)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"{what} {text!r} is not a device; use cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {text!r}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{what} {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{what} {text!r}: MPS is not available on this machine; use cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"{what} {text!r}: not supported; use cpu, cuda or cuda:N")
    return text


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
