"""The report's six sections: each states its question, answers it in sentences with numbers,
then shows a plot and tables whose every row lists the runs it comes from. Cells come from
:mod:`ntkbench.study.cells` (accuracies with Wilson intervals, other means with t-intervals).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ntkbench import format as fmt
from ntkbench.study import cells
from ntkbench.study.plots import Series, distance_plot, plot, styles
from ntkbench.study.stats import correlation

SECTIONS = (
    ("Accuracy by method", "How close does each linearization come to the trained network, and does the "
     "answer change with the epoch it is linearized at?"),
    ("Cost", "What does each method cost in fit and total wall-clock time?"),
    ("Target energy in the top eigenmodes", "Does the kernel's feature space hold the target, and does "
     "more target energy in the top eigenmodes mean higher test accuracy?"),
    ("Label noise: memorization vs generalization", "As label noise grows, which methods memorize the "
     "training labels and how much test accuracy do they lose?"),
    ("Kernel distance and linearization gap over training", "How far do the trained network's tangent "
     "kernel and weights move from initialization, and how far are the linearizations' test outputs "
     "from the trained network's?"),
    ("Learning curves", "How does test accuracy grow with n_train for each method?"),
)
ACCURACY, COST, ENERGY, NOISE, DISTANCE, CURVES = (h for h, _ in SECTIONS)


def anchor(heading: str) -> str:
    """The heading's anchor as GitHub makes it from a Markdown heading (the HTML uses the same):
    lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Section:
    heading: str
    question: str
    svg: str | None
    answers: list[str]
    tables: list[Table] = field(default_factory=list)
    note: str = ""


def run_ids(g: Any) -> str:
    """The first 8 characters of each run id, the runs column of every table."""
    return " ".join(r[:8] for r in g.run_id)


def _seeds(g: Any) -> str:
    return fmt.seeds(g.seed.nunique())


def _spread(g: Any) -> str:
    """The seeds' range of test accuracy, ``93.3–96.7``; :data:`~ntkbench.format.MISSING` for one seed."""
    return f"{fmt.percent(g.test.min())}–{fmt.percent(g.test.max())}" if g.seed.nunique() > 1 else fmt.MISSING


def _groups(frame: Any, keys: list[str]) -> list[tuple[tuple, Any]]:
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in frame.groupby(keys, sort=False)]


def _accuracy(best: Any, ref: str) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        nn = tg[tg.role == "reference"]
        for (v,), g in _groups(tg, ["variant"]):
            diff = cells.points(g, nn) if g.role.iloc[0] != "reference" and not nn.empty else fmt.MISSING
            rows.append([t, v, fmt.integer(g.n.iloc[0]), cells.accuracy(g), _spread(g), diff,
                         cells.accuracy(g, "train"), str(len(g)), run_ids(g)])
        means = tg.groupby("variant").test.mean()
        top = means.idxmax()
        text = (f"{t} (n_train {fmt.integer(tg.n.iloc[0])}, no label noise): the highest test accuracy is {top}'s, "
                f"{cells.accuracy(tg[tg.variant == top])} % ({_seeds(tg[tg.variant == top])})")
        if not nn.empty:
            text += f"; {ref} reaches {cells.accuracy(nn)} %"
            linear = [v for v in means.index if v in set(tg[tg.role == "linearization"].variant)]
            if linear:
                close = min(linear, key=lambda v: abs(means[v] - nn.test.mean()))
                text += f"; the linearization closest to it is {close}, {cells.points(tg[tg.variant == close], nn)} points"
        answers.append(text + ".")
    columns = ["task", "variant", "n_train", "test accuracy, %", "range over seeds, %",
               f"test accuracy − {ref}'s, points", "train accuracy, %", "seeds", "runs"]
    return Section(ACCURACY, SECTIONS[0][1], None, answers, [Table(columns, rows)],
                   "Label noise 0, the largest n_train of each task. Accuracies pool the seeds' test predictions, "
                   "with 95% Wilson intervals; differences have Newcombe's interval.")


