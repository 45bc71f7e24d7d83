"""The leaderboard's plots, as SVG text to inline in the static page.

Each function takes the ranked rows of one task (:class:`ntkbench.leaderboard.ranking.Row`)
and returns an ``<svg>`` element as a string. The figures are drawn without pyplot (no global
backend switch, no GUI) on an Agg canvas and saved as SVG under matplotlib's default style, with
text kept as text (``svg.fonttype = none``), no date in the metadata and a fixed hash salt per
figure, so the same rows always give byte-identical SVG. Every element id is prefixed by the
figure's key, so several figures can share one HTML page without clashing ids.
"""

from __future__ import annotations

import io
import math
import re
from html import escape
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

if TYPE_CHECKING:
    from ntkbench.leaderboard.ranking import Row

__all__ = ["method_colors", "accuracy_vs_time", "learning_curves", "seed_spread"]

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_FIG_WIDTH_IN = 7.0


def method_colors(rows: Sequence[Row]) -> dict[str, str]:
    """One colour per method name (sorted names, cycling through the tab10 palette), so a method
    keeps its colour across every plot of the page."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(sorted({r.method for r in rows}))}


def _text(s: str) -> str:
    """A record string as literal matplotlib text: ``$`` would start mathtext (and can raise on
    bad math), and a leading ``_`` hides a legend entry."""
    s = s.replace("\\", "\\\\").replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def _series(row: Row) -> tuple[str, str, str, str]:
    """What a series (a legend entry, a learning curve) is of: every part of a row's identity
    but the n_train."""
    return (row.method, row.label, row.source, row.device)


def _namer(rows: Sequence[Row]) -> Callable[[Row], str]:
    """Names for the rows of one task: the method, then the label, source and device where the
    rows differ in them (the label also where several architectures are shown)."""
    shown = [i == 0 or len({_series(r)[i] for r in rows}) > 1 for i in range(4)]
    shown[1] = shown[1] or len({r.arch for r in rows}) > 1
    return lambda row: _text(" · ".join(part for part, show in zip(_series(row), shown) if show))


def _row_label(row: Row, name: Callable[[Row], str]) -> str:
    return f"{name(row)} · n={row.n_train}"


def _new_figure(height_in: float) -> Figure:
    fig = Figure(figsize=(_FIG_WIDTH_IN, height_in))
    FigureCanvasAgg(fig)
    return fig


_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'(\s)id="([^"]*)"')
_URL = re.compile(r"url\(#([^)]*)\)")
_HREF = re.compile(r'((?:xlink:)?href)="#([^"]*)"')


def _to_svg(fig: Figure, key: str, title: str) -> str:
    """Save ``fig`` as an inline ``<svg>`` element: XML prolog and metadata removed, element ids
    prefixed with ``key``, and an accessible ``<title>``. Deterministic for the same figure."""
    overrides = {"svg.hashsalt": f"ntkbench:{key}", "svg.fonttype": "none"}
    with mpl.rc_context(overrides):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)

    def fix_tag(match: re.Match[str]) -> str:
        tag = _ID.sub(lambda m: f'{m.group(1)}id="{key}-{m.group(2)}"', match.group(0))
        tag = _URL.sub(lambda m: f"url(#{key}-{m.group(1)})", tag)
        return _HREF.sub(lambda m: f'{m.group(1)}="#{key}-{m.group(2)}"', tag)

    svg = _TAG.sub(fix_tag, svg)
    head_end = svg.index(">") + 1
    svg = svg[:head_end] + f"\n <title>{escape(title)}</title>" + svg[head_end:]
    return svg.replace('<svg xmlns:xlink', '<svg role="img" class="plot" xmlns:xlink', 1).strip() + "\n"


def _styled(draw):  # type: ignore[no-untyped-def]
    """Run ``draw`` under matplotlib's default style, whatever the user's matplotlibrc says."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with mpl.style.context("default"), mpl.rc_context({"svg.fonttype": "none"}):
            return draw(*args, **kwargs)

    wrapper.__doc__ = draw.__doc__
    wrapper.__name__ = draw.__name__
    return wrapper


_SECONDS = FuncFormatter(lambda x, _: f"{x:g}")


def _positive(x: float, floor: float) -> float:
    return x if math.isfinite(x) and x > 0 else floor


