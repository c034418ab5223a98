"""What the sampling commands write, and where: every output name is unique and says which input and
temperature it comes from, nothing is overwritten without ``--overwrite``, a bad ``--out`` or an
impossible grid is refused before any work, the wrong kind of label input is caught, and grids are
big enough to look at. Tiny untrained checkpoints, made in process; commands run in process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config
from PIL import Image

from attnflow.cli import main
from attnflow.images import CITYSCAPES_COLORS, MAX_GRID_PIXELS, grid_size, save_grid, temperature_label
from attnflow.models import build_model
from attnflow.training.checkpoint import save_checkpoint


def _checkpoint(path: Path, backbone: str, **model) -> Path:
    config = tiny_model_config(backbone, **model)
    return save_checkpoint({"model": build_model(config).state_dict(), "config": config, "step": 0}, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    onehot = dict(cond={"cond_hidden": 8, "cond_mlp": [4], "label_mode": "onehot", "classes": 5})
    return {
        "sr": _checkpoint(d / "sr.pt", "srflow"),
        "color": _checkpoint(d / "color.pt", "fullglow"),
        "onehot": _checkpoint(d / "onehot.pt", "fullglow", **onehot),
        "gen": _checkpoint(d / "gen.pt", "marflow"),
    }


def ok(capsys, *argv: str) -> tuple[dict, str]:
    """Run ``attnflow ARGV`` in process; it must succeed. ``(JSON summary, stderr)``."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out[captured.out.index("{"):]), captured.err


def fails(capsys, *argv: str) -> str:
    """Run ``attnflow ARGV`` in process; it must exit 2 with one line on stderr (returned)."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"attnflow {argv[0]}: error: "), err
    return err


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _color_labels(path: Path, h: int = 16, w: int = 16, seed: int = 0) -> Path:
    ids = np.random.default_rng(seed).integers(0, len(CITYSCAPES_COLORS), (h // 4, w // 4))
    ids = np.repeat(np.repeat(ids, 4, 0), 4, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(CITYSCAPES_COLORS[ids]).save(path)
    return path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- case 1: names, collisions, existing files, repeated temperatures ------------------------------
@pytest.mark.parametrize("command", ["sample", "super-resolve", "translate", "evaluate"])
def test_a_repeated_temperature_is_refused(capsys, tmp_path, command):
    argv = [command, str(tmp_path / "c.pt")] + ([] if command in ("sample", "evaluate") else [str(tmp_path)])
    assert "--temperature 0.5 given twice" in fails(capsys, *argv, "--temperature", "0.5", "0.7", "0.50")
    # several --temperature options add up (the last one no longer silently wins) ...
    line = fails(capsys, *argv, "--temperature", "0.5", "--temperature", "0.5")
    assert "--temperature 0.5 given twice" in line


def test_several_temperature_options_add_up():
    from attnflow.cli import build_parser

    args = build_parser().parse_args(["sample", "c.pt", "--temperature", "0.5", "--temperature", "0.7", "1"])
    assert args.temperature == [0.5, 0.7, 1.0]
    assert build_parser().parse_args(["sample", "c.pt"]).temperature == [0.7]


def test_evaluate_refuses_a_repeated_temperature_before_loading(capsys, ckpts):
    line = fails(capsys, "evaluate", str(ckpts["sr"]), "--temperature", "0.5", "0.5")
    assert line == "attnflow evaluate: error: --temperature 0.5 given twice"


def test_temperature_labels_tell_the_values_apart():
    assert [temperature_label(t) for t in (0.7, 0.701, 0.704, 1.0, 0.0, 0.125)] == [
        "0.70", "0.701", "0.704", "1.00", "0.00", "0.125",
    ]
    assert float(temperature_label(0.1 + 0.2)) == 0.1 + 0.2


def test_super_resolve_mirrors_folders_and_keeps_names_apart(capsys, ckpts, tmp_path):
    lr = tmp_path / "lr"
    for rel in ("x.png", "x.jpg", "sub/y.png", "sub__y.png"):
        _rgb(lr / rel, 4, 6)
    out = tmp_path / "sr"
    summary, _ = ok(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--temperature", "0.701", "0.704",
                    "--samples", "2", "--out", str(out))
    expected = sorted(
        f"{name}_t{t}_s{s}.png" for name in ("x.png", "x.jpg", "sub/y", "sub__y")
        for t in ("0.701", "0.704") for s in (0, 1)
    )
    assert _files(out) == expected
    assert summary["written"] == len(expected) == 16
    assert Image.open(out / "sub" / "y_t0.701_s0.png").size == (24, 16)  # data: native size, 4x
    # a single file: its stem
    ok(capsys, "super-resolve", str(ckpts["sr"]), str(lr / "sub" / "y.png"), "--samples", "1",
       "--out", str(tmp_path / "one"))
    assert _files(tmp_path / "one") == ["y_t0.80_s0.png"]


def test_super_resolve_refuses_colliding_names_before_any_work(capsys, ckpts, tmp_path):
    lr = tmp_path / "lr"
    for rel in ("x.png", "x.jpg", "x.png.bmp"):  # x.png and x.jpg keep their suffix: "x.png" twice
        _rgb(lr / rel, 4, 4)
    out = tmp_path / "sr"
    line = fails(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--out", str(out))
    assert "x.png.bmp" in line and str(lr / "x.png") in line and "x.png_t0.80_s0.png" in line
    assert not out.exists()


def test_super_resolve_refuses_existing_files_unless_overwrite(capsys, ckpts, tmp_path):
    lr = tmp_path / "lr"
    _rgb(lr / "a.png", 4, 4)
    _rgb(lr / "b.png", 4, 4)
    out = tmp_path / "sr"
    out.mkdir()
    (out / "b_t0.80_s1.png").write_bytes(b"keep me")
    line = fails(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--samples", "2", "--out", str(out))
    assert str(out / "b_t0.80_s1.png") in line and "--overwrite" in line
    assert _files(out) == ["b_t0.80_s1.png"]  # nothing written
    assert (out / "b_t0.80_s1.png").read_bytes() == b"keep me"
    summary, _ = ok(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--samples", "2", "--out", str(out),
                    "--overwrite")
    assert summary["written"] == 4 and len(_files(out)) == 4
    assert Image.open(out / "b_t0.80_s1.png").size == (16, 16)
    # --out a file, and --overwrite never writes over an input
    line = fails(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--out", str(lr / "a.png"))
    assert "--out" in line and "is a file" in line
    (lr / "a_t0.80_s0.png").write_bytes((lr / "a.png").read_bytes())
    line = fails(capsys, "super-resolve", str(ckpts["sr"]), str(lr), "--samples", "1", "--out", str(lr),
                 "--overwrite")  # the folder's a_t0.80_s0.png is an input, and a.png's first output
    assert "one of the inputs" in line and str(lr / "a_t0.80_s0.png") in line
    assert _files(lr) == ["a.png", "a_t0.80_s0.png", "b.png"]


def test_translate_mirrors_folders_and_refuses_existing_files(capsys, ckpts, tmp_path):
    labels = tmp_path / "labels"
    for rel in ("x.png", "x.bmp", "sub/y.png", "sub__y.png"):
        _color_labels(labels / rel)
    out = tmp_path / "photos"
    summary, _ = ok(capsys, "translate", str(ckpts["color"]), str(labels), "--samples", "1",
                    "--temperature", "0.701", "0.704", "--save-labels", "--out", str(out))
    names = ("x.png", "x.bmp", "sub/y", "sub__y")
    expected = sorted([f"{n}_t{t}_s0.png" for n in names for t in ("0.701", "0.704")]
                      + [f"{n}_labels.png" for n in names])
    assert _files(out) == expected
    assert sorted(Path(f).relative_to(out).as_posix() for f in summary["files"]) == expected
    assert summary["warnings"] == []
    line = fails(capsys, "translate", str(ckpts["color"]), str(labels), "--samples", "1", "--out", str(out),
                 "--temperature", "0.704")
    assert str(out / "sub" / "y_t0.704_s0.png") in line and "--overwrite" in line
    ok(capsys, "translate", str(ckpts["color"]), str(labels), "--samples", "1", "--out", str(out),
       "--temperature", "0.704", "--overwrite")


# --- case 3: the wrong kind of label input -------------------------------------------------------
def test_colour_models_refuse_label_id_images(capsys, ckpts, tmp_path):
    ids = np.repeat(np.repeat(np.random.default_rng(0).integers(0, 34, (4, 4), dtype=np.uint8), 4, 0), 4, 1)
    Image.fromarray(ids, mode="L").save(tmp_path / "a_gtFine_labelIds.png")
    out = tmp_path / "o"
    line = fails(capsys, "translate", str(ckpts["color"]), str(tmp_path / "a_gtFine_labelIds.png"),
                 "--out", str(out))
    assert "a_gtFine_labelIds.png" in line and "mode L" in line
    assert "colour label maps" in line and "label_mode=onehot" in line
    assert not out.exists()
    # a palette image of grey levels is label ids too; one with a colour palette is a colour map
    grey = Image.fromarray(ids, mode="L").convert("P")
    grey.putpalette([v for i in range(256) for v in (i, i, i)])
    grey.save(tmp_path / "grey_p.png")
    assert "mode P" in fails(capsys, "translate", str(ckpts["color"]), str(tmp_path / "grey_p.png"),
                             "--out", str(out))
    colour = Image.fromarray(ids, mode="L").convert("P")
    colour.putpalette(CITYSCAPES_COLORS.reshape(-1).tolist())
    colour.save(tmp_path / "colour_p.png")
    summary, err = ok(capsys, "translate", str(ckpts["color"]), str(tmp_path / "colour_p.png"),
                      "--samples", "1", "--out", str(out))
    assert summary["warnings"] == [] and err == ""


def test_translate_warns_about_photos(capsys, ckpts, tmp_path):
    _rgb(tmp_path / "in" / "face.jpg", 32, 32)
    _color_labels(tmp_path / "in" / "map.png", 32, 32)
    summary, err = ok(capsys, "translate", str(ckpts["color"]), str(tmp_path / "in"), "--samples", "1",
                      "--out", str(tmp_path / "o"))
    assert len(summary["files"]) == 2  # warned, not refused
    assert len(summary["warnings"]) == 1 and "face.jpg" in summary["warnings"][0]
    assert "face.jpg" in err and "photo" in err and "map.png" not in err
    # one-hot models: a grey photo is read as label ids without complaint unless warned about
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(
        tmp_path / "grey.png"
    )
    summary, err = ok(capsys, "translate", str(ckpts["onehot"]), str(tmp_path / "grey.png"), "--samples", "1",
                      "--out", str(tmp_path / "o2"))
    assert len(summary["warnings"]) == 1 and "grey.png" in err
    # ... and an RGB file is refused (as before)
    line = fails(capsys, "translate", str(ckpts["onehot"]), str(tmp_path / "in" / "map.png"),
                 "--out", str(tmp_path / "o3"))
    assert "map.png" in line and "mode RGB" in line


# --- case 2: sample ------------------------------------------------------------------------------
def test_sample_refuses_an_existing_file_unless_overwrite(capsys, ckpts, tmp_path):
    out = tmp_path / "grid.png"
    out.write_bytes(b"keep me")
    line = fails(capsys, "sample", str(ckpts["gen"]), "--n", "4", "--out", str(out))
    assert str(out) in line and "--overwrite" in line
    assert out.read_bytes() == b"keep me"
    ok(capsys, "sample", str(ckpts["gen"]), "--n", "4", "--out", str(out), "--overwrite")
    assert Image.open(out).size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)  # 8x8 cells shown at 64x64
    # several temperatures: one file each, named apart; all checked first
    summary, _ = ok(capsys, "sample", str(ckpts["gen"]), "--n", "1", "--out", str(tmp_path / "g.png"),
                    "--temperature", "0.701", "0.704")
    assert summary["samples"] == [str(tmp_path / "g_t0.701.png"), str(tmp_path / "g_t0.704.png")]
    line = fails(capsys, "sample", str(ckpts["gen"]), "--n", "1", "--out", str(tmp_path / "g.png"),
                 "--temperature", "0.5", "0.704")
    assert str(tmp_path / "g_t0.704.png") in line and not (tmp_path / "g_t0.50.png").exists()


@pytest.mark.parametrize(
    ("out", "expected"),
    [("folder", "is a folder"), ("grid", "no suffix"), ("grid.xyz", "cannot write"),
     ("grid.pt", "cannot write"), ("grid.xbm", "cannot write")],
)
def test_sample_refuses_a_bad_out_before_loading(capsys, ckpts, tmp_path, monkeypatch, out, expected):
    import attnflow.cli.sample as sample

    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(sample, "load_task_model", lambda *a, **k: pytest.fail("loaded before checking --out"))
    line = fails(capsys, "sample", str(ckpts["gen"]), "--out", str(tmp_path / out))
    assert "--out" in line and expected in line


def test_sample_refuses_a_grid_too_big_to_write(capsys, ckpts, tmp_path, monkeypatch):
    from attnflow.models.base import FlowModel

    monkeypatch.setattr(FlowModel, "sample", lambda *a, **k: pytest.fail("sampled before checking --n"))
    line = fails(capsys, "sample", str(ckpts["gen"]), "--n", "1000000", "--out", str(tmp_path / "g.png"))
    largest = int(re.search(r"at most (\d+)", line).group(1))
    assert "--n 1000000" in line and not (tmp_path / "g.png").exists()
    h, w = grid_size(largest, 8, 8)
    assert h * w <= MAX_GRID_PIXELS
    h, w = grid_size(largest + 1, 8, 8)
    assert h * w > MAX_GRID_PIXELS


def test_sample_in_batches(capsys, ckpts, tmp_path):
    from attnflow.training.checkpoint import load_model

    def pixels(p):
        return np.asarray(Image.open(p))

    ok(capsys, "sample", str(ckpts["gen"]), "--n", "5", "--batch-size", "2", "--seed", "3",
       "--out", str(tmp_path / "a.png"))
    ok(capsys, "sample", str(ckpts["gen"]), "--n", "5", "--batch-size", "2", "--seed", "3",
       "--out", str(tmp_path / "b.png"))
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert pixels(tmp_path / "a.png").shape == grid_size(5, 8, 8)
    # --n <= --batch-size: one batch, the same images as one model.sample call after the seed
    ok(capsys, "sample", str(ckpts["gen"]), "--n", "4", "--seed", "3", "--out", str(tmp_path / "c.png"))
    model, _, _ = load_model(ckpts["gen"])
    torch.manual_seed(3)
    save_grid(model.sample(4, temperature=0.7), tmp_path / "d.png")
    assert np.array_equal(pixels(tmp_path / "c.png"), pixels(tmp_path / "d.png"))


# --- case 4: grids big enough to see, with column titles -----------------------------------------
def test_save_grid_upscales_small_cells(tmp_path):
    imgs = torch.arange(4 * 3 * 28 * 28, dtype=torch.float32).reshape(4, 3, 28, 28) % 256
    with Image.open(save_grid(imgs, tmp_path / "g.png")) as im:
        assert im.size == (2 * 84 + 3 * 2, 2 * 84 + 3 * 2)  # 28 px -> 3x = 84 px
        grid = np.asarray(im)
    cell = grid[2 : 2 + 84, 2 : 2 + 84]
    assert np.array_equal(cell[::3, ::3], imgs[0].permute(1, 2, 0).to(torch.uint8).numpy())  # nearest
    assert np.array_equal(cell[1::3, 2::3], cell[::3, ::3])
    with Image.open(save_grid(imgs, tmp_path / "n.png", min_cell=0)) as im:
        assert im.size == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)
    big = torch.zeros(2, 1, 64, 100, dtype=torch.uint8)
    with Image.open(save_grid(big, tmp_path / "b.png")) as im:
        assert im.size == (2 * 100 + 3 * 2, 64 + 2 * 2)  # short side already 64: unchanged
    assert grid_size(4, 28, 28) == (2 * 84 + 3 * 2, 2 * 84 + 3 * 2)


def test_save_grid_header_titles_the_panels(tmp_path):
    from attnflow.models.fullglow import FullGlow

    model = build_model(tiny_model_config("fullglow"))
    assert FullGlow.panel_titles == ("label", "sample", "photo")
    photos = torch.full((3, 3, 8, 8), 90, dtype=torch.uint8)
    cells = model.visualize(torch.zeros(1, 3, 8, 8), torch.full((3, 3, 8, 8), 200, dtype=torch.uint8), photos)
    assert cells.shape[3] == len(model.panel_titles) * 8  # one title per panel of visualize
    assert torch.equal(cells[..., 16:], photos)  # the true photo beside each sample
    plain = np.asarray(Image.open(save_grid(cells, tmp_path / "p.png")))
    titled = np.asarray(Image.open(save_grid(cells, tmp_path / "t.png", header=model.panel_titles)))
    strip = titled.shape[0] - plain.shape[0]
    assert 8 <= strip <= 24 and titled.shape[1] == plain.shape[1]
    assert np.array_equal(titled[strip:], plain)  # the grid itself, under a strip of text
    assert titled[:strip].max() > 128  # the titles are drawn
    assert grid_size(3, 8, 24, header=model.panel_titles) == titled.shape[:2]
    with pytest.raises(ValueError, match="5 titles"):
        save_grid(cells, tmp_path / "x.png", header=("a", "b", "c", "d", "e"))
