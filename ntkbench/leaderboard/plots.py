"""The leaderboard's plots, as SVG text to inline in the static page, each with its alt text and
the data it draws as a table (:class:`Plot`).

The figures are drawn without pyplot (no global backend switch, no GUI) on an Agg canvas and
saved as SVG under matplotlib's default style, with text kept as text (``svg.fonttype = none``),
no date in the metadata and a fixed hash salt per figure, so the same rows always give
byte-identical SVG. Every element id is prefixed by the figure's key, so several figures can
share one HTML page without clashing ids.

Readability, guaranteed for every plot here:

- colours: :func:`method_colors` gives each method its own hue; :func:`variant_styles` gives
  the variants of one method (other options, sources, devices) shades of that hue and their
  own markers. The study uses the same two functions.
- a log time axis carries 2 to 7 tick labels in human units (``100 ms``, ``1 s``, ``2 min``),
  chosen from the data's range (:func:`time_ticks`), never one label and never crowded;
- legends sit below the axes, outside the data, and list only what is drawn;
- the saved SVG is cropped to everything drawn, so no label is cut off.
"""

from __future__ import annotations

import colorsys
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ntkbench import format as fmt
from ntkbench.leaderboard.svg import MARKERS, new_figure, styled, to_svg, as_text

if TYPE_CHECKING:
    from ntkbench.leaderboard.ranking import Row

__all__ = ["Plot", "Style", "PALETTE", "MARKERS", "method_colors", "variant_styles", "time_ticks", "spaced",
           "accuracy_vs_time", "learning_curves", "seed_spread"]

# Okabe & Ito's colour-blind-safe palette without its yellow (too pale on white) and black.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7a5195", "#8c6d31")

# The names the study's plots import today (ntkbench/study/plots.py, sections.py), until they
# move to method_colors/variant_styles and ntkbench.leaderboard.svg.
_PALETTE, _MARKERS, _styled, _text, _to_svg = PALETTE, MARKERS, styled, as_text, to_svg


def _new_figure(height_in: float) -> Figure:
    return new_figure(height_in, 7.0)


@dataclass(frozen=True)
class Plot:
    """One figure: ``svg`` (an ``<svg role="img">`` with ``aria-label`` = ``alt`` and a
    ``<title>``), and the data it draws as ``columns`` and ``rows`` of text."""

    svg: str
    alt: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Style:
    """How one series is drawn: its colour and its marker."""

    color: str
    marker: str


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """One distinct colour per method, by sorted name: the :data:`PALETTE`, then hues spread
    evenly around the colour wheel for methods past it (never a repeat)."""
    names = sorted(set(methods))
    extra = len(names) - len(PALETTE)
    more = [to_hex(colorsys.hls_to_rgb((0.13 + i / extra) % 1, 0.42, 0.65)) for i in range(max(extra, 0))]
    return dict(zip(names, [*PALETTE, *more]))


def _shade(color: str, t: float) -> str:
    """``color`` darkened towards black (t < 0) or lightened towards white (t > 0), |t| ≤ 1."""
    target = 0.0 if t < 0 else 1.0
    amount = abs(t) * (0.45 if t < 0 else 0.55)
    return to_hex(tuple(c + (target - c) * amount for c in to_rgb(color)))


def variant_styles(variants: Iterable[tuple[str, str]], colors: dict[str, str] | None = None) -> dict[str, Style]:
    """A style per variant from ``(variant, method)`` pairs, in order: the method's colour
    (``colors``, default :func:`method_colors` of the methods given), in shades from darker to
    lighter when a method has several variants, and a marker per variant of the method."""
    pairs = list(dict.fromkeys(variants))
    colors = colors or method_colors(m for _, m in pairs)
    by_method: dict[str, list[str]] = {}
    for variant, method in pairs:
        by_method.setdefault(method, []).append(variant)
    styles = {}
    for method, names in by_method.items():
        for j, variant in enumerate(names):
            t = 0.0 if len(names) == 1 else -0.6 + 1.2 * j / (len(names) - 1)
            styles[variant] = Style(_shade(colors[method], t), MARKERS[j % len(MARKERS)])
    return styles


# -- ticks --------------------------------------------------------------------------------------

_UNITS_S = ((1e-3, 1000.0), (1.0, 60.0), (60.0, 60.0), (3600.0, math.inf))  # (seconds per unit, next unit)
# Mantissas of round ticks, sparse to dense; each ladder is about evenly spaced on a log axis.
_LEVELS = ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))
_MIN_GAP = 0.15  # neighbouring ticks at least this fraction of the axis apart


