"""``attnflow evaluate CKPT``: the metrics of the model's task on a test split, as JSON.

* generation: test bits/dim; with ``--fid`` also FID, KID and Inception Score of samples
  (``--inception`` weights, at ``--temperature``);
* super-resolution: conditional bits/dim and PSNR / SSIM / LR-PSNR (+ LPIPS with ``--alexnet``)
  per temperature (default 0.1 ... 0.9) and their mean, with a Markdown table; a deterministic
  SR network (backbone ``rrdb``) has no likelihood and one prediction: one row, no bits/dim;
* translation: conditional bits/dim.

``--out DIR`` also writes ``DIR/evaluation.json`` (and, for super-resolution, the table and
example grids).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_device_arg,
    add_seed_arg,
    add_temperature_arg,
    check_data_dir,
    check_out_folder,
    json_text,
    positive_int,
    print_json,
)

__all__ = ["add_parser"]


def _dataset(args, config: dict, model, *, sr: bool = False):
    """``(data config, split, dataset)`` the options name: the run's own data and test split
    (``data.test_split``) unless ``--data``/``--data-dir``/``--split`` say otherwise."""
    from ..data import dataset_from_config, evaluation_data_config
    from ..evaluation import SR_DATASETS

    data_cfg = evaluation_data_config(config, args.data, args.data_dir)
    split = args.split or config["data"]["test_split"]
    if args.data_dir:
        check_data_dir(args.data_dir, data_cfg["name"])
    if sr:
        if data_cfg["name"] not in SR_DATASETS:
            raise ValueError(
                f"evaluate: a super-resolution checkpoint needs a dataset of (HR, LR) pairs "
                f"({', '.join(SR_DATASETS)}), got {data_cfg['name']!r}"
            )
        data_cfg["options"] = {**data_cfg["options"], "scale": model.scale}
        return data_cfg, split, dataset_from_config(data_cfg, split)
    return data_cfg, split, dataset_from_config(
        data_cfg, split, config["model"]["image_shape"], n_bins=config["model"]["n_bins"],
        convert=args.convert,
    )


def _provenance(args, state, dataset) -> dict:
    """What a result was computed on: the checkpoint, the data (absolute root and folder), the
    split, how many images, whether ``--max-batches`` left some out, and any conversion."""
    n = len(dataset)
    images = n if args.max_batches is None else min(n, args.max_batches * args.batch_size)
    out = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "step": int(state.get("step", 0)),
        **dataset.source,
        "images": images,
        "partial": images < n,
    }
    if getattr(dataset, "converted", None):
        out["converted"] = dataset.converted
    return out


def _likelihood(args, model, config, state, device) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from ..evaluation import evaluate_bpd

    _, _, dataset = _dataset(args, config, model)
    torch.manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    bpd = evaluate_bpd(model, loader, args.max_batches)
    result = {**_provenance(args, state, dataset), "n_bins": int(model.n_bins), "bits_per_dim": bpd}
    if args.fid:
        if model.task != "generation":
            raise ValueError("evaluate --fid: FID/KID/IS are for unconditional (generation) models")
        if int(model.n_bins) != 256:
            raise ValueError(f"evaluate --fid: the feature network takes 8-bit images; this model has "
                             f"n_bins={model.n_bins} (FID of fewer bins is not supported)")
        from ..evaluation import sample_quality

        temps = args.temperature or [1.0]
        if len(temps) != 1:
            raise ValueError(f"evaluate --fid: give one --temperature, got {len(temps)}")
        result.update(
            sample_quality(model, dataset, inception=args.inception, n=args.fid_samples,
                           temperature=temps[0], device=device, batch_size=args.batch_size,
                           seed=args.seed)
        )
    return result


def _super_resolution(args, model, config, state, device) -> dict:
    from ..evaluation import DEFAULT_TEMPERATURES, LPIPS, evaluate_sr, format_sr_table
    from ..evaluation.super_resolution import lpips_unavailable_reason
    from ..images import save_grid, temperature_label

    _, _, dataset = _dataset(args, config, model, sr=True)
    lpips = LPIPS(args.alexnet).to(device) if args.alexnet else None
    note = None if lpips is not None else lpips_unavailable_reason()
    out = Path(args.out) if args.out else None
    result = evaluate_sr(
        model,
        dataset,
        temperatures=args.temperature or DEFAULT_TEMPERATURES,
        lpips=lpips,
        device=device,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        seed=args.seed,
        examples=8 if out is not None else 0,
    )
    examples = result.pop("examples", {})
    bpd = result.pop("bits_per_dim")
    summary = {
        **_provenance(args, state, dataset),
        "images": result["images"],
        "scale": model.scale,
        **({"conditional_bits_per_dim": bpd} if bpd is not None else {}),
        **result,
        "ssim_note": "ssim: 11x11 Gaussian window (standard); ssim_uniform: skimage's default 7x7 "
        "uniform window, as SRFlow's Measure.py (the paper's Table 4)",
    }
    if note:
        summary["lpips"] = note
    table = format_sr_table(result)
    summary["_table"] = table
    what = (f"conditional bits/dim {bpd:.4f}" if bpd is not None
            else "deterministic prediction (no likelihood; temperature does not apply)")
    summary["_text"] = (
        f"Super-resolution x{model.scale}, {result['images']} images x {result['samples_per_image']} "
        f"sample(s), {what}\n\n{table}"
        + (f"\n\n{note}" if note else "")
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sr_eval.md").write_text(table + "\n")
        for t, grid in examples.items():
            save_grid(grid, out / f"examples_t{temperature_label(t)}.png", nrow=1)
    return summary


_BY_TASK = {"generation": _likelihood, "super_resolution": _super_resolution, "translation": _likelihood}


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..training.checkpoint import load_model

    if args.out:  # before any work: a bad --out fails now, not after the evaluation
        check_out_folder(Path(args.out), ("evaluation.json", "sr_eval.json", "sr_eval.md", "examples_t*.png"), args.overwrite)
    device = torch.device(args.device or "cpu")
    model, config, state = load_model(args.checkpoint, device)
    result = _BY_TASK[model.task](args, model, config, state, device)
    text = result.pop("_text", None)
    result.pop("_table", None)
    print_json(result)
    if text:
        print()
        print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = "sr_eval.json" if model.task == "super_resolution" else "evaluation.json"
        (out / name).write_text(json_text(result) + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the metrics of a checkpoint's task on a test split (JSON)")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="dataset name (default: the training config's)")
    p.add_argument("--data-dir", help="dataset root")
    p.add_argument("--split", help="the split to evaluate (default: the run's data.test_split, else test)")
    p.add_argument("--convert", action="store_true",
                   help="convert images whose channels or size differ from the model's (greyscale/RGB, "
                        "resize, centre crop; the JSON says so); without it they are refused")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--max-batches", type=positive_int)
    add_seed_arg(p)
    add_temperature_arg(p, None, "sampling (super-resolution metrics: default 0.1 ... 0.9; --fid: 1.0)")
    p.add_argument("--fid", action="store_true", help="generation: add FID, KID and Inception Score of samples")
    p.add_argument("--inception", help="Inception weights for --fid (TorchScript file)")
    p.add_argument("--fid-samples", type=positive_int, default=10_000)
    p.add_argument("--alexnet", help="super-resolution: AlexNet weights for LPIPS (torchvision IMAGENET1K_V1)")
    p.add_argument("--out", help="also write the results (JSON; for super-resolution the table and grids) "
                                 "into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace result files already in --out")
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)
