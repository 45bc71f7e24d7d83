"""The study: does the kernel's feature space hold the target, and how do linearizations compare
with the trained network?

:data:`STUDY_GRID` declares the runs (variants × label noise × n_train × seeds, on the given task
and on ``teacher``, whose labels a random network makes realizable); :func:`run_study` runs them
through :func:`ntkbench.runner.run`; :func:`render_report` reads them back from MLflow and writes
``study-<task>.html`` (static, inline SVG, every string escaped) and ``study-<task>.md``.

Every run of one :func:`run_study` call carries the tags ``ntkbench_study`` (the task) and
``ntkbench_study_id`` (``<task>-<UTC time>``); the report reads the latest study of the task
unless given an id, so ordinary runs and earlier studies never mix into it. It finds a variant
from the params every run logs (``method``, ``method.at_epoch``, ``method.at_epoch``,
``method.epochs``, ``task.label_noise``). Label noise is swept at the largest n_train only; the
n_train sweep runs at ``label_noise`` 0. ``nn`` runs first, and its test outputs are shared
with the ``taylor``/``entk`` runs of the same data, which log their linearization gap.

Every number in the report is a mean over seeds with its seed count and a 95% Student-t
interval (none for one seed), and each table row lists the ids of the runs it comes from.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ntkbench.leaderboard.plots import _MARKERS, _PALETTE, _new_figure, _styled, _text, _to_svg
from ntkbench.leaderboard.render import escape_markdown
from ntkbench.record import RunRecord

__all__ = ["Variant", "StudyGrid", "make_grid", "STUDY_GRID", "QUICK_GRID", "run_study", "render_report", "SECTIONS"]

Options = tuple[tuple[str, Any], ...]
TRAINED = ("nn", "taylor", "entk")
_AT = {"taylor": "at_epoch", "entk": "at_epoch"}
_ORDER = ("nn", "taylor", "entk", "ntk", "nngp")


@dataclass(frozen=True)
class Variant:
    """One column of the study: a method with its options, e.g. ``taylor@5``."""

    label: str
    method: str
    options: Options = ()


@dataclass(frozen=True)
class StudyGrid:
    """The declared grid. ``task_options``/``teacher_options`` are task options without the
    ``task.`` prefix (``teacher`` gets ``arch`` = the study's arch unless given)."""

    variants: tuple[Variant, ...]
    label_noise: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    n_trains: tuple[int, ...] = (100, 200, 400)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    diagnostics_every: int = 2
    teacher: bool = True
    task_options: Options = ()
    teacher_options: Options = ()


def _label(method: str, k: int, epochs: int) -> str:
    return f"{method}@end" if k == epochs else f"{method}@{k}"


def make_grid(epochs: int = 40, at_epochs: tuple[int, ...] = (0, 1, 5), **fields: Any) -> StudyGrid:
    """nn, ntk, nngp, and taylor/entk linearized at each of ``at_epochs`` below ``epochs`` and at
    the end of nn training (``epochs``); other :class:`StudyGrid` fields pass through."""
    ks = sorted({k for k in at_epochs if k < epochs} | {epochs})
    linearized = tuple(Variant(_label(m, k, epochs), m, ((_AT[m], k),)) for m in ("taylor", "entk") for k in ks)
    return StudyGrid((Variant("nn", "nn"), *linearized, Variant("ntk", "ntk"), Variant("nngp", "nngp")),
                     epochs=epochs, **fields)


STUDY_GRID = make_grid()
QUICK_GRID = make_grid(epochs=5, label_noise=(0.0, 0.5), n_trains=(100,), seeds=(0,), diagnostics_every=1)


def _task_options(name: str, task: str, arch: str, grid: StudyGrid) -> dict[str, Any]:
    if name == "teacher" and task != "teacher":
        return {"arch": arch, **dict(grid.teacher_options)}
    return dict(grid.task_options)


def run_study(task: str, arch: str = "mlp", arch_options: dict[str, Any] | None = None, quick: bool = False,
              tracking_uri: str | None = None, grid: StudyGrid | None = None, device: str = "auto",
              tracking: str = "mlflow", outbox: str | None = None) -> list[RunRecord]:
    """Run ``grid`` (default :data:`STUDY_GRID`, or :data:`QUICK_GRID` with ``quick``) on ``task``
    and ``teacher``: one :func:`ntkbench.runner.run` per (task, variant, label noise), all tagged
    with one study id. n_train values are capped to the task's training set size. ``tracking``
    and ``outbox`` are the runner's."""
    from ntkbench import runner
    from ntkbench import tasks as task_lib

    grid = grid or (QUICK_GRID if quick else STUDY_GRID)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    tags = {"ntkbench_study": task, "ntkbench_study_id": f"{task}-{stamp}"}
    nn_outputs: dict[tuple, Any] = {}
    names = (task, "teacher") if grid.teacher and task != "teacher" else (task,)
    results: list[RunRecord] = []
    for name in names:
        topts = _task_options(name, task, arch, grid)
        size = len(task_lib.get(name, **{k: v for k, v in topts.items() if k != "n_train"}).train[1])
        n_trains = tuple(sorted({min(n, size) for n in grid.n_trains}))
        for variant in grid.variants:
            m = variant.method
            options = {**{f"task.{k}": v for k, v in topts.items()},
                       **{f"arch.{k}": v for k, v in (arch_options or {}).items()},
                       **({f"{m}.epochs": grid.epochs, f"{m}.diagnostics_every": grid.diagnostics_every}
                          if m in TRAINED else {}),
                       **{f"{m}.{k}": v for k, v in variant.options}}
            for p in grid.label_noise:
                results += runner.run(task=name, method=m, arch=arch, seeds=grid.seeds, device=device,
                                      options={**options, "task.label_noise": p}, tracking_uri=tracking_uri,
                                      n_trains=n_trains if p == 0 else n_trains[-1:], tags=tags,
                                      nn_outputs=nn_outputs, tracking=tracking, outbox=outbox)
    return results


# ---------------------------------------------------------------- report
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
_COLS = {"test_accuracy": "test", "train_accuracy": "train", "time_fit_s": "fit", "time_total_s": "total",
         "peak_memory_mb": "peak", "kernel_energy_top1": "e1", "kernel_energy_top10": "e10",
         "kernel_energy_top100": "e100", "kernel_distance": "kdist", "weight_distance": "wdist",
         "linearization_gap_rms": "gap", "linearization_label_agreement": "agree"}
STUDY_TAG, STUDY_ID_TAG = "ntkbench_study", "ntkbench_study_id"


def _variant(row: Any) -> str:
    m = row["params.method"]
    if m not in _AT:
        return m
    return _label(m, int(row[f"params.method.{_AT[m]}"]), int(row["params.method.epochs"]))


def _variant_key(label: str) -> tuple[int, float, str]:
    m, _, k = label.partition("@")
    return (_ORDER.index(m) if m in _ORDER else len(_ORDER), math.inf if k == "end" else float(k or 0), label)


def _load(task: str, uri: str | None, study_id: str | None = None):  # -> (pandas.DataFrame, str | None)
    """One row per FINISHED run of the study ``study_id`` (default: the latest of ``task``),
    sorted, with short column names; and the study id."""
    import pandas as pd

    from ntkbench.tracking import runs_frame

    frame = runs_frame(uri)
    tag = f"tags.{STUDY_ID_TAG}"
    if frame.empty or tag not in frame:
        return pd.DataFrame(), study_id
    frame = frame[frame[f"tags.{STUDY_TAG}"] == task]
    if study_id is None and frame[tag].notna().any():
        study_id = max(frame[tag].dropna())  # ids are <task>-<UTC time>: the latest sorts last
    frame = frame[frame[tag] == study_id]
    if frame.empty:
        return pd.DataFrame(), study_id
    out = pd.DataFrame({"task": frame["params.task"], "variant": frame.apply(_variant, axis=1),
                        "n": frame["params.n_train"].astype(int), "p": frame["params.task.label_noise"].astype(float),
                        "seed": frame["params.seed"].astype(int), "run_id": frame["run_id"]})
    for metric, col in _COLS.items():
        out[col] = frame[f"metrics.{metric}"].astype(float) if f"metrics.{metric}" in frame else math.nan
    out["task_key"] = (out.task != task).astype(int)
    out["vkey"] = out.variant.map(_variant_key)
    out["n_max"] = out.groupby("task").n.transform("max")
    return out.sort_values(["task_key", "vkey", "n", "p", "seed", "run_id"]).reset_index(drop=True), study_id


def interval(values: Any) -> tuple[float, float, float, int]:
    """Mean, the 95% Student-t interval of the mean (NaN bounds for fewer than two values), and
    the count, over the finite ``values``."""
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


def correlation(x: Any, y: Any) -> tuple[float, float, float, int]:
    """Pearson's r of the finite pairs with its 95% interval from Fisher's z (NaN bounds below
    four pairs), and the number of pairs."""
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


def _runs(g: Any) -> str:
    return " ".join(r[:8] for r in g.run_id)


def _groups(frame, keys: list[str]):
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in frame.groupby(keys, sort=False)]


