"""attnflow attention CKPT: the maps of a trained model as pictures and a summary."""

from __future__ import annotations

import json

from conftest import run_cli

TINY = [
    "--set", "model.levels=2", "--set", "model.hidden=4", "--set", "model.blocks=1",
    "--set", "model.components=2", "--set", "model.prior_hidden=4", "--set", "model.prior_layers=1",
    "--set", "model.steps=1", "--set", "train.batch_size=8", "--set", "train.eval_batch_size=50",
    "--set", "train.eval_max_batches=1", "--set", "train.n_samples=2",
    "--set", "train.sample_temperatures=[0.7]", "--set", "train.eval_every=2",
]


def _train(out, attention: str):
    run_cli("train", "--preset", "mnist", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
            "--set", f"model.attention={attention}", "--set", "model.patches=[4,49]")
    return out / "checkpoints" / "last.pt"


def test_attention_writes_maps_and_summary(tmp_path):
    for kind in ("imap", "itrans"):
        ckpt = _train(tmp_path / kind, kind)
        out = tmp_path / f"maps-{kind}"
        run_cli("attention", str(ckpt), "--n", "2", "--split", "test", "--out", str(out))
        assert sorted(p.name for p in out.iterdir()) == ["image_0.png", "image_1.png", "summary.json"]
        summary = json.loads((out / "summary.json").read_text())
        layers = summary["layers"]
        assert summary["images"] == 2 and [r["level"] for r in layers] == [0, 1]
        assert all(r["kind"] == kind for r in layers)
        if kind == "imap":
            assert all(0 < r["a_mean"] <= 1 and r["a_std"] >= 0 for r in layers)
        else:
            assert [r["patches"] for r in layers] == [4, 49]
            assert all(0 <= r["w_offdiag_mean"] < 0.5 for r in layers)


def test_attention_refuses_a_model_without_attention(tmp_path):
    ckpt = _train(tmp_path / "none", "none")
    proc = run_cli("attention", str(ckpt), "--out", str(tmp_path / "maps"), check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "has no attention layers" in proc.stderr
