"""``attnflow.core``'s input checks: a conditioning map must be an ordinary 4D tensor of the
input's batch and size, and a refusal names the layer, what it expected and what it got."""

import pytest
import torch

from attnflow.core import check_cond


def test_check_cond_returns_the_map_and_names_what_is_wrong():
    x, cond = torch.randn(2, 6, 4, 6), torch.randn(2, 7, 4, 6)
    assert check_cond("Layer", cond, x, 7) is cond
    with pytest.raises(ValueError, match=r"Layer: this layer is conditional and needs cond \[B, 7, H, W\], got None"):
        check_cond("Layer", None, x, 7)
    with pytest.raises(ValueError, match=r"Layer: expected a 4D cond \[B, 7, H, W\], got \(2, 7, 4\)"):
        check_cond("Layer", cond[..., 0], x, 7)
    with pytest.raises(ValueError, match=r"Layer: expected a 4D cond \[B, 7, H, W\], got list"):
        check_cond("Layer", [cond], x, 7)
    with pytest.raises(ValueError, match=r"Layer: expected cond of shape \(2, 8, 4, 6\).*got \(2, 7, 4, 6\)"):
        check_cond("Layer", cond, x, 8)
