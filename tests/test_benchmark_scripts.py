"""The benchmark scripts this project's speed figures come from keep running: ``flops.py``,
``autocast_bpd.py``, ``step_sync.py``, ``attention_kernels.py``, ``conv_share.py`` and ``layers.py``
on tiny inputs, as subprocesses (as they are run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import load_benchmark

from attnflow.config import apply_overrides, load_preset
from attnflow.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
        "model.prior_layers=1", "model.steps=1", "model.levels=1"]


def _script(name: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_flops_prints_a_step_and_its_rate():
    out = _script("flops.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    cells = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "2" and float(cells[3]) > 0 and float(cells[4]) > 0 and float(cells[5]) > 0


def test_autocast_bpd_compares_a_checkpoint_in_both_precisions(tmp_path):
    config = apply_overrides(load_preset("mnist"), [*TINY, "train.steps=2", "train.batch_size=4",
                                                    "train.eval_every=2", "train.eval_batch_size=8",
                                                    "train.eval_max_batches=1", "train.n_samples=2"])
    train(config, tmp_path / "run", progress=False)
    out = _script("autocast_bpd.py", str(tmp_path / "run/checkpoints/last.pt"), "--max-batches", "1",
                  "--batch-size", "8")
    cells = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "marflow" and cells[2] == "8"
    assert abs(float(cells[5])) < 0.05 and abs(float(cells[4]) - float(cells[3]) - float(cells[5])) < 1e-4


def test_step_sync_times_both_guards():
    out = _script("step_sync.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    rows = {r.strip("|").split("|")[0].strip(): r for r in out.strip().splitlines()[-2:]}
    assert set(rows) == {"host", "device"}
    assert all(float(r.strip("|").split("|")[1]) > 0 for r in rows.values())


def test_attention_kernels_times_both_paths_on_tensors_and_in_a_model():
    out = _script("attention_kernels.py", "--shapes", "2x32x30x8", "2x2x16x8", "--repeats", "1")
    rows = [r.strip("|").split("|") for r in out.strip().splitlines()[-2:]]
    assert [r[0].strip() for r in rows] == ["2x32x30x8", "2x2x16x8"]
    assert [r[-1].strip() for r in rows] == ["yes", "no"]  # 64 heads of 30 positions pay, 4 of 16 not
    assert all(float(c) > 0 for r in rows for c in r[2:8])
    out = _script("attention_kernels.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  *(x for s in TINY for x in ("--set", s)))
    rows = [r.strip("|").split("|") for r in out.strip().splitlines()[-2:]]
    assert [r[2].strip() for r in rows] == ["training step", "sampling batch"]
    assert all(float(c) > 0 for r in rows for c in r[3:6])


def test_conv_share_records_every_convolution_with_its_layout_and_replays_them():
    conv_share = load_benchmark("conv_share")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 5, padding=4, dilation=2, bias=False))
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    calls = conv_share.record_convolutions(lambda: net(x).square().sum().backward())
    assert [c.backward for c in calls] == [None, None, (True, True, False), (False, True, True)]
    first, second, back2, back1 = calls
    assert first.tensors[0].size == (2, 3, 6, 6) and first.tensors[0].stride == x.stride()
    assert first.tensors[1].size == (8, 3, 3, 3) and first.tensors[2].size == (8,)
    assert second.tensors[2] is None and second.geometry[:3] == ([1, 1], [4, 4], [2, 2])
    assert back2.tensors[1].stride == (288, 1, 48, 8)  # the ReLU output, channels-last
    assert back1.bias_sizes == (8,) and back2.bias_sizes == (0,)  # no bias: zero-sized
    ran = []
    aten_conv = conv_share.aten.convolution

    class Spy(conv_share.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (aten_conv.default, conv_share.aten.convolution_backward.default):
                ran.append((func, tuple(args[0].shape), tuple(args[1].stride())))
            return func(*args, **(kwargs or {}))

    replay = conv_share.replayer(calls, torch.device("cpu"))
    with Spy():
        replay()
    assert [r[1] for r in ran] == [(2, 3, 6, 6), (2, 8, 6, 6), (2, 4, 6, 6), (2, 8, 6, 6)]
    assert ran[2][2] == (288, 1, 48, 8)


def test_conv_share_prints_the_share_of_a_step():
    out = _script("conv_share.py", "--preset", "mnist", "--batch", "2", "--repeats", "1",
                  "--warmup", "0", *(x for s in TINY for x in ("--set", s)))
    cells = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    fwd, bwd = (int(n) for n in cells[3].split("+"))
    assert cells[1] == "2" and fwd > 0 and bwd > 0
    assert float(cells[4]) > float(cells[5]) > 0 and 0 < float(cells[6]) < 1


def test_conv_share_and_flops_reject_an_unknown_preset_in_one_line():
    for name in ("conv_share.py", "flops.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--preset", "no-such-preset"],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "unknown preset 'no-such-preset'" in proc.stderr and "Traceback" not in proc.stderr


def test_layers_times_every_layer_against_the_coupling_interleaved():
    out = _script("layers.py", "--shape", "2", "4", "4", "4", "--hidden", "8", "--repeats", "2", "--warmup", "0")
    rows = [r.strip("|").split("|") for r in out.strip().splitlines()[-5:]]
    assert [r[0].strip().split(" (")[0] for r in rows] == ["AffineCoupling", "IMap", "IMap", "ITrans", "ITrans"]
    assert rows[0][2].strip() == "1.000" and rows[0][3].strip() == "1.000-1.000"  # the coupling against itself
    for r in rows:
        low, high = (float(v) for v in r[3].split("-"))
        assert float(r[1]) > 0 and low <= float(r[2]) <= high
