"""A freshly initialised model (after the data-dependent ActNorm init) starts about where the same
model without attention starts: iMap and iTrans begin near the identity. A layer that started far
from volume-preserving would start the whole model at a worse bits/dim (iTrans' former start, a
mixing weight of 0.371 without the learned scale, left SRFlow 2/8 about 3 bits/dim behind)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from attnflow.config import apply_overrides, load_preset, validate_config
from attnflow.data import dataset_from_config
from attnflow.models import build_model

VARIANTS = {
    "none": ["model.attention=none"],
    "imap": ["model.attention=imap"],
    "itrans": ["model.attention=itrans"],  # learned scale, mixing weight 0.1
    "itrans_far": ["model.attention=itrans", "model.itrans_scale=none", "model.itrans_init_mixing=null"],
}


def _initial_bpd(preset: str, overrides: list[str], images: int) -> float:
    config = validate_config(apply_overrides(load_preset(preset), overrides))
    data = dataset_from_config(config["data"], "test", config["model"]["image_shape"])
    batch = default_collate([data[i] for i in range(images)])
    torch.manual_seed(0)
    model = build_model(config)
    model.initialize(batch)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)  # the same dequantisation noise for every variant
        return float(model.bits_per_dim(batch).mean())


@pytest.mark.parametrize("preset, images", [("mnist", 8), ("sr-demo", 4)])
def test_attention_starts_near_the_model_without_it(preset, images):
    bpd = {name: _initial_bpd(preset, overrides, images) for name, overrides in VARIANTS.items()}
    gap = {name: bpd[name] - bpd["none"] for name in VARIANTS}
    assert gap["itrans_far"] > 0.1, bpd  # the check can tell a start far from the identity
    assert abs(gap["imap"]) < 0.4 * gap["itrans_far"] and abs(gap["itrans"]) < 0.4 * gap["itrans_far"], bpd