def _cost(best: Any, ref: str) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        for (v,), g in _groups(tg, ["variant"]):
            rows.append([t, v, fmt.integer(g.n.iloc[0]), cells.seconds(g.fit), cells.seconds(g.total),
                         fmt.megabytes(g.peak.max()), str(len(g)), run_ids(g)])
        fit = tg.groupby("variant").fit.mean()
        lo, hi = fit.idxmin(), fit.idxmax()
        nn = tg[tg.role == "reference"]
        answers.append(f"{t}: fitting takes from {cells.seconds(tg[tg.variant == lo].fit)} ({lo}) to "
                       f"{cells.seconds(tg[tg.variant == hi].fit)} ({hi}), {_seeds(tg)}"
                       + (f"; {ref} takes {cells.seconds(nn.fit)}." if not nn.empty else "."))
    columns = ["task", "variant", "n_train", "fit time", "total time", "peak memory", "seeds", "runs"]
    return Section(COST, SECTIONS[1][1], None, answers, [Table(columns, rows)],
                   "Label noise 0, the largest n_train; total time is fit + test prediction; peak memory is what the "
                   "run added over the process's memory at its start, the maximum over seeds.")


def _energy(tasks: list[str], top: Any, style: dict) -> Section:
    kern = top[top.e10.notna()]
    panels = [(t, [Series(v, list(g.e10), list(100 * g.test), style[v], "none")
                   for (v,), g in _groups(kern[kern.task == t], ["variant"])]) for t in tasks if (kern.task == t).any()]
    svg = plot(panels, "target energy in the top 10 eigenmodes", "test accuracy, %", "energy",
               "Target energy in the top 10 eigenmodes against test accuracy, one point per run") if panels else None
    rows = [[t, v, f"{p:g}", cells.fraction(g.e1), cells.fraction(g.e10), cells.fraction(g.e100), cells.accuracy(g),
             str(len(g)), run_ids(g)] for (t, v, p), g in _groups(kern, ["task", "variant", "p"])]
    r_rows, answers = [], []
    for (t,), tg in _groups(kern, ["task"]):
        ps = sorted(tg.p.unique())
        for (v,), g in _groups(tg[tg.epoch == 0], ["variant"]):  # the kernels at initialization
            text = (f"{t}, {v}: the top 10 eigenmodes hold {cells.fraction(g[g.p == ps[0]].e10)} of the centred "
                    f"target energy at label noise {ps[0]:g} ({_seeds(g[g.p == ps[0]])})")
            if len(ps) > 1:
                text += f" and {cells.fraction(g[g.p == ps[-1]].e10)} at label noise {ps[-1]:g}"
            answers.append(text + ".")
        n = correlation(tg.e10, tg.test)[3]
        r_rows.append([t, str(n), cells.r(tg.e10, tg.test)])
        if r_rows[-1][2] != fmt.MISSING:
            answers.append(f"{t}: across {n} kernel runs (every kernel method and label noise), the correlation "
                           f"of top-10 target energy with test accuracy is r = {r_rows[-1][2]}.")
    columns = ["task", "variant", "label noise", "energy top 1", "energy top 10", "energy top 100",
               "test accuracy, %", "seeds", "runs"]
    tables = [Table(columns, rows), Table(["task", "kernel runs", "r of top-10 energy with test accuracy"], r_rows)]
    return Section(ENERGY, SECTIONS[2][1], svg, answers, tables,
                   "Kernel methods at the largest n_train, every label noise; the interval of r is Fisher's z "
                   "(none below 4 runs).")


