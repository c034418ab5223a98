"""mARFlow's paper presets have the official implementation's parameter counts."""

import pytest
import torch
from conftest import run_cli

from attnflow.config import load_preset
from attnflow.models import build_model

# visinf/mar-scf's own counts (its models for the paper's Table 2 rows), and what we leave out on
# purpose: the unused top-level embedding E of the ConvLSTM prior (41,636 parameters) and its
# duplicate LSTM gate biases (3 layers x 128 per level, 3 levels).
REFERENCE = {"mnist-3-2-48-none": 8_928_674, "mnist-3-4-96-none": 46_011_410}
REMOVED = 41_636 + 3 * 3 * 128


@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_paper_presets_count_like_the_reference(preset):
    with torch.device("meta"):
        count = sum(p.numel() for p in build_model(load_preset(preset)).parameters())
    expected = REFERENCE[preset] - REMOVED
    assert abs(count - expected) / expected < 1e-3, (count, expected)


def test_presets_params_prints_the_paper_counts():
    proc = run_cli("presets", "--params")  # as a user runs it
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:]}
    assert rows["mnist-3-2-48-none"][:2] == ["8,885,802", "8.9"]
    assert rows["mnist"][1] == "-"
