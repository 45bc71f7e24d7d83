"""The leaderboard's plots: ticks chosen from the data's range, one colour per method, legends
outside the axes with a mark for every entry, alt text and the data behind each plot."""

from __future__ import annotations

import html
import math
import random
import re

import pytest
from board_records import local, make_record
from matplotlib.colors import rgb_to_hsv, to_rgb

from ntkbench import format as fmt
from ntkbench.leaderboard import plots
from ntkbench.leaderboard.ranking import aggregate


def board(specs, task: str = "digits"):
    """Rows from (method, n_train, accuracies, total seconds, arch options or None)."""
    return aggregate(local(*(make_record(task, m, seed=s, acc=a, total=t, n_train=n, arch_options=arch)
                             for m, n, accs, t, arch in specs for s, a in enumerate(accs))))


ROWS = board([("nn", 500, (0.95, 0.97), 10.0, None), ("nn", 1000, (0.98, 0.99), 20.0, None),
              ("ntk", 500, (0.94, 0.94), 2.0, None), ("nngp", 500, (0.86,), 1.5, None),
              ("taylor", 500, (0.90, 0.92), 30.0, None), ("nn", 500, (0.91, 0.93), 8.0, {"depth": 1, "width": 64})])
COLORS = plots.method_colors(r.method for r in ROWS)


@pytest.mark.parametrize("lo, hi", [(8, 10), (1, 3), (0.1, 0.1), (0.09, 0.11), (1e-4, 3e-4), (0.5, 2), (0.05, 200),
                                    (2e-3, 5e4), (50, 70), (3000, 4000), (1, 1.01)])
def test_time_ticks_are_few_round_and_readable(lo, hi):
    ticks, (a, b) = plots.time_ticks(lo, hi)
    assert 2 <= len(ticks) <= 7, ticks
    assert a <= lo and hi <= b and all(a <= t <= b for t in ticks)
    labels = [fmt.seconds(t, trim=True) for t in ticks]
    assert len(set(labels)) == len(labels) and all(len(label) <= 7 for label in labels), labels
    gaps = [math.log(y / x) / math.log(b / a) for x, y in zip(ticks, ticks[1:])]
    assert min(gaps) >= 0.15, (labels, gaps)  # never crowded on the axis


def test_time_ticks_read_as_round_human_units():
    def labels(lo, hi):  # type: ignore[no-untyped-def]
        return [fmt.seconds(t, trim=True) for t in plots.time_ticks(lo, hi)[0]]

    assert labels(1, 3) == ["1 s", "1.5 s", "2 s", "3 s"]
    assert labels(1e-3, 20) == ["1 ms", "10 ms", "100 ms", "1 s", "10 s"]
    assert labels(1, 30) == ["1 s", "3 s", "10 s", "30 s"]
    assert labels(3000, 4000) == ["40 min", "50 min", "1 h", "1.2 h"]


def test_time_ticks_on_random_ranges():
    rng = random.Random(0)
    for _ in range(500):
        lo = 10 ** rng.uniform(-4, 5)
        hi = lo * 10 ** rng.uniform(0, 4)
        ticks, (a, b) = plots.time_ticks(lo, hi)
        assert 2 <= len(ticks) <= 7 and a <= lo and hi <= b, (lo, hi, ticks)
        assert len({fmt.seconds(t, trim=True) for t in ticks}) == len(ticks)
        assert all(math.log(y / x) / math.log(b / a) >= 0.15 for x, y in zip(ticks, ticks[1:]))


def test_spaced_keeps_the_ends_and_drops_crowding():
    assert plots.spaced([100, 200, 400], log=True) == [100, 200, 400]
    assert plots.spaced([100, 104, 108, 400], log=True) == [100, 400]
    assert plots.spaced([10, 11, 50, 52, 100], log=False) == [10, 50, 100]


def test_every_method_has_its_own_colour():
    for n in (5, len(plots.PALETTE), 20):
        colors = plots.method_colors(f"m{i}" for i in range(n))
        assert len(set(colors.values())) == n
    assert plots.method_colors(["nn", "nngp"])["nn"] != plots.method_colors(["nn", "nngp"])["nngp"]