def _candidates(mantissas: Sequence[float]) -> list[float]:
    """Tick values in seconds that read as round numbers of ms, s, min or h."""
    out = []
    for scale, limit in _UNITS_S:
        for k in range(-6, 6):
            for m in mantissas:
                value = m * 10**k
                if (value >= 1 or scale == 1e-3) and value < limit:
                    out.append(value * scale)
    return sorted(set(out))


def time_ticks(lo: float, hi: float) -> tuple[list[float], tuple[float, float]]:
    """Ticks (in seconds) and axis limits for a log time axis that shows ``[lo, hi]`` (both
    > 0). Of the round ladders whose ticks inside the padded range number 2 to 7 and lie at
    least :data:`_MIN_GAP` of the axis apart, the one with closest to 4 ticks (the sparser on a
    tie); where none has, the densest ladder's ticks on either side of the data, the limits
    widened to them."""
    lo, hi = min(lo, hi), max(lo, hi)
    pad = max(1.25, (hi / lo) ** 0.08)
    a, b = lo / pad, hi * pad
    best: list[float] = []
    for mantissas in _LEVELS:
        ticks = [t for t in _candidates(mantissas) if a <= t <= b]
        if len(ticks) > 7:
            ticks = ticks[:: math.ceil(len(ticks) / 7)]
        gaps = [math.log(y / x) / math.log(b / a) for x, y in zip(ticks, ticks[1:])]
        if len(ticks) >= 2 and min(gaps) >= _MIN_GAP and (not best or abs(len(ticks) - 4) < abs(len(best) - 4)):
            best = ticks
    if best:
        return best, (a, b)
    ladder = _candidates(_LEVELS[-1])
    low, high = max(t for t in ladder if t <= lo), min(t for t in ladder if t > hi)
    return [low, high], (min(a, low / 1.05), max(b, high * 1.05))


def spaced(values: Sequence[float], log: bool, min_gap: float = 0.09) -> list[float]:
    """The sorted distinct ``values`` thinned so that neighbours are at least ``min_gap`` of the
    axis apart (in log space when ``log``); the smallest and largest are always kept."""
    vs = sorted(set(values))
    pos = [math.log(v) if log else v for v in vs]
    span = (pos[-1] - pos[0]) or 1.0
    kept = [0]
    for i in range(1, len(vs)):
        if (pos[i] - pos[kept[-1]]) / span >= min_gap:
            kept.append(i)
    if kept[-1] != len(vs) - 1:
        if len(kept) > 1 and (pos[-1] - pos[kept[-1]]) / span < min_gap:
            kept.pop()
        kept.append(len(vs) - 1)
    return [vs[i] for i in kept]


# -- naming -------------------------------------------------------------------------------------

def _series(row: Row) -> tuple[str, str, str, str]:
    """What a series (a legend entry, a learning curve) is of: every part of a row's identity
    but the n_train."""
    return (row.method, row.label, row.source, row.device)


def _namer(rows: Sequence[Row]):  # type: ignore[no-untyped-def]
    """Names for the rows of one task: the method, then the label, source and device where the
    rows differ in them (the label also where several architectures are shown)."""
    shown = [i == 0 or len({_series(r)[i] for r in rows}) > 1 for i in range(4)]
    shown[1] = shown[1] or len({r.arch for r in rows}) > 1
    return lambda row: " · ".join(part for part, show in zip(_series(row), shown) if show)


def _styles(rows: Sequence[Row], colors: dict[str, str]) -> dict[str, Style]:
    name = _namer(rows)
    return variant_styles(((name(r), r.method) for r in sorted(rows, key=_series)), colors)