def _noise(tasks: list[str], top: Any, style: dict, ref: str) -> Section:
    def curve(g: Any, col: str) -> tuple[list, list]:
        means = g.groupby("p", sort=True)[col].mean()
        return list(means.index), list(100 * means)

    panels = [(t, [s for (v,), g in _groups(top[top.task == t], ["variant"])
                   for s in (Series(v, *curve(g, "test"), style[v]), Series("", *curve(g, "train"), style[v], "--"))])
              for t in tasks]
    svg = plot(panels, "label noise p", "accuracy, % (solid: test, dashed: train)", "noise",
               "Train and test accuracy against label noise")
    ordered = top.sort_values(["task_key", "vkey", "p"], kind="stable")
    rows = [[t, v, f"{p:g}", cells.accuracy(g, "train"), cells.accuracy(g), str(len(g)), run_ids(g)]
            for (t, v, p), g in _groups(ordered, ["task", "variant", "p"])]
    answers = []
    if ordered.p.nunique() < 2:
        answers.append(f"This study ran at label noise {ordered.p.iloc[0]:g} only, so it has no answer here; the "
                       "table gives the train and test accuracies the other sections compare.")
    for (t,), tg in _groups(ordered, ["task"]):
        ps = sorted(tg.p.unique())
        if len(ps) < 2:
            continue
        noisy, clean = tg[tg.p == ps[-1]], tg[tg.p == ps[0]]
        v = noisy.groupby("variant").train.mean().idxmax()
        best = noisy[noisy.variant == v]
        text = (f"{t} at label noise {ps[-1]:g}: {v} fits the most training labels, {cells.accuracy(best, 'train')} %, "
                f"and tests at {cells.accuracy(best)} % ({_seeds(best)})")
        if (tg.role == "reference").any():
            text += (f"; {ref}'s test accuracy goes from {cells.accuracy(clean[clean.role == 'reference'])} % at label "
                     f"noise {ps[0]:g} to {cells.accuracy(noisy[noisy.role == 'reference'])} %")
        answers.append(text + ".")
    columns = ["task", "variant", "label noise", "train accuracy, %", "test accuracy, %", "seeds", "runs"]
    return Section(NOISE, SECTIONS[3][1], svg, answers, [Table(columns, rows)], "The largest n_train of each task.")


def _probe(runs: Any) -> str:
    """How many inputs the tangent kernel was tracked on, from the runs' own options: the first
    ``probe_size`` training inputs, or all of them when there are fewer."""
    sizes = sorted({int(min(p, n)) for p, n in zip(runs.probe, runs.n_fit) if math.isfinite(p)})
    return " or ".join(map(str, sizes)) or fmt.MISSING


def _distance(top: Any, uri: str | None, ref: str) -> Section:
    trained = top[top.role != "other"]
    ordered = trained.sort_values(["task_key", "p", "vkey"], kind="stable")
    positive = (0.0, math.inf)
    rows = [[t, f"{p:g}", v, cells.mean(g.kdist, positive), cells.mean(g.wdist, positive), cells.mean(g.gap, positive),
             cells.accuracy(g, "agree") if g.agree.notna().any() else fmt.MISSING, str(len(g)), run_ids(g)]
            for (t, p, v), g in _groups(ordered, ["task", "p", "variant"])]
    answers = []
    for (t,), tg in _groups(ordered[ordered.p == ordered.p.min()], ["task"]):
        nn = tg[tg.role == "reference"]
        parts = []
        if nn.kdist.notna().any():
            parts.append(f"{ref}'s tangent kernel on the probe moves {cells.mean(nn.kdist, positive)} (relative Frobenius "
                         f"distance) and its weights {cells.mean(nn.wdist, positive)} from initialization ({_seeds(nn)})")
        gaps = tg[tg.gap.notna()].groupby("variant").gap.mean()
        if len(gaps):
            lo, hi = tg[tg.variant == gaps.idxmin()], tg[tg.variant == gaps.idxmax()]
            parts.append(f"the RMS gap between test outputs and {ref}'s is smallest for {gaps.idxmin()}, "
                         f"{cells.mean(lo.gap, positive)} ({cells.accuracy(lo, 'agree')} % labels agree), and largest "
                         f"for {gaps.idxmax()}, {cells.mean(hi.gap, positive)} ({cells.accuracy(hi, 'agree')} % agree)")
        if parts:
            answers.append(f"{t} at label noise {tg.p.iloc[0]:g}: " + "; ".join(parts) + ".")
    columns = ["task", "label noise", "variant", "final kernel distance", "final weight distance",
               "linearization gap (RMS)", f"label agreement with {ref}, %", "seeds", "runs"]
    reference = trained[trained.role == "reference"]
    note = (f"{ref} and its linearizations at the largest n_train. Curves: {ref}'s step history (MLflow "
            f"get_metric_history), mean over seeds. Kernel distance is ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F on a probe of the first "
            f"{_probe(reference)} training inputs (Fort et al. 2020), weight distance ‖θ_t − θ_0‖/‖θ_0‖, the gap "
            f"√mean (f_lin − f_nn)² over test inputs and outputs, against the {ref} run of the same seed and data.")
    return Section(DISTANCE, SECTIONS[4][1], distance_plot(reference, uri), answers, [Table(columns, rows)], note)