def test_variants_are_shades_and_markers_of_their_method():
    pairs = [(f"taylor@{e}", "taylor") for e in (0, 5, 10, 20)] + [("nn", "nn"), ("nngp", "nngp"), ("ntk", "ntk")]
    styles = plots.variant_styles(pairs)
    base = plots.method_colors(m for _, m in pairs)
    assert len({s.color for s in styles.values()}) == len(pairs)
    taylor = [styles[v] for v, m in pairs if m == "taylor"]
    assert len({s.marker for s in taylor}) == len(taylor)
    hue = rgb_to_hsv(to_rgb(base["taylor"]))[0]
    assert all(abs(rgb_to_hsv(to_rgb(s.color))[0] - hue) < 0.03 for s in taylor)  # one hue, several shades
    assert styles["nn"].color == base["nn"]  # a single variant keeps the method's colour


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures behind the plots, as they are saved."""
    seen = []
    real = plots.to_svg

    def keep(fig, key, alt):  # type: ignore[no-untyped-def]
        seen.append(fig)
        return real(fig, key, alt)

    monkeypatch.setattr(plots, "to_svg", keep)
    return seen


def legend_entries(svg: str) -> list[tuple[str, int]]:
    """(label, marks drawn before it) for each entry of the SVG's legend."""
    legend = svg[svg.index('-legend_1">'):]
    entries, marks = [], 0
    for m in re.finditer(r"<(use|path)\b|<text[^>]*>([^<]*)</text>", legend):
        if m.group(1):
            marks += 1
        else:
            entries.append((m.group(2), marks))
            marks = 0
    return entries


def test_accuracy_vs_time_legend_is_outside_and_every_entry_has_a_mark(figures):
    plot = plots.accuracy_vs_time(ROWS, COLORS, "t")
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    legend, axes = fig.legends[0].get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert legend.y1 <= axes.y0, "the legend overlaps the axes"
    entries = legend_entries(plot.svg)
    assert all(marks > 0 for _, marks in entries), entries
    labels = [label for label, _ in entries]
    assert labels[-1].startswith("Pareto front") and len(labels) == len({(r.method, r.label) for r in ROWS}) + 1
    numbers = fig.axes[0].texts  # the Pareto front's ranks, inside the frame, never across it
    assert sorted(t.get_text() for t in numbers) == sorted(str(r.rank) for r in ROWS if r.pareto)
    for t in numbers:
        box = t.get_window_extent(renderer)
        assert axes.x0 < box.x0 and box.x1 < axes.x1 and axes.y0 < box.y0 and box.y1 < axes.y1, t.get_text()
    assert all(t.get_fontsize() >= 10 for t in numbers)
    labels_shown = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert 2 <= len(labels_shown) <= 7 and all(re.fullmatch(r"[\d.]+ (ms|s|min|h)", t) for t in labels_shown)


def test_learning_curve_legend_is_outside(figures):
    plots.learning_curves(ROWS, COLORS, "c")
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    assert fig.legends[0].get_window_extent(renderer).y1 <= fig.axes[0].get_window_extent(renderer).y0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["500", "1,000"]


def test_no_pareto_front_no_legend_entry():
    nan_rows = board([("nn", 100, (math.nan,), 1.0, None), ("ntk", 100, (math.nan,), 2.0, None)])
    assert not any(r.pareto for r in nan_rows)
    plot = plots.accuracy_vs_time(nan_rows, COLORS, "n")
    assert "Pareto" not in plot.svg.split("</title>", 1)[1]
    assert [label for label, _ in legend_entries(plot.svg)] == ["nn", "ntk"]


def test_every_plot_has_alt_text_and_its_data():
    for plot, n_rows in ((plots.accuracy_vs_time(ROWS, COLORS, "a"), len(ROWS)),
                         (plots.seed_spread(ROWS, COLORS, "s"), len(ROWS)),
                         (plots.learning_curves(ROWS, COLORS, "c"), 2)):
        head, alt = plot.svg[:plot.svg.index(">")], html.escape(plot.alt)
        assert 'role="img"' in head and f'aria-label="{alt}"' in head and f"<title>{alt}</title>" in plot.svg
        assert len(plot.rows) == n_rows and all(len(row) == len(plot.columns) for row in plot.rows)
        assert "e+" not in " ".join(" ".join(row) for row in plot.rows)
    time_plot = plots.accuracy_vs_time(ROWS, COLORS, "a")
    wide = "nn · mlp depth=2 width=256"  # the label shows as the rows' architectures differ
    assert f"Best: {wide} at 98.5 % in 20.0 s" in time_plot.alt
    assert ("1", wide, "1,000", "20.0 s", "98.5 ± 0.7", "yes") in time_plot.rows
    nngp = next(row for row in plots.seed_spread(ROWS, COLORS, "s").rows if row[1] == "nngp · mlp")
    assert nngp[3:] == ("0: 86.0", "86.0")  # one seed: no spread


def test_the_seed_plot_fills_its_card():
    """The "Accuracy of each seed" card was half empty: a few rows drew a flat strip."""
    for rows in (ROWS[:1], ROWS[:2], ROWS):
        svg = plots.seed_spread(rows, COLORS, "s").svg
        width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
        assert height >= 0.55 * width, (len(rows), width, height)
