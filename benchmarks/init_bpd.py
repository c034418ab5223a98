"""Bits/dim at initialisation (after the data-dependent ActNorm init) of a preset per attention.

A layer that starts far from volume-preserving starts the whole model at a worse bits/dim; this
prints one row per variant, on a batch of the preset's own (or the bundled) data:

    python benchmarks/init_bpd.py --preset celeba-sr-8x-2-8-none --data celeba-bundled --batch 4
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import default_collate

from attnflow.config import apply_overrides, load_preset
from attnflow.data import dataset_from_config
from attnflow.models import build_model, complete_config

VARIANTS = {
    "none": ["model.attention=none"],
    "imap": ["model.attention=imap"],
    "itrans, default (learned scale, m = 0.1)": ["model.attention=itrans"],
    "itrans, no scale, m = 0.1": ["model.attention=itrans", "model.itrans_scale=none"],
    "itrans, learned scale, m = 0.371 (theta = 0)": ["model.attention=itrans", "model.itrans_init_mixing=null"],
    "itrans, no scale, m = 0.371 (attnflow before 0.2)": [
        "model.attention=itrans", "model.itrans_scale=none", "model.itrans_init_mixing=null"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="celeba-sr-8x-2-8-none")
    p.add_argument("--data", help="dataset name instead of the preset's (e.g. celeba-bundled)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"| {args.preset}: variant | bits/dim at init (batch {args.batch}) |")
    print("|---|---|")
    for name, overrides in VARIANTS.items():
        cfg = complete_config(apply_overrides(load_preset(args.preset), overrides))
        data_cfg = dict(cfg["data"])
        if args.data:
            data_cfg.update(name=args.data, root=None)
        dataset = dataset_from_config(data_cfg, "test", cfg["model"]["image_shape"])
        batch = default_collate([dataset[i] for i in range(args.batch)])
        torch.manual_seed(args.seed)
        model = build_model(cfg)
        model.initialize(batch)
        model.eval()
        with torch.no_grad():
            torch.manual_seed(args.seed)
            bpd = float(model.bits_per_dim(batch).mean())
        print(f"| {name} | {bpd:.3f} |")


if __name__ == "__main__":
    main()
