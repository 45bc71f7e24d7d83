"""The report's six sections: each answers its question in sentences, then a table and a plot,
from the table of :func:`ntkbench.study.load.load`.

Comparisons are with the study's linearized network (``ref``, the runs of role
``reference``, e.g. ``nn``) and its linearizations (role ``linearization``); no method is named
here. Every number is a mean over seeds with its 95% Student-t interval.
"""

from __future__ import annotations

import math
from typing import Any

from ntkbench.leaderboard.plots import _MARKERS, _PALETTE
from ntkbench.study.plots import distance_plot, plot
from ntkbench.study.stats import correlation, interval, paired

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
Section = tuple[str | None, list[str], list[str], list[list[str]], str]  # svg, answers, columns, rows, note


def _ci(values: Any, scale: float = 1.0, fmt: str = ".3g") -> str:
    """``mean [lo, hi]`` (95% interval), ``mean`` alone for one value, ``–`` for none."""
    mean, lo, hi, n = interval(values)
    if n == 0:
        return "–"
    if n == 1:
        return format(scale * mean, fmt)
    return f"{scale * mean:{fmt}} [{scale * lo:{fmt}}, {scale * hi:{fmt}}]"


def _pct(values: Any) -> str:
    return _ci(values, 100, ".1f")


def _runs(g: Any) -> str:
    return " ".join(r[:8] for r in g.run_id)


def _seeds(g: Any) -> str:
    n = g.seed.nunique()
    return f"{n} seed{'s' * (n != 1)}"


def _groups(frame: Any, keys: list[str]) -> list[tuple[tuple, Any]]:
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in frame.groupby(keys, sort=False)]


def _accuracy(best: Any, ref: str) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        nn = tg[tg.role == "reference"]
        for (v,), g in _groups(tg, ["variant"]):
            diff = _ci(paired(g, nn, "test"), 100, "+.1f") if g.role.iloc[0] != "reference" and not nn.empty else "–"
            rows.append([t, v, str(g.n.iloc[0]), _pct(g.test), diff, _pct(g.train), str(len(g)), _runs(g)])
        means = tg.groupby("variant").test.mean()
        top = means.idxmax()
        text = (f"{t} (n_train {tg.n.iloc[0]}, no label noise): the highest test accuracy is {top}'s, "
                f"{_pct(tg[tg.variant == top].test)} % ({_seeds(tg[tg.variant == top])})")
        if not nn.empty:
            text += f"; {ref} reaches {_pct(nn.test)} %"
            linear = [v for v in means.index if v in set(tg[tg.role == "linearization"].variant)]
            if linear:
                gaps = {v: abs(means[v] - nn.test.mean()) for v in linear}
                close = min(gaps, key=gaps.get)
                text += (f"; the linearization closest to it is {close}, "
                         f"{_ci(paired(tg[tg.variant == close], nn, 'test'), 100, '+.1f')} points")
        answers.append(text + ".")
    columns = ["task", "variant", "n_train", "test accuracy, %", f"test accuracy − {ref}'s, points",
               "train accuracy, %", "seeds", "runs"]
    return None, answers, columns, rows, "Label noise 0, the largest n_train of each task; differences are paired by seed."


def _cost(best: Any, ref: str) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        for (v,), g in _groups(tg, ["variant"]):
            rows.append([t, v, str(g.n.iloc[0]), _ci(g.fit), _ci(g.total), f"{g.peak.max():.0f}", str(len(g)), _runs(g)])
        fit = tg.groupby("variant").fit.mean()
        lo, hi = fit.idxmin(), fit.idxmax()
        nn = tg[tg.role == "reference"]
        answers.append(f"{t}: fitting takes from {_ci(tg[tg.variant == lo].fit)} s ({lo}) to "
                       f"{_ci(tg[tg.variant == hi].fit)} s ({hi}), {_seeds(tg)}"
                       + (f"; {ref} takes {_ci(nn.fit)} s." if not nn.empty else "."))
    columns = ["task", "variant", "n_train", "fit time, s", "total time, s", "peak memory, MB", "seeds", "runs"]
    return None, answers, columns, rows, ("Label noise 0, the largest n_train; total time is fit + test prediction; "
                                          "peak memory is what the run added over the process's memory at its "
                                          "start, the maximum over seeds.")


