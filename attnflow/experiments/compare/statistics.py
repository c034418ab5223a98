"""The numbers of a comparison's table: the paired difference to the baseline with its t interval,
means and standard deviations over seeds, and the mean test curve."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence

__all__ = ["paired_difference", "mean_sd", "mean_curve"]


def paired_difference(values: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict:
    """Mean of ``values[i] - baseline[i]`` with its ``level`` confidence interval from the paired
    t test (``scipy.stats.ttest_rel``: ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``); ``sd`` and
    ``ci`` are ``None`` for one seed."""
    from scipy import stats

    if len(values) != len(baseline) or not values:
        raise ValueError("paired_difference: give one value per seed for both, at least one")
    diffs = [float(a) - float(b) for a, b in zip(values, baseline)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return {"mean": mean, "sd": None, "ci": None, "n": n}
    with warnings.catch_warnings():  # equal differences (sd 0): scipy warns, and its interval is [mean, mean]
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_rel([float(v) for v in values], [float(b) for b in baseline]).confidence_interval(level)
    return {"mean": mean, "sd": statistics.stdev(diffs), "ci": [float(ci.low), float(ci.high)], "n": n}


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None (sd None for one)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    return math.fsum(values) / len(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_curve(curves: list[list]) -> list[tuple[int, float, float]]:
    """``(step, mean, sd)`` at the steps every seed's ``[(step, value), ...]`` curve evaluated."""
    steps = set.intersection(*[{int(s) for s, _ in c} for c in curves]) if curves else set()
    out = []
    for step in sorted(steps):
        values = [next(v for s, v in reversed(c) if int(s) == step) for c in curves]
        m, sd = mean_sd(values)
        out.append((step, m, sd or 0.0))
    return out
