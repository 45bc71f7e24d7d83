"""The study: does the kernel's feature space hold the target, and how do linearizations compare
with the trained network?

:data:`STUDY_GRID` declares the runs (variants × label noise × n_train × seeds, on the given task
and on ``teacher``, whose labels a random network makes realizable); :func:`run_study` runs them
through :func:`ntkbench.runner.run`; :func:`render_report` reads them back from MLflow and writes
``study-<task>.html`` (static, inline SVG, every string escaped) and ``study-<task>.md``.

Runs carry no study tag: the report finds a variant from the params every run logs (``method``,
``method.linearize_at_epoch``, ``method.at_epoch``, ``method.epochs``, ``task.label_noise``).
Label noise is swept at the largest n_train only; the n_train sweep runs at ``label_noise`` 0.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ntkbench.leaderboard.plots import _MARKERS, _PALETTE, _new_figure, _styled, _text, _to_svg
from ntkbench.leaderboard.render import escape_markdown
from ntkbench.runner import RunResult

__all__ = ["Variant", "StudyGrid", "make_grid", "STUDY_GRID", "QUICK_GRID", "run_study", "render_report", "SECTIONS"]

Options = tuple[tuple[str, Any], ...]
TRAINED = ("nn", "taylor", "entk")
_AT = {"taylor": "linearize_at_epoch", "entk": "at_epoch"}
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
              tracking_uri: str | None = None, grid: StudyGrid | None = None, device: str = "auto") -> list[RunResult]:
    """Run ``grid`` (default :data:`STUDY_GRID`, or :data:`QUICK_GRID` with ``quick``) on ``task``
    and ``teacher``: one :func:`ntkbench.runner.run` per (task, variant, label noise). n_train
    values are capped to the task's training set size."""
    from ntkbench import runner
    from ntkbench import tasks as task_lib

    grid = grid or (QUICK_GRID if quick else STUDY_GRID)
    names = (task, "teacher") if grid.teacher and task != "teacher" else (task,)
    results: list[RunResult] = []
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
                                      n_trains=n_trains if p == 0 else n_trains[-1:])
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
    ("Kernel and weight distance over training", "How far do the trained network's tangent kernel and "
     "weights move from initialization?"),
    ("Learning curves", "How does test accuracy grow with n_train for each method?"),
)
_COLS = {"test_accuracy": "test", "train_accuracy": "train", "time_fit_s": "fit", "time_total_s": "total",
         "peak_memory_mb": "peak", "kernel_energy_top1": "e1", "kernel_energy_top10": "e10",
         "kernel_energy_top100": "e100", "kernel_distance": "kdist", "weight_distance": "wdist"}


def _variant(row: Any) -> str:
    m = row["params.method"]
    if m not in _AT:
        return m
    return _label(m, int(row[f"params.method.{_AT[m]}"]), int(row["params.method.epochs"]))


def _variant_key(label: str) -> tuple[int, float, str]:
    m, _, k = label.partition("@")
    return (_ORDER.index(m) if m in _ORDER else len(_ORDER), math.inf if k == "end" else float(k or 0), label)


def _load(task: str, uri: str | None):  # -> pandas.DataFrame
    """One row per FINISHED run of ``task`` and ``teacher``, sorted, with short column names."""
    import pandas as pd

    from ntkbench.tracking import runs_frame

    frame = runs_frame(uri)
    if frame.empty or "params.task" not in frame:
        return pd.DataFrame()
    frame = frame[frame["params.task"].isin([task, "teacher"])]
    if frame.empty:
        return frame
    out = pd.DataFrame({"task": frame["params.task"], "variant": frame.apply(_variant, axis=1),
                        "n": frame["params.n_train"].astype(int), "p": frame["params.task.label_noise"].astype(float),
                        "seed": frame["params.seed"].astype(int), "run_id": frame["run_id"]})
    for metric, col in _COLS.items():
        out[col] = frame[f"metrics.{metric}"].astype(float) if f"metrics.{metric}" in frame else math.nan
    out["task_key"] = (out.task != task).astype(int)
    out["vkey"] = out.variant.map(_variant_key)
    out["n_max"] = out.groupby("task").n.transform("max")
    return out.sort_values(["task_key", "vkey", "n", "p", "seed", "run_id"]).reset_index(drop=True)