def _energy(tasks: list[str], top: Any, colors: dict[str, str]) -> Section:
    kern = top[top.e10.notna()]
    markers = {t: _MARKERS[i % len(_MARKERS)] for i, t in enumerate(tasks)}
    series = [(f"{v} · {t}", list(g.e10), list(100 * g.test), None, markers[t], colors[v])
              for (t, v), g in _groups(kern, ["task", "variant"])]
    svg = plot([("kernel methods", series)], "target energy in the top 10 eigenmodes", "test accuracy, %", "energy",
               "Target energy in the top 10 eigenmodes against test accuracy") if series else None
    rows = [[t, v, f"{p:g}", _ci(g.e1), _ci(g.e10), _ci(g.e100), _pct(g.test), str(len(g)), _runs(g)]
            for (t, v, p), g in _groups(kern, ["task", "variant", "p"])]
    answers = []
    for (t,), tg in _groups(kern, ["task"]):
        r, lo, hi, n = correlation(tg.e10, tg.test)
        ps = sorted(tg.p.unique())
        for (v,), g in _groups(tg[tg.epoch == 0], ["variant"]):  # the kernels at initialization
            text = (f"{t}, {v}: the top 10 eigenmodes hold {_ci(g[g.p == ps[0]].e10)} of the centred target "
                    f"energy at label noise {ps[0]:g} ({_seeds(g[g.p == ps[0]])})")
            if len(ps) > 1:
                text += f" and {_ci(g[g.p == ps[-1]].e10)} at label noise {ps[-1]:g}"
            answers.append(text + ".")
        if math.isfinite(r):
            bounds = f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else ""
            answers.append(f"{t}: across {n} kernel runs (every kernel method and label noise), the correlation "
                           f"of top-10 target energy with test accuracy is r = {r:.2f}{bounds}.")
    columns = ["task", "variant", "label noise", "energy top 1", "energy top 10", "energy top 100",
               "test accuracy, %", "seeds", "runs"]
    return svg, answers, columns, rows, "Kernel methods at the largest n_train, every label noise; interval of r from Fisher's z."


def _noise(tasks: list[str], top: Any, colors: dict[str, str], ref: str) -> Section:
    def curve(g: Any, col: str) -> tuple[list, list]:
        means = g.groupby("p", sort=True)[col].mean()
        return list(means.index), list(100 * means)

    panels = [(t, [s for (v,), g in _groups(top[top.task == t], ["variant"])
                   for s in ((f"{v} test", *curve(g, "test"), None, "-o", colors[v]),
                             (f"{v} train", *curve(g, "train"), None, "--x", colors[v]))])
              for t in tasks]
    svg = plot(panels, "label noise p", "accuracy, % (solid: test, dashed: train)", "noise",
               "Train and test accuracy against label noise")
    ordered = top.sort_values(["task_key", "vkey", "p"], kind="stable")
    rows = [[t, v, f"{p:g}", _pct(g.train), _pct(g.test), str(len(g)), _runs(g)]
            for (t, v, p), g in _groups(ordered, ["task", "variant", "p"])]
    answers = []
    for (t,), tg in _groups(ordered, ["task"]):
        ps = sorted(tg.p.unique())
        if len(ps) < 2:
            continue
        noisy, clean = tg[tg.p == ps[-1]], tg[tg.p == ps[0]]
        fits = noisy.groupby("variant").train.mean()
        v = fits.idxmax()
        text = (f"{t} at label noise {ps[-1]:g}: {v} fits the most training labels, {_pct(noisy[noisy.variant == v].train)} %, "
                f"and tests at {_pct(noisy[noisy.variant == v].test)} % ({_seeds(noisy[noisy.variant == v])})")
        if (tg.role == "reference").any():
            text += (f"; {ref}'s test accuracy goes from {_pct(clean[clean.role == 'reference'].test)} % at label noise "
                     f"{ps[0]:g} to {_pct(noisy[noisy.role == 'reference'].test)} %")
        answers.append(text + ".")
    columns = ["task", "variant", "label noise", "train accuracy, %", "test accuracy, %", "seeds", "runs"]
    return svg, answers, columns, rows, "The largest n_train of each task."


