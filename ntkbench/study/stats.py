"""The study's statistics: a mean with its 95% Student-t interval, Pearson's r with its Fisher-z
interval, and per-seed paired differences."""

from __future__ import annotations

import math
from typing import Any


def interval(values: Any) -> tuple[float, float, float, int]:
    """Mean, the 95% Student-t interval of the mean (NaN bounds for fewer than two values), and
    the count, over the finite ``values``: mean ± t_{0.975, n−1} · s/√n."""
    from scipy import stats

    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan, math.nan, 0
    mean = sum(v) / len(v)
    if len(v) == 1:
        return mean, math.nan, math.nan, 1
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
    half = float(stats.t.ppf(0.975, len(v) - 1)) * sd / math.sqrt(len(v))
    return mean, mean - half, mean + half, len(v)


def correlation(x: Any, y: Any) -> tuple[float, float, float, int]:
    """Pearson's r of the finite pairs with its 95% interval from Fisher's z,
    tanh(atanh(r) ± z_{0.975}/√(n−3)) (NaN bounds below four pairs), and the number of pairs."""
    from scipy import stats

    pairs = [(float(a), float(b)) for a, b in zip(x, y) if math.isfinite(float(a)) and math.isfinite(float(b))]
    n = len(pairs)
    if n < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan, math.nan, math.nan, n
    r = float(stats.pearsonr(*zip(*pairs))[0])
    if n < 4 or abs(r) >= 1:
        return r, math.nan, math.nan, n
    half = float(stats.norm.ppf(0.975)) / math.sqrt(n - 3)
    return r, math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half), n


def paired(runs: Any, reference: Any, column: str) -> list[float]:
    """Per-seed differences ``runs[column] − reference[column]`` over the seeds both frames have
    (one row per seed in each)."""
    a, b = runs.set_index("seed")[column], reference.set_index("seed")[column]
    common = sorted(set(a.index) & set(b.index))
    return [float(a[s] - b[s]) for s in common]
