"""The study's statistics: accuracies with Wilson score intervals, differences of accuracies with
Newcombe's interval, other means with a 95% Student-t interval kept to the quantity's range,
Pearson's r with its Fisher-z interval, and per-seed paired differences.

Why Wilson for accuracies. An accuracy is a proportion: k correct test predictions out of n. A
Student-t interval over a few seeds' accuracies ignores that, and with 2 or 3 seeds it left the
possible range (97.5 [93.0, 102.0] %, 8.9 [−5.6, 23.3] %). A bootstrap over seeds stays inside
[0, 100] but has nothing to resample from with 1 seed and covers badly with 3 (it can never reach
beyond the seeds' own min and max). The Wilson score interval of the pooled test predictions
(every seed's test set together: k = Σ correct, n = Σ n_test) is always inside [0, 1], exists for
one seed, and keeps close to its nominal coverage for small n and p near 0 or 1, where the Wald
interval fails (Brown, Cai & DasGupta 2001, "Interval Estimation for a Binomial Proportion").
What it measures is the test-set sampling error, each prediction counted as one Bernoulli trial;
the spread between seeds (training randomness) is in the report's tables as the seeds' range.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

Z95 = NormalDist().inv_cdf(0.975)
"""z_{0.975} ≈ 1.96, the two-sided 95% normal quantile."""


def wilson(successes: float, trials: float, z: float = Z95) -> tuple[float, float, float]:
    """p̂ = k/n and the Wilson score interval (Wilson 1927) for ``successes`` k of ``trials`` n:

        (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n),

    always within [0, 1] (its lower end is 0 at k = 0 and its upper end 1 at k = n). NaNs for
    n = 0."""
    if not trials > 0:
        return math.nan, math.nan, math.nan
    p = min(max(successes / trials, 0.0), 1.0)
    centre = p + z * z / (2 * trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    scale = 1 + z * z / trials
    # The interval always holds p̂, with ends 0 at k = 0 and 1 at k = n: exactly, not up to rounding.
    return p, min(p, max(0.0, (centre - half) / scale)), max(p, min(1.0, (centre + half) / scale))


def _pooled(accuracies: Any, sizes: Any) -> tuple[float, float, int]:
    """(k, n, runs) over the runs whose accuracy and size are finite: k = Σ round(acc·size)."""
    pairs = [(float(a), float(s)) for a, s in zip(accuracies, sizes) if math.isfinite(float(a)) and float(s) > 0]
    return sum(round(a * s) for a, s in pairs), sum(s for _, s in pairs), len(pairs)


def proportion(accuracies: Any, sizes: Any) -> tuple[float, float, float, int]:
    """The pooled accuracy k/n of runs with accuracies ``accuracies`` on ``sizes`` examples each
    (k = Σ round(acc·size), n = Σ size; the mean of the runs' accuracies when the sizes are
    equal), its 95% Wilson interval (:func:`wilson`) and the number of runs; NaNs and 0 without
    runs. Always within [0, 1]."""
    k, n, runs = _pooled(accuracies, sizes)
    if not runs:
        return math.nan, math.nan, math.nan, 0
    return (*wilson(k, n), runs)


def difference(accuracies: Any, sizes: Any, ref_accuracies: Any, ref_sizes: Any) -> tuple[float, float, float, int]:
    """p₁ − p₂ of two pooled accuracies (:func:`proportion`) with Newcombe's hybrid score
    interval (Newcombe 1998, "Interval estimation for the difference between independent
    proportions", method 10), from the two Wilson intervals (l₁, u₁) and (l₂, u₂):

        [d − √((p₁−l₁)² + (u₂−p₂)²),  d + √((u₁−p₁)² + (p₂−l₂)²)],

    always within [−1, 1]; and the number of runs of the first. Run on the same test inputs, the
    two accuracies are positively correlated, which this interval for independent samples does
    not use: it is then wider than needed (conservative)."""
    p1, l1, u1, runs = proportion(accuracies, sizes)
    p2, l2, u2, _ = proportion(ref_accuracies, ref_sizes)
    d = p1 - p2
    if not (math.isfinite(d)):
        return math.nan, math.nan, math.nan, runs
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi), runs


def interval(values: Any, within: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float, int]:
    """Mean, the 95% Student-t interval of the mean (NaN bounds for fewer than two values), and
    the count, over the finite ``values``: mean ± t_{0.975, n−1} · s/√n, intersected with
    ``within``, the quantity's possible range (a fraction's [0, 1], a time's [0, ∞)). The
    intersection keeps the interval's coverage, since the true mean lies in that range. For
    times, distances and energies; accuracies take :func:`proportion`."""
    from scipy import stats

    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan, math.nan, 0
    mean = sum(v) / len(v)
    if len(v) == 1:
        return mean, math.nan, math.nan, 1
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
    half = float(stats.t.ppf(0.975, len(v) - 1)) * sd / math.sqrt(len(v))
    return mean, max(within[0], mean - half), min(within[1], mean + half), len(v)


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
    half = Z95 / math.sqrt(n - 3)
    return r, math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half), n


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the intervals ``a`` = (lo, hi) and ``b`` share a point; True when a bound is NaN
    (an interval that is not known cannot separate)."""
    if not all(math.isfinite(v) for v in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]


def paired(runs: Any, reference: Any, column: str) -> list[float]:
    """Per-seed differences ``runs[column] − reference[column]`` over the seeds both frames have
    (one row per seed in each)."""
    a, b = runs.set_index("seed")[column], reference.set_index("seed")[column]
    common = sorted(set(a.index) & set(b.index))
    return [float(a[s] - b[s]) for s in common]