def _pm(values) -> str:  # mean ± std (sample; 0 for one seed) in %
    std = values.std() if len(values) > 1 else 0.0
    return f"{100 * values.mean():.1f} ± {100 * std:.1f}"


def _f(x: float, fmt: str = ".3g") -> str:
    return "–" if not math.isfinite(x) else format(x, fmt)


def _groups(frame, keys: list[str]):
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in frame.groupby(keys, sort=False)]


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


def _sections(task: str, frame, uri: str | None) -> list[tuple[str, str, str | None, list[str], list[list[str]], str]]:
    """(heading, question, svg, columns, rows, note) for each of :data:`SECTIONS`."""
    colors = {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(sorted(set(frame.variant), key=_variant_key))}
    tasks = list(dict.fromkeys(frame.task))
    clean = frame[frame.p == 0]
    top = frame[frame.n == frame.n_max]
    best = clean[clean.n == clean.n_max]
    out = []
    rows = [[t, v, str(g.n.iloc[0]), _pm(g.test), _pm(g.train), str(len(g))] for (t, v), g in _groups(best, ["task", "variant"])]
    out.append((None, ["task", "variant", "n_train", "test accuracy, % (mean ± std)", "train accuracy, %", "seeds"], rows,
                "Label noise 0, the largest n_train of each task."))
    rows = [[t, v, str(g.n.iloc[0]), _f(g.fit.mean()), _f(g.total.mean()), _f(g.peak.max(), ".0f")]
            for (t, v), g in _groups(best, ["task", "variant"])]
    out.append((None, ["task", "variant", "n_train", "fit time, s", "total time, s", "peak memory, MB"], rows,
                "Means over seeds (peak memory: maximum); label noise 0, the largest n_train."))
    kern = top[top.e10.notna()]
    series = [(f"{v} · {t}", list(g.e10), list(100 * g.test), None, _MARKERS[tasks.index(t) % len(_MARKERS)], colors[v])
              for (t, v), g in _groups(kern, ["task", "variant"])]
    svg = _plot([("kernel methods", series)], "target energy in the top 10 eigenmodes", "test accuracy, %", "energy",
                "Target energy in the top 10 eigenmodes against test accuracy") if series else None
    rows = [[t, v, f"{p:g}", _f(g.e1.mean()), _f(g.e10.mean()), _f(g.e100.mean()), _pm(g.test)]
            for (t, v, p), g in _groups(kern, ["task", "variant", "p"])]
    out.append((svg, ["task", "variant", "label noise", "energy top 1", "energy top 10", "energy top 100", "test accuracy, %"],
                rows, "Each point is one run at the largest n_train, every label noise."))
    panels = [(t, [s for v, g in _groups(top[top.task == t], ["variant"])
                   for s in ((f"{v[0]} test", list(g.groupby("p", sort=True).test.mean().index),
                              list(100 * g.groupby("p", sort=True).test.mean()), None, "-o", colors[v[0]]),
                             (f"{v[0]} train", list(g.groupby("p", sort=True).train.mean().index),
                              list(100 * g.groupby("p", sort=True).train.mean()), None, "--x", colors[v[0]]))])
              for t in tasks]
    svg = _plot(panels, "label noise p", "accuracy, % (solid: test, dashed: train)", "noise",
                "Train and test accuracy against label noise")
    rows = [[t, v, f"{p:g}", _pm(g.train), _pm(g.test), str(len(g))]
            for (t, v, p), g in _groups(top.sort_values(["task_key", "vkey", "p"], kind="stable"), ["task", "variant", "p"])]
    out.append((svg, ["task", "variant", "label noise", "train accuracy, %", "test accuracy, %", "seeds"], rows,
                "The largest n_train of each task."))
    nn = top[top.variant == "nn"]
    svg = _distance_plot(nn, uri)
    rows = [[t, f"{p:g}", _f(g.kdist.mean()), _f(g.wdist.mean()), str(len(g))] for (t, p), g in
            _groups(nn.sort_values(["task_key", "p"], kind="stable"), ["task", "p"])]
    out.append((svg, ["task", "label noise", "final kernel distance", "final weight distance", "seeds"], rows,
                "nn runs at the largest n_train. Curves: each run's step history (MLflow get_metric_history), "
                "mean over seeds; table: the final logged values (means over seeds). Kernel distance is "
                "‖Θ_t − Θ_0‖_F/‖Θ_0‖_F on a 64-input probe, weight distance ‖θ_t − θ_0‖/‖θ_0‖."))
    panels = [(t, [(v[0], list(a.index), list(100 * a["mean"]), list(100 * a["std"].fillna(0)), "-o", colors[v[0]])
                   for v, g in _groups(clean[clean.task == t], ["variant"])
                   for a in [g.groupby("n", sort=True).test.agg(["mean", "std"])]]) for t in tasks]
    svg = _plot(panels, "n_train", "test accuracy, %", "curves", "Learning curves: test accuracy against n_train",
                logx=True) if clean.n.nunique() > 1 else None
    rows = [[t, v, str(n), _pm(g.test), str(len(g))] for (t, v, n), g in _groups(clean, ["task", "variant", "n"])]
    out.append((svg, ["task", "variant", "n_train", "test accuracy, %", "seeds"], rows, "Label noise 0."))
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


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;"
        "padding:.25em .6em}td.n{text-align:right}p.q{font-style:italic}svg.plot{max-width:100%;height:auto}")


