"""The report's table cells: one figure with its 95% interval, in the units of
:mod:`ntkbench.format`. The sections' tables and the findings quote the same cells, so a number
in a finding is the one in its table, character for character.

- accuracies (:func:`accuracy`): the pooled accuracy in percent with its Wilson interval,
  ``95.8 [94.1, 97.0]`` (:func:`ntkbench.study.stats.proportion`; one seed has one too: it is the
  test set's sampling error);
- differences of accuracies (:func:`points`): ``+1.2 [−0.5, +3.0]`` points (Newcombe);
- other quantities (:func:`mean`, :func:`seconds`): the mean with its Student-t interval kept to
  the quantity's range, ``0.620 [0.600, 0.640]``; the mean alone for one value;
- a missing figure: :data:`ntkbench.format.MISSING`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from ntkbench import format as fmt
from ntkbench.study.stats import correlation, difference, interval, proportion

TRIALS = {"test": "n_test", "train": "n_fit", "agree": "n_test"}
"""Accuracy column → the column holding its number of trials per run."""


def _bracketed(mean: str, lo: float, hi: float, show: Callable[[float], str]) -> str:
    return mean if math.isnan(lo) else f"{mean} [{show(lo)}, {show(hi)}]"


def accuracy(runs: Any, column: str = "test") -> str:
    """``runs``' pooled ``column`` accuracy (``test``, ``train`` or ``agree``) in percent with its
    Wilson interval."""
    p, lo, hi, n = proportion(runs[column], runs[TRIALS[column]])
    return fmt.MISSING if n == 0 else _bracketed(fmt.percent(p), lo, hi, fmt.percent)


def accuracy_bounds(runs: Any, column: str = "test") -> tuple[float, float, float]:
    """(accuracy, lo, hi) as fractions, for comparisons."""
    return proportion(runs[column], runs[TRIALS[column]])[:3]


def signed(fraction: float) -> str:
    """A difference of fractions in points with its sign: ``+1.2``, ``−0.5``, ``+0.0``."""
    text = fmt.percent(abs(fraction))
    return ("−" if fraction < 0 and text != "0.0" else "+") + text


def points(runs: Any, reference: Any, column: str = "test") -> str:
    """``runs``' pooled accuracy minus ``reference``'s, in points, with Newcombe's interval."""
    d, lo, hi, n = difference(runs[column], runs[TRIALS[column]], reference[column], reference[TRIALS[column]])
    return fmt.MISSING if n == 0 or math.isnan(d) else _bracketed(signed(d), lo, hi, signed)


def mean(values: Any, within: tuple[float, float] = (-math.inf, math.inf),
         show: Callable[[float], str] = fmt.significant) -> str:
    """The mean of the finite ``values`` with its t-interval kept to ``within``."""
    m, lo, hi, n = interval(values, within)
    return fmt.MISSING if n == 0 else _bracketed(show(m), lo, hi, show)


def fraction(values: Any) -> str:
    """A quantity in [0, 1] (a share of target energy)."""
    return mean(values, (0.0, 1.0))


def seconds(values: Any) -> str:
    return mean(values, (0.0, math.inf), fmt.seconds)


def r(x: Any, y: Any) -> str:
    """Pearson's r with its Fisher-z interval, two decimals."""
    value, lo, hi, n = correlation(x, y)
    return fmt.MISSING if math.isnan(value) else _bracketed(_two(value), lo, hi, _two)


def bounds(cell: str) -> tuple[float, float] | None:
    """The interval ``[lo, hi]`` a cell shows, as printed (rounded; ``−`` read as a minus), or
    None for a cell without one. Verdicts are drawn from this, so they say what the reader sees."""
    found = re.search(r"\[([^,\]]+), ([^\]]+)\]", cell)
    if found is None:
        return None
    return tuple(float(v.replace("−", "-").replace("+", "")) for v in found.groups())  # type: ignore[return-value]


def _two(x: float) -> str:
    """Two decimals with a true minus sign: ``0.42``, ``−0.10``."""
    text = f"{abs(x):.2f}"
    return ("−" if x < 0 and text != "0.00" else "") + text