def _legend(fig, handles: list, labels: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The legend below the axes, in two columns when the names are short."""
    if handles:
        wide = max(len(label) for label in labels) > 26
        fig.legend(handles, [as_text(label) for label in labels], loc="outside lower center",
                   ncols=1 if wide or len(labels) == 1 else 2, frameon=False)


def _percent_axis(lo: float, hi: float) -> tuple[float, float]:
    """Axis limits for accuracies in percent: the drawn range, but never past [−2, 102] (a mean ±
    one std can leave the possible range; the axis does not)."""
    return max(lo, -2.0), min(hi, 102.0)


def _time(x: float, floor: float) -> float:
    return x if math.isfinite(x) and x > 0 else floor


# -- plots --------------------------------------------------------------------------------------

@styled
def accuracy_vs_time(rows: Sequence[Row], colors: dict[str, str], key: str) -> Plot:
    """Test accuracy (mean ± std over seeds) against total wall-clock time (log x) for one task.
    The Pareto front (no other row both as fast and as accurate) is circled, joined by a dashed
    staircase and numbered by rank; its legend entry exists only when the front is drawn.
    Non-positive times are drawn at half the smallest positive one."""
    positive = [r.time_total_s for r in rows if math.isfinite(r.time_total_s) and r.time_total_s > 0]
    floor = min(positive) / 2 if positive else 1e-3
    name, styles = _namer(rows), _styles(rows, colors)
    fig = new_figure(4.2)
    ax = fig.add_subplot()
    handles: dict[str, object] = {}
    for r in rows:
        style = styles[name(r)]
        bars = ax.errorbar(_time(r.time_total_s, floor), 100 * r.acc_mean, yerr=100 * r.acc_std if r.seeds > 1 else None,
                           fmt=style.marker, color=style.color, markersize=7, capsize=3)
        handles.setdefault(name(r), bars)
    front = sorted((r for r in rows if r.pareto), key=lambda r: (_time(r.time_total_s, floor), -r.acc_mean))
    xs = [_time(r.time_total_s, floor) for r in rows]
    ticks, limits = time_ticks(min(xs), max(xs))
    if front:
        fx = [_time(r.time_total_s, floor) for r in front]
        fy = [100 * r.acc_mean for r in front]
        if len(front) > 1:
            ax.step(fx, fy, where="post", color="0.35", linestyle="--", linewidth=1, zorder=1)
        ax.scatter(fx, fy, s=200, facecolors="none", edgecolors="0.2", linewidths=1.2, zorder=3)
        mid = math.sqrt(limits[0] * limits[1])
        for r, x, y in zip(front, fx, fy):
            left = x > mid  # the number sits on the inner side of its point
            ax.annotate(str(r.rank), (x, y), textcoords="offset points", xytext=(-10 if left else 10, 0),
                        ha="right" if left else "left", va="center", fontsize=10, color="0.15", annotation_clip=False)
        handles["Pareto front (numbered by rank)"] = Line2D(
            [], [], color="0.35", linestyle="--" if len(front) > 1 else "none", marker="o", markersize=11,
            markerfacecolor="none", markeredgecolor="0.2")
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    ax.set_xticks(ticks, [fmt.seconds(t, trim=True) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.margins(y=0.15)
    ax.set_ylim(*_percent_axis(*ax.get_ylim()))
    ax.set_xlabel("total wall-clock time per run (log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.grid(True, which="major", alpha=0.3)
    _legend(fig, list(handles.values()), list(handles))
    best = rows[0] if rows else None
    fastest = min(rows, key=lambda r: _time(r.time_total_s, math.inf))
    alt = (f"Test accuracy against total time for {len(rows)} rows. Best: {name(best)} at "
           f"{fmt.percent(best.acc_mean)} % in {fmt.seconds(best.time_total_s)}; fastest: {name(fastest)} at "
           f"{fmt.percent(fastest.acc_mean)} % in {fmt.seconds(fastest.time_total_s)}; "
           f"{len(front)} on the Pareto front.")
    table = tuple((str(r.rank), name(r), fmt.integer(r.n_train), fmt.seconds(r.time_total_s),
                   fmt.accuracy(r.acc_mean, r.acc_std, r.seeds), "yes" if r.pareto else "") for r in rows)
    return Plot(to_svg(fig, key, alt), alt, ("rank", "series", "n_train", "total time", "test accuracy, %", "Pareto"),
                table)


@styled
def learning_curves(rows: Sequence[Row], colors: dict[str, str], key: str) -> Plot | None:
    """Test accuracy against n_train for each series (method, label, source, device) of one task
    with rows at two or more n_train values; ``None`` when there is none. Log x when n_train
    spans a factor ≥ 4; the n_train values are the ticks, thinned where they would crowd."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(_series(r), []).append(r)
    curves = {k: sorted(v, key=lambda r: r.n_train) for k, v in sorted(groups.items()) if len({r.n_train for r in v}) > 1}
    if not curves:
        return None
    shown = [r for pts in curves.values() for r in pts]
    name, styles = _namer(shown), _styles(shown, colors)
    fig = new_figure(3.8)
    ax = fig.add_subplot()
    for pts in curves.values():
        style = styles[name(pts[0])]
        ax.errorbar([r.n_train for r in pts], [100 * r.acc_mean for r in pts],
                    yerr=[100 * r.acc_std if r.seeds > 1 else 0.0 for r in pts], fmt="-" + style.marker,
                    color=style.color, capsize=3, label=as_text(name(pts[0])))
    ns = sorted({r.n_train for r in shown})
    log = ns[0] > 0 and ns[-1] / ns[0] >= 4
    if log:
        ax.set_xscale("log")
    ticks = spaced(ns, log)
    ax.set_xticks(ticks, [fmt.integer(n) for n in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(*_percent_axis(*ax.get_ylim()))
    ax.set_xlabel("n_train" + (" (log scale)" if log else ""))
    ax.set_ylabel("test accuracy, %")
    ax.grid(True, alpha=0.3)
    _legend(fig, *ax.get_legend_handles_labels())
    alt = (f"Learning curves: test accuracy against n_train ({fmt.integer(ns[0])} to {fmt.integer(ns[-1])}) "
           f"for {len(curves)} series: " + "; ".join(
               f"{name(pts[0])} from {fmt.percent(pts[0].acc_mean)} % to {fmt.percent(pts[-1].acc_mean)} %"
               for pts in curves.values()) + ".")
    table = tuple((name(r), fmt.integer(r.n_train), fmt.accuracy(r.acc_mean, r.acc_std, r.seeds), fmt.integer(r.seeds))
                  for pts in curves.values() for r in pts)
    return Plot(to_svg(fig, key, alt), alt, ("series", "n_train", "test accuracy, %", "seeds"), table)


@styled
def seed_spread(rows: Sequence[Row], colors: dict[str, str], key: str) -> Plot:
    """Each seed's test accuracy (dots, spread vertically in a fixed pattern), the mean (bar) and
    ± one standard deviation (line, for two seeds or more) for every row of one task, best rank
    on top, labelled by rank and name (n_train too where the rows differ in it)."""
    ordered = sorted(rows, key=lambda r: r.rank)
    name, styles = _namer(rows), _styles(rows, colors)
    several_n = len({r.n_train for r in rows}) > 1
    n = len(ordered)
    fig = new_figure(max(3.2, 0.9 + 0.36 * n))
    ax = fig.add_subplot()
    for i, r in enumerate(ordered):
        y, style = n - 1 - i, styles[name(r)]
        k = len(r.accuracies)
        offsets = [0.0] if k == 1 else [-0.2 + 0.4 * j / (k - 1) for j in range(k)]
        ax.scatter([100 * a for a in r.accuracies], [y + o for o in offsets], s=22, color=style.color,
                   marker=style.marker, alpha=0.85, zorder=3)
        if k > 1:
            ax.plot([100 * (r.acc_mean - r.acc_std), 100 * (r.acc_mean + r.acc_std)], [y, y], color=style.color,
                    linewidth=1.5, alpha=0.6)
        ax.plot([100 * r.acc_mean], [y], marker="|", markersize=16, markeredgewidth=2, color=style.color)

    def label(r: Row) -> str:
        text = f"{r.rank}. {name(r)}" + (f" · n={fmt.integer(r.n_train)}" if several_n else "")
        return as_text(textwrap.fill(text, 26, subsequent_indent="   "))

    ax.set_yticks(range(n), [label(r) for r in reversed(ordered)], fontsize=10)
    ax.set_ylim(-0.7, n - 0.3)
    ax.margins(x=0.08)
    ax.set_xlim(*_percent_axis(*ax.get_xlim()))
    ax.set_xlabel("test accuracy, %\n(dots: seeds; bar: mean; line: ± std)")
    ax.grid(True, axis="x", alpha=0.3)
    spread = [r for r in ordered if r.seeds > 1]
    widest = max(spread, key=lambda r: r.acc_std) if spread else None
    alt = (f"Test accuracy of each seed for {n} rows." + (
        f" The widest spread: {name(widest)}, {fmt.accuracy(widest.acc_mean, widest.acc_std, widest.seeds)} % "
        f"over {fmt.seeds(widest.seeds)}." if widest else " Every row has one seed."))
    table = tuple((str(r.rank), name(r), fmt.integer(r.n_train),
                   ", ".join(f"{s}: {fmt.percent(a)}" for s, a in zip(r.seed_ids, r.accuracies)),
                   fmt.accuracy(r.acc_mean, r.acc_std, r.seeds)) for r in ordered)
    return Plot(to_svg(fig, key, alt), alt, ("rank", "series", "n_train", "seed: test accuracy, %",
                                             "mean ± std, %"), table)