def _curves(tasks: list[str], clean: Any, style: dict) -> Section:
    def series(v: str, g: Any) -> Series:
        ns = sorted(g.n.unique())
        bounds = [cells.accuracy_bounds(g[g.n == n]) for n in ns]
        ys = [100 * p for p, _, _ in bounds]
        err = [[y - 100 * lo for y, (_, lo, _) in zip(ys, bounds)], [100 * hi - y for y, (_, _, hi) in zip(ys, bounds)]]
        return Series(v, ns, ys, style[v], "-", err)

    panels = [(t, [series(v, g) for (v,), g in _groups(clean[clean.task == t], ["variant"])]) for t in tasks]
    svg = plot(panels, "n_train", "test accuracy, %", "curves", "Learning curves: test accuracy against n_train",
               logx=True) if clean.n.nunique() > 1 else None
    rows = [[t, v, fmt.integer(n), cells.accuracy(g), str(len(g)), run_ids(g)]
            for (t, v, n), g in _groups(clean, ["task", "variant", "n"])]
    answers = []
    for (t,), tg in _groups(clean, ["task"]):
        n0, n1 = tg.n.min(), tg.n.max()
        if n0 == n1:
            continue
        gains = {v: g[g.n == n1].test.mean() - g[g.n == n0].test.mean() for (v,), g in _groups(tg, ["variant"])
                 if (g.n == n0).any() and (g.n == n1).any()}
        if gains:
            lo, hi = min(gains, key=gains.get), max(gains, key=gains.get)

            def gain(v: str) -> str:
                g = tg[tg.variant == v]
                return cells.points(g[g.n == n1], g[g.n == n0])

            answers.append(f"{t}: from n_train {fmt.integer(n0)} to {fmt.integer(n1)}, test accuracy gains the most "
                           f"for {hi}, {gain(hi)} points, and the least for {lo}, {gain(lo)} points.")
    columns = ["task", "variant", "n_train", "test accuracy, %", "seeds", "runs"]
    return Section(CURVES, SECTIONS[5][1], svg, answers, [Table(columns, rows)],
                   "Label noise 0; error bars on the plot are the 95% Wilson intervals of the table.")


def sections(frame: Any, uri: str | None) -> list[Section]:
    """One :class:`Section` for each of :data:`SECTIONS`, from the study table ``frame`` of
    :func:`ntkbench.study.load.load`."""
    ref = next(iter(frame[frame.role == "reference"].method), "the linearized network")
    style = styles(frame)
    tasks = list(dict.fromkeys(frame.task))
    clean = frame[frame.p == 0]
    top = frame[frame.n == frame.n_max]
    best = clean[clean.n == clean.n_max]
    return [_accuracy(best, ref), _cost(best, ref), _energy(tasks, top, style), _noise(tasks, top, style, ref),
            _distance(top, uri, ref), _curves(tasks, clean, style)]
