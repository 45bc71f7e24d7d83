"""The report's figures, as inline SVG, with the leaderboard's plumbing and colours
(:mod:`ntkbench.leaderboard.svg`, :func:`ntkbench.leaderboard.plots.variant_styles`): each
method its own hue, the variants of a method (``taylor@0`` … ``taylor@end``) shades of it with
their own markers. The legend sits below the panels, outside the data, and lists each drawn
series once; a series without a label is drawn but not listed. The SVG is cropped to all that is
drawn, so no label is cut off. A log x axis (n_train) is ticked at the data's own values, as
integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.ticker import NullLocator

from ntkbench import format as fmt
from ntkbench.leaderboard.plots import Style, spaced, variant_styles
from ntkbench.leaderboard.svg import as_text, new_figure, styled, to_svg


@dataclass(frozen=True)
class Series:
    """One drawn series: ``label`` in the legend ("" for none), points ``xs``/``ys``, optional
    error bars ``yerr`` (symmetric, or ``[below, above]``), ``line`` ("-", "--" or "none" for
    points only) and its :class:`Style`."""

    label: str
    xs: list
    ys: list
    style: Style
    line: str = "-"
    yerr: Any = None


@styled
def plot(panels: list[tuple[str, list[Series]]], xlabel: str, ylabel: str, key: str, title: str,
         logx: bool = False) -> str:
    """Panels side by side sharing the y axis, one legend below them all."""
    fig = new_figure(3.4 + 0.25 * (len({s.label for _, ss in panels for s in ss if s.label}) // 4), 7.0)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    legend: dict[str, Any] = {}
    for ax, (name, series) in zip(axes, panels):
        for s in series:
            handle = ax.errorbar(s.xs, s.ys, yerr=s.yerr, color=s.style.color, marker=s.style.marker, linestyle=s.line,
                                 capsize=2, markersize=5)
            if s.label and s.label not in legend:
                legend[s.label] = handle
        if logx:  # ticks at the data's own sizes, as integers (not 4×10¹), spaced to stay apart
            ax.set_xscale("log")
            ticks = spaced([x for s in series for x in s.xs], log=True)
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(ticks, [fmt.integer(x) for x in ticks])
        ax.set_title(as_text(name), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if legend:
        ncols = min(4, len(legend)) if max(len(label) for label in legend) <= 18 else 2
        fig.legend(list(legend.values()), [as_text(label) for label in legend], loc="outside lower center",
                   ncols=ncols, frameon=False, fontsize=9)
    return to_svg(fig, key, title)


def styles(frame: Any) -> dict[str, Style]:
    """A :class:`Style` per variant of the study table ``frame``, in the study's order."""
    ordered = frame.sort_values("vkey")
    return variant_styles(zip(ordered.variant, ordered.method))


def distance_plot(runs: Any, uri: str | None) -> str | None:
    """Kernel and weight distance against epoch from ``runs``' step histories, mean over seeds,
    one line per (task, label noise): a hue per task, shades per label noise; None without runs
    or histories."""
    if runs.empty:
        return None
    from mlflow import MlflowClient

    from ntkbench.tracking import resolve_uri

    client = MlflowClient(resolve_uri(uri))
    groups = list(runs.sort_values(["task_key", "p"], kind="stable").groupby(["task", "p"], sort=False))
    lines = variant_styles((f"{t} p={p:g}", t) for (t, p), _ in groups)
    panels: list[tuple[str, list[Series]]] = [("kernel distance", []), ("weight distance", [])]
    for (t, p), g in groups:
        for panel, metric in zip(panels, ("kernel_distance", "weight_distance")):
            steps: dict[int, list[float]] = {}
            for run_id in g.run_id:
                for m in client.get_metric_history(run_id, metric):
                    steps.setdefault(m.step, []).append(m.value)
            xs = sorted(steps)
            if xs:
                label = f"{t} p={p:g}"
                panel[1].append(Series(label, [x + 1 for x in xs], [sum(steps[x]) / len(steps[x]) for x in xs],
                                       lines[label]))
    panels = [pl for pl in panels if pl[1]]
    return plot(panels, "epoch", "relative distance from initialization", "distance",
                "Kernel and weight distance over training") if panels else None
