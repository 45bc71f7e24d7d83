"""The report's opening: for each task, the answers to the study's two questions in a sentence or
two, from the data alone, with the numbers and intervals behind them and a link to their table.

1. Does the kernel's feature space hold the target? For each kernel at initialization (``ntk``,
   ``nngp``, ``entk@0``), at the smallest label noise and the largest n_train: the share of the
   centred target's energy in the kernel's top 10 eigenmodes (its interval), against
   10/n_train, what a target unrelated to the kernel puts there on average (a random direction
   in R^n has an expected share k/n in any k-dimensional subspace). Then whether test accuracy
   rises with that share across the kernel runs (Pearson's r and its interval).
2. How do the linearizations compare with the network? Each linearization's test accuracy
   (Wilson interval) and its difference from the network's (Newcombe's interval), at label
   noise 0 and the largest n_train.

A verdict is drawn only from an interval that excludes the value compared with: the energy's
interval above or below 10/n_train, r's interval above or below 0, the accuracy difference's
interval above or below 0, each as the table prints it (:func:`ntkbench.study.cells.bounds`:
an r of [−0.44, −0.003] prints [−0.44, 0.00] and decides nothing). (The difference's own interval, not whether the two accuracies'
intervals overlap: two 95% intervals can overlap while their difference is clear of 0.)
Otherwise, or without an interval (one seed for an energy, fewer than 4 runs for r), the
finding says "the data cannot decide". Every number is the cell of the table the finding links
to (:mod:`ntkbench.study.cells`), character for character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ntkbench import format as fmt
from ntkbench.study import cells
from ntkbench.study.sections import ACCURACY, ENERGY
from ntkbench.study.stats import correlation

QUESTIONS = ("Does the kernel's feature space hold the target?", "How do the linearizations compare with the network?")
TOP = 10
"""The eigenmodes counted: the ``energy top 10`` column."""
UNDECIDED = "the data cannot decide"


@dataclass(frozen=True)
class Finding:
    """The answer to ``question`` for ``task``: ``text``, whose numbers are in the tables of the
    section ``link``."""

    task: str
    question: str
    text: str
    link: str


def listing(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _feature_space(t: str, top: Any) -> Finding:
    kern = top[(top.task == t) & top.e10.notna()]
    if kern.empty:
        return Finding(t, QUESTIONS[0], "No kernel run reports its target energy.", ENERGY)
    p0 = kern.p.min()
    start = kern[(kern.epoch == 0) & (kern.p == p0)]
    shares, verdicts = [], {"more": [], "less": [], UNDECIDED: []}
    shown = fmt.significant(TOP / start.n.max() if not start.empty else TOP / kern.n.max())
    baseline = float(shown)
    for v, g in start.groupby("variant", sort=False):
        cell = cells.fraction(g.e10)
        lo, hi = cells.bounds(cell) or (math.nan, math.nan)
        shares.append(f"{cell} for {v}")
        verdicts["more" if lo > baseline else "less" if hi < baseline else UNDECIDED].append(v)
    text = ""
    if shares:
        said = [f"more than that for {listing(verdicts['more'])}" if verdicts["more"] else "",
                f"less for {listing(verdicts['less'])}" if verdicts["less"] else "",
                f"{UNDECIDED} for {listing(verdicts[UNDECIDED])}" if verdicts[UNDECIDED] else ""]
        text = (f"At initialization and label noise {p0:g}, the share of the target's energy in the top {TOP} "
                f"eigenmodes is {listing(shares)}, against {shown} (10/n_train) for a target "
                f"unrelated to the kernel: {'; '.join(s for s in said if s)}. ")
    n = correlation(kern.e10, kern.test)[3]
    cell = cells.r(kern.e10, kern.test)
    lo, hi = cells.bounds(cell) or (math.nan, math.nan)
    if lo > 0 or hi < 0:
        text += f"Test accuracy {'rises' if lo > 0 else 'falls'} with that energy across the {n} kernel runs: r = {cell}."
    else:
        text += (f"Whether test accuracy rises with that energy, {UNDECIDED} from the {n} kernel runs"
                 + (f" (r = {cell})." if cell != fmt.MISSING else "."))
    return Finding(t, QUESTIONS[0], text, ENERGY)


def _linearizations(t: str, best: Any) -> Finding:
    tg = best[best.task == t]
    nn = tg[tg.role == "reference"]
    linear = tg[tg.role == "linearization"]
    if nn.empty or linear.empty:
        return Finding(t, QUESTIONS[1], "The study has no network with linearizations of it for this task.", ACCURACY)
    ref = nn.method.iloc[0]
    groups: dict[str, list[str]] = {"above": [], "below": [], UNDECIDED: []}
    for v, g in linear.groupby("variant", sort=False):
        diff = cells.points(g, nn)
        lo, hi = cells.bounds(diff) or (math.nan, math.nan)
        where = "above" if lo > 0 else "below" if hi < 0 else UNDECIDED
        groups[where].append(f"{v} ({cells.accuracy(g)} %, {diff} points)")
    said = [f"above it, {listing(groups['above'])}" if groups["above"] else "",
            f"below it, {listing(groups['below'])}" if groups["below"] else "",
            f"{UNDECIDED} (the difference's interval holds 0) for {listing(groups[UNDECIDED])}" if groups[UNDECIDED] else ""]
    text = (f"{ref} reaches {cells.accuracy(nn)} % test accuracy at n_train {fmt.integer(nn.n.iloc[0])}. "
            f"Its linearizations: {'; '.join(s for s in said if s)}.")
    return Finding(t, QUESTIONS[1], text, ACCURACY)


def findings(frame: Any) -> list[Finding]:
    """Two :class:`Finding` per task of the study table ``frame`` (the task, then ``teacher``)."""
    top = frame[frame.n == frame.n_max]
    clean = frame[frame.p == 0]
    best = clean[clean.n == clean.n_max]
    return [f for t in dict.fromkeys(frame.task) for f in (_feature_space(t, top), _linearizations(t, best))]
