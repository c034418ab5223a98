"""``attnflow.experiments``' timer and benchmark: the step it times is a training step, the timer
alternates the functions round by round, the FLOP count and the table say what they should."""

from __future__ import annotations

import time

import pytest
import torch

from attnflow.cli import main
from attnflow.config import apply_overrides, load_preset
from attnflow.experiments.bench import (
    attention_variants,
    bench_variants,
    count_training_flops,
    format_table,
    training_step,
)
from attnflow.experiments.timing import time_rounds

TINY = ["model.levels=1", "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
        "model.prior_layers=1", "model.steps=1"]


class _Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return 1000.0 * (self.w * batch).sum()  # gradient 1000 * batch: norm 1000 * |batch|


def test_one_clipped_optimiser_step_of_the_given_network():
    model = _Quadratic()
    batch = torch.tensor([0.6, 0.8], dtype=torch.float64)
    step = training_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0))
    step()
    # gradient [600, 800] (norm 1000) clipped to norm 100: [60, 80]
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 60.0, -4.0 - 80.0], dtype=torch.float64))
    step()  # gradients are reset between steps, not accumulated
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 120.0, -4.0 - 160.0], dtype=torch.float64))


def test_the_loss_comes_from_net_and_the_clipping_from_model():
    model = _Quadratic()
    calls = []

    def net(batch):
        calls.append(batch)
        return model(batch) / 1000.0  # gradient [0.6, 0.8]: norm 1, not clipped

    batch = torch.tensor([0.6, 0.8], dtype=torch.float64)
    training_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0), net=net)()
    assert len(calls) == 1
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 0.6, -4.0 - 0.8], dtype=torch.float64))


def test_the_timer_alternates_round_by_round_and_times_in_milliseconds():
    calls = []
    fns = {"a": lambda: calls.append("a"), "slow": lambda: (calls.append("slow"), time.sleep(0.02))}
    times = time_rounds(fns, "cpu", warmup=1, repeats=2)
    assert calls == ["a", "slow"] * 3  # one warm-up round, then two timed ones
    assert [len(v) for v in times.values()] == [2, 2]
    assert all(t >= 20.0 for t in times["slow"]) and all(t < 20.0 for t in times["a"])


def test_training_flops_of_a_linear_map_by_hand():
    """y = x W^T (B x 4 -> B x 3, no bias), loss sum(y): the forward product takes 2 * B * 4 * 3
    FLOPs and the backward one more of the same size (the weight's gradient; x needs none)."""

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).sum()

    model = Linear()
    assert count_training_flops(model, torch.randn(5, 4)) == 2 * (2 * 5 * 4 * 3)
    assert model.lin.weight.grad is None  # cleared after counting


def test_bench_rows_and_table_per_attention_kind():
    config = apply_overrides(load_preset("mnist"), TINY)
    variants = attention_variants(config, ["none", "itrans"])
    assert [v["model"]["attention"] for v in variants] == ["none", "itrans"]
    rows = bench_variants([("tiny", v) for v in variants], batch_size=2, repeats=1, warmup=0)
    for r in rows:
        assert r["train_ms"] > 0 and r["sample_ms"] > 0 and r["peak_mem_GiB"] is None
        assert r["img_per_s"] == pytest.approx(2 / (r["train_ms"] / 1000))
        assert r["train_flops"] > 0 and r["flop_rate"] == pytest.approx(r["train_flops"] / (r["train_ms"] / 1000))
    assert rows[1]["params_M"] > rows[0]["params_M"]
    lines = format_table(rows).splitlines()
    assert "GFLOP/img (train)" in lines[0] and "| GFLOP/s |" in lines[0]
    none = [c.strip() for c in lines[2].strip("|").split("|")]
    itrans = [c.strip() for c in lines[3].strip("|").split("|")]
    assert none[:3] == ["tiny", "none", "2"] and none[-3:] == ["n/a", "1.000", "1.000"]
    assert float(itrans[-2]) == pytest.approx(rows[1]["train_ms"] / rows[0]["train_ms"], abs=1e-3)
    assert float(none[8]) == pytest.approx(rows[0]["train_flops"] / 2 / 1e9, rel=1e-3)


def test_a_backbone_without_attention_is_benched_without_the_kinds_it_refuses():
    config = load_preset("celeba-rrdb-8x")
    assert [v["model"]["attention"] for v in attention_variants(config, ["none", "imap"], skip_refused=True)] == [
        "none"]


def test_the_command_prints_one_row_per_kind(capsys):
    args = ["bench", "--preset", "mnist", *(x for s in TINY for x in ("--set", s)), "--batch-size", "2",
            "--repeats", "1", "--warmup", "0", "--attentions", "none", "imap", "--no-sample"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("attnflow bench: CPU") and "| mnist | none | 2 |" in out and "| mnist | imap | 2 |" in out
    assert main(["bench", "--preset", "mnist", "--attentions", "imap", "--repeats", "0"]) == 2