@_styled
def accuracy_vs_time(rows: Sequence[Row], colors: dict[str, str], key: str) -> str:
    """Test accuracy (mean ± std over seeds) against total wall-clock time (log x) for one task;
    the Pareto front (faster or more accurate than every other entry) is circled and joined by a
    dashed staircase. Non-positive times are drawn at half the smallest positive one."""
    positive = [r.time_total_s for r in rows if math.isfinite(r.time_total_s) and r.time_total_s > 0]
    floor = min(positive) / 2 if positive else 1e-3
    labels = sorted({r.label for r in rows})
    name = _namer(rows)
    fig = _new_figure(4.4)
    ax = fig.add_subplot()
    seen: set[str] = set()
    for r in rows:
        label = name(r)
        ax.errorbar(
            _positive(r.time_total_s, floor), 100 * r.acc_mean, yerr=100 * r.acc_std,
            fmt=_MARKERS[labels.index(r.label) % len(_MARKERS)], color=colors[r.method],
            markersize=6, capsize=3, label=None if label in seen else label,
        )
        seen.add(label)
    front = sorted((r for r in rows if r.pareto), key=lambda r: (_positive(r.time_total_s, floor), -r.acc_mean))
    if front:
        xs = [_positive(r.time_total_s, floor) for r in front]
        ys = [100 * r.acc_mean for r in front]
        ax.step(xs, ys, where="post", color="0.35", linestyle="--", linewidth=1, zorder=1, label="Pareto front")
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="0.2", linewidths=1.2, zorder=3)
        for r, x, y in zip(front, xs, ys):
            ax.annotate(_row_label(r, name), (x, y), textcoords="offset points", xytext=(7, -11), fontsize=7, color="0.25")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_formatter(_SECONDS)
    ax.xaxis.set_minor_formatter(_SECONDS if hi / lo < 30 else NullFormatter())
    ax.set_xlabel("total wall-clock time per run, s (log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    return _to_svg(fig, key, "Test accuracy against wall-clock time, with the Pareto front")


@_styled
def learning_curves(rows: Sequence[Row], colors: dict[str, str], key: str) -> str | None:
    """Test accuracy against n_train for each series (method, label, source, device) of one task
    with rows at two or more n_train values; ``None`` when there is none. Log x when n_train
    spans a factor ≥ 4."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(_series(r), []).append(r)
    curves = {k: sorted(v, key=lambda r: r.n_train) for k, v in sorted(groups.items()) if len({r.n_train for r in v}) > 1}
    if not curves:
        return None
    name = _namer([r for pts in curves.values() for r in pts])
    labels = sorted({key[1] for key in curves})
    fig = _new_figure(4.0)
    ax = fig.add_subplot()
    ns: set[int] = set()
    for (method, label, _, _), pts in curves.items():
        ns.update(r.n_train for r in pts)
        ax.errorbar(
            [r.n_train for r in pts], [100 * r.acc_mean for r in pts], yerr=[100 * r.acc_std for r in pts],
            fmt="-" + _MARKERS[labels.index(label) % len(_MARKERS)], color=colors[method], capsize=3,
            label=name(pts[0]),
        )
    ticks = sorted(ns)
    if ticks[0] > 0 and ticks[-1] / ticks[0] >= 4:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("n_train")
    ax.set_ylabel("test accuracy, %")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    return _to_svg(fig, key, "Learning curves: test accuracy against n_train")


@_styled
def seed_spread(rows: Sequence[Row], colors: dict[str, str], key: str) -> str:
    """Each seed's test accuracy (dots, spread vertically in a fixed pattern), the mean (bar) and
    ± one standard deviation (line) for every entry of one task, best rank on top."""
    ordered = sorted(rows, key=lambda r: r.rank)
    fig = _new_figure(1.0 + 0.38 * len(ordered))
    ax = fig.add_subplot()
    n = len(ordered)
    for i, r in enumerate(ordered):
        y = n - 1 - i
        color = colors[r.method]
        k = len(r.accuracies)
        offsets = [0.0] if k == 1 else [-0.18 + 0.36 * j / (k - 1) for j in range(k)]
        ax.scatter([100 * a for a in r.accuracies], [y + o for o in offsets], s=18, color=color, alpha=0.8, zorder=3)
        ax.plot([100 * (r.acc_mean - r.acc_std), 100 * (r.acc_mean + r.acc_std)], [y, y], color=color, linewidth=1.5, alpha=0.6)
        ax.plot([100 * r.acc_mean], [y], marker="|", markersize=16, markeredgewidth=2, color=color)
    name = _namer(rows)
    ax.set_yticks(range(n), [_row_label(r, name) for r in reversed(ordered)], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("test accuracy, % (dots: seeds; bar: mean; line: ± std)")
    ax.grid(True, axis="x", alpha=0.3)
    return _to_svg(fig, key, "Spread of test accuracy over seeds")
