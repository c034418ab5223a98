"""JSON that every reader accepts: NaN and infinities written as ``null`` (JSON has neither)."""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

__all__ = ["json_safe", "json_text"]


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / infinite numbers (Python, NumPy or any other real type) replaced by None;
    dicts, lists and tuples are walked, tuples become lists."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_text(obj: Any) -> str:
    """Valid JSON, indented (NaN and Infinity become null; other non-JSON values their ``str``)."""
    return json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False)