def _paired(g: Any, ref: Any, col: str) -> list[float]:
    """Per-seed differences ``g[col] − ref[col]`` over the seeds both have."""
    a, b = g.set_index("seed")[col], ref.set_index("seed")[col]
    common = sorted(set(a.index) & set(b.index))
    return [float(a[s] - b[s]) for s in common]


def _seeds(g: Any) -> str:
    n = g.seed.nunique()
    return f"{n} seed{'s' * (n != 1)}"


@_styled
def _plot(panels: list[tuple[str, list[tuple]]], xlabel: str, ylabel: str, key: str, title: str,
          logx: bool = False) -> str:
    """Panels side by side; each series is (label, xs, ys, yerr or None, fmt, color)."""
    fig = _new_figure(3.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (name, series) in zip(axes, panels):
        for label, xs, ys, err, fmt, color in series:
            ax.errorbar(xs, ys, yerr=err, fmt=fmt, color=color, capsize=2, markersize=4, label=_text(label))
        if logx:
            ax.set_xscale("log")
        ax.set_title(_text(name), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=6, loc="best", frameon=False)
    return _to_svg(fig, key, title)


Section = tuple[str | None, list[str], list[str], list[list[str]], str]  # svg, answers, columns, rows, note


def _accuracy(frame, best) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        nn = tg[tg.variant == "nn"]
        for (v,), g in _groups(tg, ["variant"]):
            diff = _ci(_paired(g, nn, "test"), 100, "+.1f") if v != "nn" and not nn.empty else "–"
            rows.append([t, v, str(g.n.iloc[0]), _pct(g.test), diff, _pct(g.train), str(len(g)), _runs(g)])
        means = tg.groupby("variant").test.mean()
        top = means.idxmax()
        text = (f"{t} (n_train {tg.n.iloc[0]}, no label noise): the highest test accuracy is {top}'s, "
                f"{_pct(tg[tg.variant == top].test)} % ({_seeds(tg[tg.variant == top])})")
        linear = [v for v in means.index if v.partition("@")[0] in _AT and not nn.empty]
        if not nn.empty:
            text += f"; nn reaches {_pct(nn.test)} %"
        if linear:
            gaps = {v: abs(means[v] - means["nn"]) for v in linear}
            close = min(gaps, key=gaps.get)
            text += (f"; the linearization closest to it is {close}, "
                     f"{_ci(_paired(tg[tg.variant == close], nn, 'test'), 100, '+.1f')} points")
        answers.append(text + ".")
    columns = ["task", "variant", "n_train", "test accuracy, %", "test accuracy − nn's, points",
               "train accuracy, %", "seeds", "runs"]
    return None, answers, columns, rows, "Label noise 0, the largest n_train of each task; differences are paired by seed."


def _cost(best) -> Section:
    answers, rows = [], []
    for (t,), tg in _groups(best, ["task"]):
        for (v,), g in _groups(tg, ["variant"]):
            rows.append([t, v, str(g.n.iloc[0]), _ci(g.fit), _ci(g.total), f"{g.peak.max():.0f}", str(len(g)), _runs(g)])
        fit = tg.groupby("variant").fit.mean()
        lo, hi = fit.idxmin(), fit.idxmax()
        answers.append(f"{t}: fitting takes from {_ci(tg[tg.variant == lo].fit)} s ({lo}) to "
                       f"{_ci(tg[tg.variant == hi].fit)} s ({hi}), {_seeds(tg)}"
                       + (f"; nn takes {_ci(tg[tg.variant == 'nn'].fit)} s." if "nn" in fit else "."))
    columns = ["task", "variant", "n_train", "fit time, s", "total time, s", "peak memory, MB", "seeds", "runs"]
    return None, answers, columns, rows, "Label noise 0, the largest n_train; peak memory is the maximum over seeds."


def _energy(tasks, top, colors) -> Section:
    kern = top[top.e10.notna()]
    markers = {t: _MARKERS[i % len(_MARKERS)] for i, t in enumerate(tasks)}
    series = [(f"{v} · {t}", list(g.e10), list(100 * g.test), None, markers[t], colors[v])
              for (t, v), g in _groups(kern, ["task", "variant"])]
    svg = _plot([("kernel methods", series)], "target energy in the top 10 eigenmodes", "test accuracy, %", "energy",
                "Target energy in the top 10 eigenmodes against test accuracy") if series else None
    rows = [[t, v, f"{p:g}", _ci(g.e1), _ci(g.e10), _ci(g.e100), _pct(g.test), str(len(g)), _runs(g)]
            for (t, v, p), g in _groups(kern, ["task", "variant", "p"])]
    answers = []
    for (t,), tg in _groups(kern, ["task"]):
        r, lo, hi, n = correlation(tg.e10, tg.test)
        ps = sorted(tg.p.unique())
        for (v,), g in _groups(tg[tg.variant.isin(["ntk", "entk@0"])], ["variant"]):
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


def _noise(tasks, top, colors) -> Section:
    def curve(g, col):
        means = g.groupby("p", sort=True)[col].mean()
        return list(means.index), list(100 * means)

    panels = [(t, [s for (v,), g in _groups(top[top.task == t], ["variant"])
                   for s in ((f"{v} test", *curve(g, "test"), None, "-o", colors[v]),
                             (f"{v} train", *curve(g, "train"), None, "--x", colors[v]))])
              for t in tasks]
    svg = _plot(panels, "label noise p", "accuracy, % (solid: test, dashed: train)", "noise",
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
        if "nn" in set(tg.variant):
            text += (f"; nn's test accuracy goes from {_pct(clean[clean.variant == 'nn'].test)} % at label noise "
                     f"{ps[0]:g} to {_pct(noisy[noisy.variant == 'nn'].test)} %")
        answers.append(text + ".")
    columns = ["task", "variant", "label noise", "train accuracy, %", "test accuracy, %", "seeds", "runs"]
    return svg, answers, columns, rows, "The largest n_train of each task."


def _distance(top, uri) -> Section:
    trained = top[top.variant.map(lambda v: v.partition("@")[0] in TRAINED)]
    ordered = trained.sort_values(["task_key", "p", "vkey"], kind="stable")
    rows = [[t, f"{p:g}", v, _ci(g.kdist), _ci(g.wdist), _ci(g.gap), _pct(g.agree), str(len(g)), _runs(g)]
            for (t, p, v), g in _groups(ordered, ["task", "p", "variant"])]
    answers = []
    for (t,), tg in _groups(ordered[ordered.p == ordered.p.min()], ["task"]):
        nn = tg[tg.variant == "nn"]
        parts = []
        if nn.kdist.notna().any():
            parts.append(f"nn's tangent kernel on the probe moves {_ci(nn.kdist)} (relative Frobenius distance) and its "
                         f"weights {_ci(nn.wdist)} from initialization ({_seeds(nn)})")
        gaps = tg[tg.gap.notna()].groupby("variant").gap.mean()
        if len(gaps):
            lo, hi = gaps.idxmin(), gaps.idxmax()
            parts.append(f"the RMS gap between test outputs and nn's is smallest for {lo}, "
                         f"{_ci(tg[tg.variant == lo].gap)} ({_pct(tg[tg.variant == lo].agree)} % labels agree), "
                         f"and largest for {hi}, {_ci(tg[tg.variant == hi].gap)} "
                         f"({_pct(tg[tg.variant == hi].agree)} % agree)")
        if parts:
            answers.append(f"{t} at label noise {tg.p.iloc[0]:g}: " + "; ".join(parts) + ".")
    columns = ["task", "label noise", "variant", "final kernel distance", "final weight distance",
               "linearization gap (RMS)", "label agreement with nn, %", "seeds", "runs"]
    note = ("Trained variants at the largest n_train. Curves: nn's step history (MLflow get_metric_history), mean "
            "over seeds. Kernel distance is ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F on a 64-input probe (Fort et al. 2020), weight "
            "distance ‖θ_t − θ_0‖/‖θ_0‖, the gap √mean (f_lin − f_nn)² over test inputs and outputs, against the "
            "nn run of the same seed and data.")
    return _distance_plot(trained[trained.variant == "nn"], uri), answers, columns, rows, note


def _curves(tasks, clean, colors) -> Section:
    panels = [(t, [(v, list(a.index), list(100 * a["mean"]), list(100 * a["std"].fillna(0)), "-o", colors[v])
                   for (v,), g in _groups(clean[clean.task == t], ["variant"])
                   for a in [g.groupby("n", sort=True).test.agg(["mean", "std"])]]) for t in tasks]
    svg = _plot(panels, "n_train", "test accuracy, %", "curves", "Learning curves: test accuracy against n_train",
                logx=True) if clean.n.nunique() > 1 else None
    rows = [[t, v, str(n), _pct(g.test), str(len(g)), _runs(g)] for (t, v, n), g in _groups(clean, ["task", "variant", "n"])]
    answers = []
    for (t,), tg in _groups(clean, ["task"]):
        n0, n1 = tg.n.min(), tg.n.max()
        if n0 == n1:
            continue
        gains = {v: _paired(g[g.n == n1], g[g.n == n0], "test") for (v,), g in _groups(tg, ["variant"])}
        gains = {v: d for v, d in gains.items() if d}
        if gains:
            mean = {v: sum(d) / len(d) for v, d in gains.items()}
            lo, hi = min(mean, key=mean.get), max(mean, key=mean.get)
            answers.append(f"{t}: from n_train {n0} to {n1}, test accuracy gains the most for {hi}, "
                           f"{_ci(gains[hi], 100, '+.1f')} points, and the least for {lo}, "
                           f"{_ci(gains[lo], 100, '+.1f')} points ({len(gains[hi])} seeds, paired).")
    columns = ["task", "variant", "n_train", "test accuracy, %", "seeds", "runs"]
    return svg, answers, columns, rows, "Label noise 0; error bars on the plot are the seeds' standard deviation."


def _sections(task: str, frame, uri: str | None) -> list[tuple[str, str, str | None, list[str], list[str], list[list[str]], str]]:
    """(heading, question, svg, answers, columns, rows, note) for each of :data:`SECTIONS`."""
    colors = {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(sorted(set(frame.variant), key=_variant_key))}
    tasks = list(dict.fromkeys(frame.task))
    clean = frame[frame.p == 0]
    top = frame[frame.n == frame.n_max]
    best = clean[clean.n == clean.n_max]
    out = [_accuracy(frame, best), _cost(best), _energy(tasks, top, colors), _noise(tasks, top, colors),
           _distance(top, uri), _curves(tasks, clean, colors)]
    return [(h, q, *s) for (h, q), s in zip(SECTIONS, out)]


def _distance_plot(nn, uri: str | None) -> str | None:
    """Kernel and weight distance against epoch, mean over seeds, one line per (task, label noise)."""
    if nn.empty:
        return None
    from mlflow import MlflowClient

    from ntkbench.tracking import resolve_uri

    client = MlflowClient(resolve_uri(uri))
    panels: list[tuple[str, list[tuple]]] = [("kernel distance", []), ("weight distance", [])]
    for i, ((t, p), g) in enumerate(_groups(nn.sort_values(["task_key", "p"], kind="stable"), ["task", "p"])):
        for panel, metric in zip(panels, ("kernel_distance", "weight_distance")):
            steps: dict[int, list[float]] = {}
            for run_id in g.run_id:
                for m in client.get_metric_history(run_id, metric):
                    steps.setdefault(m.step, []).append(m.value)
            xs = sorted(steps)
            if xs:
                panel[1].append((f"{t} p={p:g}", [x + 1 for x in xs], [sum(steps[x]) / len(steps[x]) for x in xs],
                                 None, "-" + _MARKERS[i % len(_MARKERS)], _PALETTE[i % len(_PALETTE)]))
    panels = [pl for pl in panels if pl[1]]
    return _plot(panels, "epoch", "relative distance from initialization", "distance",
                 "Kernel and weight distance over training") if panels else None


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}th,td{border:1px solid #ccc;"
        "padding:.25em .6em}td.n{text-align:right}p.q{font-style:italic}svg.plot{max-width:100%;height:auto}"
        "ul.a li{margin:.3em 0}")


def render_report(task: str, tracking_uri: str | None = None, out_dir: str | Path = Path("leaderboard/site"),
                  study_id: str | None = None) -> Path:
    """Write ``out_dir/study-<task>.html`` and ``study-<task>.md`` from the FINISHED runs of the
    study ``study_id`` (default: the latest study of ``task``); return the HTML path. Same runs,
    same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, study_id = _load(task, tracking_uri, study_id)
    title = f"ntkbench study: {task}"
    esc, md = html.escape, escape_markdown
    head = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    mdl = [f"# {md(title)}", ""]
    if frame.empty:
        what = f"study {study_id}" if study_id else "study runs"
        msg = f"No {what} yet; run `ntkbench study --task {task}`."
        head.append(f"<p>{esc(msg.split('`')[0])}<code>{esc(f'ntkbench study --task {task}')}</code>.</p>")
        mdl += [md(msg).replace("\\`", "`"), ""]
    else:
        intro = (f"Study {study_id}: {len(frame)} finished runs of the tasks {', '.join(dict.fromkeys(frame.task))}. "
                 "Numbers are means over seeds with 95% Student-t intervals in brackets (none for one seed); "
                 "the runs column lists the first 8 characters of each run's MLflow id.")
        head.append(f"<p>{esc(intro)}</p>")
        mdl += [md(intro), ""]
        for heading, question, svg, answers, columns, rows, note in _sections(task, frame, tracking_uri):
            head += [f"<h2>{esc(heading)}</h2>", f'<p class="q">{esc(question)}</p>',
                     '<ul class="a">' + "".join(f"<li>{esc(a)}</li>" for a in answers) + "</ul>" if answers else "",
                     svg or "",
                     "<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr></thead><tbody>",
                     *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows),
                     "</tbody></table>", f"<p>{esc(note)}</p>"]
            mdl += [f"## {md(heading)}", "", f"*{md(question)}*", "", *(f"- {md(a)}" for a in answers),
                    *([""] if answers else []), "| " + " | ".join(map(md, columns)) + " |",
                    "|" + "---|" * len(columns), *("| " + " | ".join(map(md, r)) + " |" for r in rows), "",
                    md(note), ""]
    head += ["</body>", "</html>", ""]
    path = out_dir / f"study-{task}.html"
    path.write_text("\n".join(h for h in head if h), encoding="utf-8")
    (out_dir / f"study-{task}.md").write_text("\n".join(mdl).rstrip("\n") + "\n", encoding="utf-8")
    return path