def render_report(task: str, tracking_uri: str | None = None, out_dir: str | Path = Path("leaderboard/site")) -> Path:
    """Write ``out_dir/study-<task>.html`` and ``study-<task>.md`` from the FINISHED runs of
    ``task`` and ``teacher``; return the HTML path. Same runs, same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = _load(task, tracking_uri)
    title = f"ntkbench study: {task}"
    esc, md = html.escape, escape_markdown
    head = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    mdl = [f"# {md(title)}", ""]
    if frame.empty:
        msg = f"No study runs yet; run `ntkbench study --task {task}`."
        head.append(f"<p>No study runs yet; run <code>{esc(f'ntkbench study --task {task}')}</code>.</p>")
        mdl += [md(msg).replace("\\`", "`"), ""]
    else:
        head.append(f"<p>{esc(f'{len(frame)} finished runs of the tasks ' + ', '.join(dict.fromkeys(frame.task)))}.</p>")
        mdl += [md(f"{len(frame)} finished runs of the tasks " + ", ".join(dict.fromkeys(frame.task))) + ".", ""]
        for heading, question, svg, columns, rows, note in _sections(task, frame, tracking_uri):
            head += [f"<h2>{esc(heading)}</h2>", f'<p class="q">{esc(question)}</p>', svg or "",
                     "<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr></thead><tbody>",
                     *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows),
                     "</tbody></table>", f"<p>{esc(note)}</p>"]
            mdl += [f"## {md(heading)}", "", f"*{md(question)}*", "", "| " + " | ".join(map(md, columns)) + " |",
                    "|" + "---|" * len(columns), *("| " + " | ".join(map(md, r)) + " |" for r in rows), "",
                    md(note), ""]
    head += ["</body>", "</html>", ""]
    path = out_dir / f"study-{task}.html"
    path.write_text("\n".join(h for h in head if h), encoding="utf-8")
    (out_dir / f"study-{task}.md").write_text("\n".join(mdl).rstrip("\n") + "\n", encoding="utf-8")
    return path