def _distance(top: Any, uri: str | None, ref: str) -> Section:
    trained = top[top.role != "other"]
    ordered = trained.sort_values(["task_key", "p", "vkey"], kind="stable")
    rows = [[t, f"{p:g}", v, _ci(g.kdist), _ci(g.wdist), _ci(g.gap), _pct(g.agree), str(len(g)), _runs(g)]
            for (t, p, v), g in _groups(ordered, ["task", "p", "variant"])]
    answers = []
    for (t,), tg in _groups(ordered[ordered.p == ordered.p.min()], ["task"]):
        nn = tg[tg.role == "reference"]
        parts = []
        if nn.kdist.notna().any():
            parts.append(f"{ref}'s tangent kernel on the probe moves {_ci(nn.kdist)} (relative Frobenius distance) "
                         f"and its weights {_ci(nn.wdist)} from initialization ({_seeds(nn)})")
        gaps = tg[tg.gap.notna()].groupby("variant").gap.mean()
        if len(gaps):
            lo, hi = gaps.idxmin(), gaps.idxmax()
            parts.append(f"the RMS gap between test outputs and {ref}'s is smallest for {lo}, "
                         f"{_ci(tg[tg.variant == lo].gap)} ({_pct(tg[tg.variant == lo].agree)} % labels agree), "
                         f"and largest for {hi}, {_ci(tg[tg.variant == hi].gap)} "
                         f"({_pct(tg[tg.variant == hi].agree)} % agree)")
        if parts:
            answers.append(f"{t} at label noise {tg.p.iloc[0]:g}: " + "; ".join(parts) + ".")
    columns = ["task", "label noise", "variant", "final kernel distance", "final weight distance",
               "linearization gap (RMS)", f"label agreement with {ref}, %", "seeds", "runs"]
    note = (f"{ref} and its linearizations at the largest n_train. Curves: {ref}'s step history (MLflow "
            "get_metric_history), mean over seeds. Kernel distance is ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F on a 64-input probe "
            "(Fort et al. 2020), weight distance ‖θ_t − θ_0‖/‖θ_0‖, the gap √mean (f_lin − f_nn)² over test inputs "
            f"and outputs, against the {ref} run of the same seed and data.")
    return distance_plot(trained[trained.role == "reference"], uri), answers, columns, rows, note


def _curves(tasks: list[str], clean: Any, colors: dict[str, str]) -> Section:
    panels = [(t, [(v, list(a.index), list(100 * a["mean"]), list(100 * a["std"].fillna(0)), "-o", colors[v])
                   for (v,), g in _groups(clean[clean.task == t], ["variant"])
                   for a in [g.groupby("n", sort=True).test.agg(["mean", "std"])]]) for t in tasks]
    svg = plot(panels, "n_train", "test accuracy, %", "curves", "Learning curves: test accuracy against n_train",
               logx=True) if clean.n.nunique() > 1 else None
    rows = [[t, v, str(n), _pct(g.test), str(len(g)), _runs(g)] for (t, v, n), g in _groups(clean, ["task", "variant", "n"])]
    answers = []
    for (t,), tg in _groups(clean, ["task"]):
        n0, n1 = tg.n.min(), tg.n.max()
        if n0 == n1:
            continue
        gains = {v: paired(g[g.n == n1], g[g.n == n0], "test") for (v,), g in _groups(tg, ["variant"])}
        gains = {v: d for v, d in gains.items() if d}
        if gains:
            mean = {v: sum(d) / len(d) for v, d in gains.items()}
            lo, hi = min(mean, key=mean.get), max(mean, key=mean.get)
            answers.append(f"{t}: from n_train {n0} to {n1}, test accuracy gains the most for {hi}, "
                           f"{_ci(gains[hi], 100, '+.1f')} points, and the least for {lo}, "
                           f"{_ci(gains[lo], 100, '+.1f')} points ({len(gains[hi])} seeds, paired).")
    columns = ["task", "variant", "n_train", "test accuracy, %", "seeds", "runs"]
    return svg, answers, columns, rows, "Label noise 0; error bars on the plot are the seeds' standard deviation."


def sections(frame: Any, uri: str | None) -> list[tuple[str, str, str | None, list[str], list[str], list[list[str]], str]]:
    """(heading, question, svg, answers, columns, rows, note) for each of :data:`SECTIONS`, from
    the study table ``frame`` of :func:`ntkbench.study.load.load`."""
    ref = next(iter(frame[frame.role == "reference"].method), "the linearized network")
    colors = {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(dict.fromkeys(frame.sort_values("vkey").variant))}
    tasks = list(dict.fromkeys(frame.task))
    clean = frame[frame.p == 0]
    top = frame[frame.n == frame.n_max]
    best = clean[clean.n == clean.n_max]
    out = [_accuracy(best, ref), _cost(best, ref), _energy(tasks, top, colors), _noise(tasks, top, colors, ref),
           _distance(top, uri, ref), _curves(tasks, clean, colors)]
    return [(h, q, *s) for (h, q), s in zip(SECTIONS, out)]
