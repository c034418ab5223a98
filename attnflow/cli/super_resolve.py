"""``attnflow super-resolve CKPT IMAGE_OR_FOLDER``: diverse SR samples of low-resolution images.

Every input image is the LR input (read as RGB). Its height and width must be multiples of the
model's ``lr_multiple`` (1 for the paper's 1/1 and 2/8 models, 2 for the full 8x SRFlow); the
outputs are ``scale`` times larger, at their native size. Output files: ``OUT/NAME_tT_sK.png`` for
every temperature ``T`` (2 decimals, more where needed: ``0.70``, ``0.701``) and sample ``K``.
``NAME`` is the file's stem; for a folder, its path relative to the folder without suffix, so the
outputs mirror the input tree (``sub/y.png`` -> ``OUT/sub/y_t0.80_s0.png``), with the suffix kept
where two files differ only by it (``x.png``, ``x.jpg`` -> ``OUT/x.png_t0.80_s0.png``, ...).
Before any work, every output path is checked: two inputs that would write one file, or an
existing file (unless ``--overwrite``; an input file never), stop the run with one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_sampling_args,
    check_out_folder,
    check_outputs,
    collect_inputs,
    load_task_model,
    positive_int,
    print_json,
)

__all__ = ["add_parser"]


def cmd_super_resolve(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..data.common import load_image, to_tensor
    from ..images import temperature_label

    inputs = collect_inputs(args.input, "super-resolve input")
    out = Path(args.out)
    check_out_folder(out, (), overwrite=True)  # not a file; the files themselves are checked next
    labels = [temperature_label(t) for t in args.temperature]
    check_outputs(
        ((_output(out, name, label, k), path) for name, path in inputs for label in labels
         for k in range(args.samples)),
        overwrite=args.overwrite, inputs=[path for _, path in inputs],
    )
    device = torch.device(args.device or "cpu")
    model, _, _ = load_task_model(args.checkpoint, device, "super_resolution", "attnflow super-resolve")
    # read and check everything first, so a bad file fails before any work is done
    images, bad = [], []
    for name, path in inputs:
        lr = to_tensor(np.asarray(load_image(path, "RGB")))  # DataError naming the file
        try:
            model.check_lr(lr[None].float())
        except ValueError as err:
            bad.append(f"{path}: {err}")
            continue
        images.append((name, path, lr))
    if bad:
        raise ValueError(f"{len(bad)} input image(s) cannot be super-resolved by this model: " + "; ".join(bad))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    written = []
    with torch.no_grad():
        _run(model, images, args, out, device, written)
    summary = {
        "checkpoint": str(args.checkpoint),
        "scale": model.scale,
        "inputs": len(images),
        "temperatures": args.temperature,
        "samples": args.samples,
        "written": len(written),
        "out": str(out),
        "first": written[:3],
    }
    print_json(summary)
    return 0


def _output(out: Path, name: str, label: str, k: int) -> Path:
    """The file of sample ``k`` at temperature ``label`` of input ``name``."""
    return out / f"{name}_t{label}_s{k}.png"


def _run(model, images, args, out: Path, device, written: list[str]) -> None:
    """Draw and write the SR samples of every (name, path, lr) input."""
    from ..images import save_image, temperature_label

    for name, path, lr in images:
        lr_f = lr[None].to(device).float()
        conds = model.level_conditions(lr_f)
        for t in args.temperature:
            k = 0
            while k < args.samples:
                n = min(args.batch_size, args.samples - k)
                sr = model.super_resolve(lr_f, samples=n, temperature=t, conditions=conds)[0]
                for j in range(n):
                    written.append(str(save_image(sr[j], _output(out, name, temperature_label(t), k + j))))
                k += n
        print(
            f"{path}: {lr.shape[1]}x{lr.shape[2]} -> {lr.shape[1] * model.scale}x"
            f"{lr.shape[2] * model.scale}, {len(args.temperature) * args.samples} image(s)"
        )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "super-resolve",
        help="super-resolve LR image(s) with a trained SR checkpoint (several samples each)",
        description=(
            "Draw --samples SR images per LR input image at each --temperature. Inputs are read as "
            "RGB; their size must be a multiple of the model's LR multiple (see the error message). "
            "Outputs mirror the input folder (OUT/sub/NAME_tT_sK.png); existing files are kept "
            "unless --overwrite."
        ),
    )
    add_sampling_args(
        p, checkpoint="an SR checkpoint (e.g. runs/sr-demo/checkpoints/last.pt)",
        inputs=("input", "an LR image file, or a folder of them (searched recursively)"),
        temperature=0.8, samples="SR samples per image and temperature", out="sr_out",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="samples drawn at once (memory)")
    p.set_defaults(func=cmd_super_resolve)
