"""The study's accuracy intervals: Wilson (one proportion) and Newcombe (a difference) never leave
the possible range, and their coverage of the nominal 95% is checked on simulated binomial
experiments against the exact coverage, which is computed from the binomial distribution."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ntkbench.study.stats import Z95, difference, overlap, proportion, wilson


def test_wilson_matches_its_closed_form_and_the_reference():
    # Brown, Cai & DasGupta (2001) and statsmodels' proportion_confint(method="wilson"): 7 of 20
    p, lo, hi = wilson(7, 20)
    centre, half, scale = 0.35 + Z95**2 / 40, Z95 * math.sqrt(0.35 * 0.65 / 20 + Z95**2 / 1600), 1 + Z95**2 / 20
    assert p == 0.35 and lo == pytest.approx((centre - half) / scale) and hi == pytest.approx((centre + half) / scale)
    assert (round(lo, 4), round(hi, 4)) == (0.1812, 0.5671)
    assert wilson(0, 30)[1] == 0.0 and wilson(30, 30)[2] == 1.0
    assert all(math.isnan(v) for v in wilson(0, 0))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 30, 100, 1000, 10000])
def test_intervals_never_leave_the_range(n):
    for k in range(0, n + 1, max(1, n // 50)):
        p, lo, hi = wilson(k, n)
        assert 0.0 <= lo <= p <= hi <= 1.0, (k, n)
        for j in (0, k, n - k, n):
            d, dlo, dhi, _ = difference([k / n], [n], [j / n], [n])
            assert -1.0 <= dlo <= d <= dhi <= 1.0, (k, j, n)


def test_the_issues_examples_stay_in_range():
    """The Student-t intervals the report used to print: 97.5 [93.0, 102.0] %, 8.9 [-5.6, 23.3] %
    and 76.3 [25.6, 127.0] %, from seeds' accuracies on 200-example test sets."""
    for accuracies in ([0.96, 0.99], [0.03, 0.15], [0.5, 0.98, 0.81]):
        p, lo, hi, runs = proportion(accuracies, [200] * len(accuracies))
        assert 0 <= lo < p < hi <= 1 and runs == len(accuracies)
        assert p == pytest.approx(sum(accuracies) / len(accuracies))


def test_pooling_counts_every_test_prediction_once():
    p, lo, hi, runs = proportion([0.5, 1.0, math.nan], [10, 30, 50])
    assert (p, runs) == (35 / 40, 2) and (lo, hi) == wilson(35, 40)[1:]
    assert proportion([], [])[3] == 0 and math.isnan(proportion([], [])[0])


def _exact_coverage(n: int, p: float) -> float:
    """P(p ∈ Wilson(K, n)) for K ~ Binomial(n, p), summed over every k."""
    return sum(scipy_stats.binom.pmf(k, n, p) for k in range(n + 1) if wilson(k, n)[1] <= p <= wilson(k, n)[2])


@pytest.mark.parametrize("n, p", [(50, 0.5), (100, 0.9), (200, 0.97), (400, 0.75), (1000, 0.99)])
def test_wilson_covers_95_percent_of_simulated_experiments(n, p):
    """2000 simulated experiments of n test predictions each, correct with probability p. The
    empirical coverage is within 4.5 binomial standard errors (√(c(1−c)/2000) ≈ 0.005) of the
    exact coverage, and the exact one within 0.02 of the nominal 0.95 (Wilson's coverage
    oscillates with n and p around its nominal level; Brown, Cai & DasGupta 2001, Fig. 4)."""
    rng = np.random.default_rng(20260101)
    hits = 0
    for k in rng.binomial(n, p, size=2000):
        _, lo, hi = wilson(int(k), n)
        hits += lo <= p <= hi
    exact = _exact_coverage(n, p)
    assert abs(exact - 0.95) <= 0.02, exact
    assert abs(hits / 2000 - exact) <= 4.5 * math.sqrt(exact * (1 - exact) / 2000), (hits / 2000, exact)


@pytest.mark.parametrize("p1, p2", [(0.9, 0.9), (0.95, 0.8), (0.6, 0.5)])
def test_newcombe_covers_at_least_95_percent_of_simulated_differences(p1, p2):
    """2000 pairs of independent experiments (3 seeds × 100 test predictions each): the interval
    of p₁ − p₂ covers the true difference in at least 93% of them (Newcombe 1998 reports
    coverage near or above nominal for method 10)."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        a, b = rng.binomial(100, p1, size=3) / 100, rng.binomial(100, p2, size=3) / 100
        _, lo, hi, _ = difference(a, [100] * 3, b, [100] * 3)
        hits += lo <= p1 - p2 <= hi
    assert hits / 2000 >= 0.93


def test_overlap():
    assert overlap((0.1, 0.3), (0.3, 0.5)) and not overlap((0.1, 0.29), (0.3, 0.5))
    assert overlap((0.1, math.nan), (0.8, 0.9))
