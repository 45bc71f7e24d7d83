"""The report's figures, as inline SVG (the leaderboard's matplotlib helpers)."""

from __future__ import annotations

from typing import Any

from ntkbench.leaderboard.plots import _MARKERS, _PALETTE, _new_figure, _styled, _text, _to_svg

Series = tuple[str, list, list, list | None, str, str]  # label, xs, ys, yerr or None, fmt, color


@_styled
def plot(panels: list[tuple[str, list[Series]]], xlabel: str, ylabel: str, key: str, title: str,
         logx: bool = False) -> str:
    """Panels side by side, sharing the y axis; each series drawn with error bars."""
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


def distance_plot(runs: Any, uri: str | None) -> str | None:
    """Kernel and weight distance against epoch from ``runs``' step histories, mean over seeds,
    one line per (task, label noise); None without runs or histories."""
    if runs.empty:
        return None
    from mlflow import MlflowClient

    from ntkbench.tracking import resolve_uri

    client = MlflowClient(resolve_uri(uri))
    panels: list[tuple[str, list[Series]]] = [("kernel distance", []), ("weight distance", [])]
    for i, ((t, p), g) in enumerate(runs.sort_values(["task_key", "p"], kind="stable").groupby(["task", "p"], sort=False)):
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
    return plot(panels, "epoch", "relative distance from initialization", "distance",
                "Kernel and weight distance over training") if panels else None
