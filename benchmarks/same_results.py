"""Check that a speed change changed no result: bits/dim of fixed models on fixed batches, this tree
against another commit (``--base``, default ``main``).

    python benchmarks/same_results.py --base main
    python benchmarks/same_results.py --base main --configs --presets mnist-3-2-48-itrans mnist

For each configuration of ``benchmarks/against.py`` (random 8-bit data, at that configuration's
batch size unless ``--batch`` is given: the CPU attention path depends on it), the *base* tree
builds the model (seed 0), runs its data-dependent initialisation on a fixed batch, moves every
parameter off its initialisation (``N(0, 0.02^2)`` noise: the zero-initialised output convs would
hide most of the computation) and saves the weights and the batch; then each tree, in its own
subprocess, loads the same weights and computes the bits/dim (eval mode, the same dequantisation
noise) of that batch in float32 and float64. The table shows the largest relative difference ours
/ base per image, which must stay below 1e-5.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from against import CONFIGS, ROOT, checkout  # noqa: E402

from attnflow.config import ConfigError, load_preset  # noqa: E402

WORKER = r"""
import json, sys, torch
tree, preset, batch, path, mode = sys.argv[1:6]
sys.path.insert(0, tree)
from attnflow.config import load_preset
from attnflow.models import build_model
torch.manual_seed(0)
model = build_model(load_preset(preset))
if mode == "make":
    data = model.example_batch(int(batch))
    model.initialize(data)
    with torch.no_grad():  # off the initialisation (zero-initialised output convs), as after training
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    torch.save({"state": model.state_dict(), "batch": data}, path)
    print(json.dumps({}))
else:
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["state"])
    model.eval()
    import attnflow
    out = {"attnflow": attnflow.__file__}
    with torch.no_grad():
        for name, dtype in (("bpd32", torch.float32), ("bpd64", torch.float64)):
            m = model.to(dtype)
            data = saved["batch"]
            data = tuple(d.to(dtype) for d in data) if isinstance(data, (tuple, list)) else data.to(dtype)
            torch.manual_seed(1)  # the same dequantisation noise on both sides
            out[name] = m.bits_per_dim(data).double().tolist()
    print(json.dumps(out))
"""


def run(tree: Path, preset: str, batch: int, path: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKER, str(tree), preset, str(batch), str(path), mode],
                          capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{tree} {preset}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=sorted(CONFIGS))
    p.add_argument("--presets", nargs="+", default=[], metavar="PRESET",
                   help="more presets to check (at --batch, default 8), e.g. attention variants: "
                        "mnist-3-2-48-itrans")
    p.add_argument("--batch", type=int, default=None,
                   help="images per batch (default: each configuration's against.py batch, the "
                        "shapes the speed is measured at; some CPU paths depend on the batch)")
    args = p.parse_args()
    for preset in args.presets:  # before any checkout: an unknown name is one line, exit 2
        try:
            backbone = load_preset(preset)["model"].get("backbone")
        except ConfigError as err:
            p.error(str(err))
        if backbone == "rrdb":
            p.error(f"preset {preset!r}: backbone 'rrdb' is an L1-trained SR network, not a flow: it has no bits/dim")
    print("| config | batch | bits/dim float32 (base) | max rel. diff float32 | max rel. diff float64 |")
    print("|---|---|---|---|---|")
    with checkout(args.base, ROOT) as (theirs, sha), tempfile.TemporaryDirectory() as tmp:
        checks = [(name, CONFIGS[name].preset, args.batch or CONFIGS[name].batch) for name in args.configs]
        checks += [(preset, preset, args.batch or 8) for preset in args.presets]
        for name, preset, batch in checks:
            path = Path(tmp) / f"{name}.pt"
            run(theirs, preset, batch, path, "make")
            base, ours = run(theirs, preset, batch, path, "eval"), run(ROOT, preset, batch, path, "eval")
            assert base["attnflow"].startswith(str(theirs)) and ours["attnflow"].startswith(str(ROOT)), (base, ours)
            rel = {k: max(abs(a - b) / abs(b) for a, b in zip(ours[k], base[k])) for k in ("bpd32", "bpd64")}
            print(f"| {name} | {batch} | {sum(base['bpd32']) / len(base['bpd32']):.6f} | "
                  f"{rel['bpd32']:.2e} | {rel['bpd64']:.2e} |", flush=True)
    print(f"\nbase {sha[:8]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
