"""Pretrained RRDB weights in the reference's names (andreas128/SRFlow ``RRDBNet_arch.py``,
ESRGAN's) or attnflow's: the mapping onto :class:`~.rrdb_encoder.RRDBEncoder`'s state dict."""

from __future__ import annotations

import re

from torch import Tensor

__all__ = ["REFERENCE_KEYS", "map_pretrained_keys"]

#: the reference's RRDBNet names (andreas128/SRFlow ``RRDBNet_arch.py``, ESRGAN's) -> the encoder's
REFERENCE_KEYS: dict[str, str] = {
    "conv_first.{weight,bias}": "conv_first.{weight,bias}",
    "RRDB_trunk.N.RDBk.convj.{weight,bias}": "blocks.N.dense.(k-1).convs.(j-1).{weight,bias}",
    "trunk_conv.{weight,bias}": "trunk_conv.{weight,bias}",
    "upconvu.{weight,bias}": "upconvs.(u-1).{weight,bias}",
    "HRconv.{weight,bias}": "(SR head; attnflow rrdb: hr_conv)",
    "conv_last.{weight,bias}": "(SR head; attnflow rrdb: conv_last)",
}

_REF_BLOCK = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_REF_UP = re.compile(r"^upconv([1-9]\d*)\.(weight|bias)$")
_OWN_UP = re.compile(r"^upconvs\.(\d+)\.")
_HEAD = ("HRconv.", "conv_last.", "hr_conv.")


def map_pretrained_keys(
    state: dict[str, Tensor], upconvs: int
) -> tuple[dict[str, Tensor], list[str], list[str], dict[str, str]]:
    """``(encoder state, head names left out, unexpected names, encoder name -> file name)`` of a
    pretrained RRDB's tensors, in either naming (see
    :meth:`~.rrdb_encoder.RRDBEncoder.load_pretrained_state`); ``upconvs`` is the number of
    upsampling convs of the encoder (the others belong to the SR head). A mapped name need not
    exist in a given encoder (a deeper RRDB's blocks): the caller compares with its own state
    dict."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    ours = any(k.startswith("encoder.") for k in state)
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    head: list[str] = []
    unexpected: list[str] = []
    for name, value in state.items():
        key: str | None = None
        if ours:
            if name.startswith("encoder."):
                key = name[len("encoder."):]
        elif name.startswith(("conv_first.", "trunk_conv.")):
            key = name
        elif m := _REF_BLOCK.match(name):
            key = f"blocks.{m[1]}.dense.{int(m[2]) - 1}.convs.{int(m[3]) - 1}.{m[4]}"
        elif m := _REF_UP.match(name):
            key = f"upconvs.{int(m[1]) - 1}.{m[2]}"
        up = _OWN_UP.match(key) if key is not None else None
        if up is not None and int(up[1]) >= upconvs:  # an upsampling conv only the SR head reads
            head.append(name)
        elif key is not None:
            mapped[key], origin[key] = value, name
        elif name.startswith(_HEAD):
            head.append(name)
        else:
            unexpected.append(name)
    return mapped, sorted(head), sorted(unexpected), origin
