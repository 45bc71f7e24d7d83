"""Turn :class:`~ntkbench.leaderboard.record.Record` s (one per seed) into the ranked leaderboard:
a Markdown ``README.md`` and a static ``site/index.html`` (no server, no CDN: CSS, JavaScript
and the plots' SVG are all inline).

- :func:`aggregate` groups the records by (task, method, arch, n_train) into :class:`Row` s,
  ranked per task and marked when on the task's accuracy/time Pareto front.
- :func:`render` writes both files; :func:`render_markdown` and :func:`render_html` return
  their text.

Rules, so that the board reads the same everywhere:

- ``acc_mean`` is the mean test accuracy over the group's records, ``acc_std`` the sample
  standard deviation (0 for one record); times are means, ``peak_memory_mb`` and ``n_params``
  maxima. Records are sorted (seed, source, finished_at) before any sum, so the result does not
  depend on the input order.
- ``commit``: the common commit, or ``"mixed"`` when the records come from several (all of them
  are in ``commits``, and the page lists them in a tooltip). ``device``: the common device, or
  the distinct devices joined by ``", "``.
- Status of a record: ``verified`` when reproduced by the maintainers (``Record.verified``),
  otherwise ``local`` for an MLflow run (``source`` ``mlflow:...``) and ``self-reported`` for a
  committed entry. A row's ``status`` joins its records' distinct statuses with ``" + "``;
  ``verified`` is true only when every record is verified.
- Rank, per task: higher ``acc_mean`` first (compared at 12 decimals, so means of equal
  accuracies tie despite float rounding), then lower ``time_total_s``, then method, arch and
  n_train; ranks are 1, 2, 3, ... with no shared places. A NaN accuracy or time ranks last.
- Pareto front, per task: a row is on it when no other row of the task has a ``time_total_s`` at
  most as large and an ``acc_mean`` at least as large, one of the two strictly (rows with a NaN
  or infinite accuracy or time are left out of the front).

Every string from a record is escaped (HTML with :func:`html.escape`, Markdown with
:func:`escape_markdown`), and the output is byte-identical for the same records: nothing
depends on the time of rendering; the page shows the data's latest ``finished_at``.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ntkbench.leaderboard import plots
from ntkbench.leaderboard.record import Record

__all__ = ["Row", "aggregate", "pareto_front", "render", "render_markdown", "render_html", "escape_markdown"]

HOW_TO_RUN = "make bench"
_TIE_DECIMALS = 12
COLUMNS = (
    "rank", "method", "architecture", "n_train", "test accuracy, % (mean ± std, seeds)",
    "fit time", "predict time", "total time", "peak memory", "parameters", "device", "commit",
    "verified", "Pareto",
)
PARETO_MARK = "★"
_NUMERIC = frozenset(COLUMNS[i] for i in (0, 3, 4, 5, 6, 7, 8, 9))
_LEGEND = (
    f"{PARETO_MARK} marks the task's Pareto front over total wall-clock time and mean test accuracy "
    "(no other entry is both as fast and as accurate). Times are means over seeds, peak memory the "
    "maximum. verified: reproduced by the maintainers; self-reported: a committed entry not yet "
    "reproduced; local: an MLflow run on this machine. commit \"mixed\": the seeds come from "
    "several commits."
)


@dataclass(frozen=True)
class Row:
    """One leaderboard entry: every seed of a (task, method, arch, n_train).

    ``accuracies`` and ``seed_ids`` list the per-record test accuracies and seeds in seed order;
    ``commits`` the distinct full commits; ``finished_at`` the latest of the records'.
    """

    task: str
    method: str
    arch: str
    n_train: int
    acc_mean: float
    acc_std: float
    seeds: int
    time_fit_s: float
    time_predict_s: float
    time_total_s: float
    peak_memory_mb: float
    n_params: int
    device: str
    commit: str
    verified: bool
    status: str
    rank: int
    pareto: bool
    accuracies: tuple[float, ...]
    seed_ids: tuple[int, ...]
    commits: tuple[str, ...]
    finished_at: str


def _status(record: Record) -> str:
    if record.verified:
        return "verified"
    return "local" if record.source.startswith("mlflow:") else "self-reported"


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _sample_std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), 0 for one value, NaN when a value is not finite."""
    if not all(math.isfinite(x) for x in xs):
        return math.nan
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _num(x: float, nan_as: float) -> float:
    return nan_as if math.isnan(x) else x


def _rank_key(row: Row) -> tuple[float, float, str, str, int]:
    acc = _num(row.acc_mean, -math.inf)
    acc = round(acc, _TIE_DECIMALS) if math.isfinite(acc) else acc
    return (-acc, _num(row.time_total_s, math.inf), row.method, row.arch, row.n_train)


def _dominates(a: Row, b: Row) -> bool:
    at, bt = _num(a.time_total_s, math.inf), _num(b.time_total_s, math.inf)
    aa, ba = _num(a.acc_mean, -math.inf), _num(b.acc_mean, -math.inf)
    return at <= bt and aa >= ba and (at < bt or aa > ba)


def pareto_front(rows: Sequence[Row]) -> list[Row]:
    """The rows on their task's Pareto front (lower ``time_total_s``, higher ``acc_mean``), in the
    input order. Rows of different tasks never dominate each other; equal rows are both kept;
    a row with a non-finite accuracy or time is never on the front."""
    ok = [r for r in rows if math.isfinite(r.acc_mean) and math.isfinite(r.time_total_s)]
    return [r for r in ok if not any(o.task == r.task and _dominates(o, r) for o in ok)]


def aggregate(records: Iterable[Record]) -> list[Row]:
    """Group records by (task, method, arch, n_train) into ranked rows, sorted by task then rank,
    with ``pareto`` set for the rows on their task's front (see the module's rules)."""
    groups: dict[tuple[str, str, str, int], list[Record]] = {}
    for rec in records:
        groups.setdefault((rec.task, rec.method, rec.arch, rec.n_train), []).append(rec)
    unranked: list[Row] = []
    for (task, method, arch, n_train), recs in groups.items():
        recs = sorted(recs, key=lambda r: (r.seed, r.source, r.finished_at))
        accs = [float(r.test_accuracy) for r in recs]
        commits = tuple(sorted({r.commit for r in recs}))
        devices = sorted({r.device for r in recs})
        unranked.append(Row(
            task=task, method=method, arch=arch, n_train=n_train,
            acc_mean=_mean(accs), acc_std=_sample_std(accs),
            seeds=len(recs),
            time_fit_s=_mean([r.time_fit_s for r in recs]),
            time_predict_s=_mean([r.time_predict_s for r in recs]),
            time_total_s=_mean([r.time_total_s for r in recs]),
            peak_memory_mb=max(r.peak_memory_mb for r in recs),
            n_params=max(r.n_params for r in recs),
            device=", ".join(devices),
            commit=commits[0] if len(commits) == 1 else "mixed",
            verified=all(r.verified for r in recs),
            status=" + ".join(sorted({_status(r) for r in recs})),
            rank=0, pareto=False, accuracies=tuple(accs), seed_ids=tuple(r.seed for r in recs),
            commits=commits, finished_at=max(r.finished_at for r in recs),
        ))
    rows: list[Row] = []
    for task in sorted({r.task for r in unranked}):
        ranked = sorted((r for r in unranked if r.task == task), key=_rank_key)
        ranked = [replace(r, rank=i) for i, r in enumerate(ranked, start=1)]
        front = {id(r) for r in pareto_front(ranked)}
        rows.extend(replace(r, pareto=id(r) in front) for r in ranked)
    return rows


# -- formatting ---------------------------------------------------------------------------------

def _fmt_accuracy(row: Row) -> str:
    seeds = f"{row.seeds} seed" + ("" if row.seeds == 1 else "s")
    return f"{100 * row.acc_mean:.2f} ± {100 * row.acc_std:.2f} ({seeds})"


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return str(s)
    if s < 1:
        return f"{1000 * s:.3g} ms"
    if s < 100:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_memory(mb: float) -> str:
    if not math.isfinite(mb):
        return str(mb)
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _short_commit(commit: str) -> str:
    return commit if commit == "mixed" else commit[:10]


def _cells(row: Row) -> list[tuple[str, str | None]]:
    """The displayed text of each column, with the numeric sort key where the text is not one."""
    return [
        (str(row.rank), None),
        (row.method, None),
        (row.arch, None),
        (str(row.n_train), None),
        (_fmt_accuracy(row), repr(row.acc_mean)),
        (_fmt_seconds(row.time_fit_s), repr(row.time_fit_s)),
        (_fmt_seconds(row.time_predict_s), repr(row.time_predict_s)),
        (_fmt_seconds(row.time_total_s), repr(row.time_total_s)),
        (_fmt_memory(row.peak_memory_mb), repr(row.peak_memory_mb)),
        (f"{row.n_params:,}", str(row.n_params)),
        (row.device, None),
        (_short_commit(row.commit), None),
        (row.status, None),
        (PARETO_MARK if row.pareto else "", "1" if row.pareto else "0"),
    ]


def _by_task(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.task, []).append(r)
    return out


def _summary(records: Sequence[Record], rows: Sequence[Row]) -> str:
    latest = max(r.finished_at for r in records)
    tasks = len({r.task for r in rows})
    return (f"{len(records)} runs in {len(rows)} entries over {tasks} task" + ("" if tasks == 1 else "s")
            + f"; latest run finished at {latest}.")


# -- Markdown -----------------------------------------------------------------------------------

_MD_ESCAPES = {
    "\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " ", "\t": " ",
}


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown that is safe in a table cell: backslash escapes for
    ``\\ | ` * _ [ ]``, entities for ``& < >``, and line breaks and tabs as spaces."""
    out = text.replace("\r\n", " ")
    return "".join(_MD_ESCAPES.get(ch, ch) for ch in out)


def render_markdown(records: Sequence[Record], problems: Sequence[str] = ()) -> str:
    """The leaderboard as Markdown: one table per task, then the problems, if any."""
    records = list(records)
    lines = ["# ntkbench leaderboard", ""]
    rows = aggregate(records)
    if not rows:
        lines += ["**No runs yet.** Create runs with `" + HOW_TO_RUN + "` (every method on the "
                  "`digits` task, logged to MLflow), then render the leaderboard again.", ""]
    else:
        lines += [_summary(records, rows), "", escape_markdown(_LEGEND), ""]
        for task, task_rows in _by_task(rows).items():
            lines += [f"## {escape_markdown(task)}", ""]
            lines.append("| " + " | ".join(escape_markdown(c) for c in COLUMNS) + " |")
            lines.append("|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|")
            for r in task_rows:
                lines.append("| " + " | ".join(escape_markdown(text) for text, _ in _cells(r)) + " |")
            lines.append("")
    if problems:
        lines += ["## Problems", "", "These entry files could not be read and are left out:", ""]
        lines += [f"- {escape_markdown(p)}" for p in problems]
        lines.append("")
    return "\n".join(lines)



# -- HTML ---------------------------------------------------------------------------------------

def _e(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
:root { color-scheme: light; --fg: #1d2127; --muted: #5b6470; --line: #d8dde3; --head: #f3f5f7; --accent: #2458a6; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1320px; padding: 1.5rem 1.5rem 3rem; color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { margin: 0 0 .25rem; font-size: 1.8rem; }
h2 { margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--line); }
h3 { margin: 1.4rem 0 .4rem; font-size: 1.05rem; color: var(--muted); }
p.note, p.summary { color: var(--muted); margin: .3rem 0; }
nav a { margin-right: 1rem; color: var(--accent); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: .3rem .4rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: var(--head); font-weight: 600; white-space: normal; vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pareto td { background: #fff8e1; }
td.pareto { color: #b7791f; text-align: center; }
td.status-verified { color: #1e7d32; font-weight: 600; }
th.js-sort { cursor: pointer; user-select: none; }
th.js-sort:hover, th.js-sort:focus { background: #e4e9ef; outline: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .7em; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .7em; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1rem; margin-top: 1rem; }
figure { margin: 0; padding: .5rem; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-bottom: .25rem; }
svg.plot { width: 100%; height: auto; display: block; }
.problems { border: 1px solid #e0a800; background: #fff8e1; border-radius: 6px; padding: .5rem 1rem; }
.empty { font-size: 1.1rem; padding: 1rem; border: 1px dashed var(--line); border-radius: 6px; }
code { background: var(--head); padding: .05rem .3rem; border-radius: 3px; }
""".strip()

# Sort a table by a clicked (or Enter-pressed) header: numbers (the cell's data-sort, else its
# text) compare as numbers, text naturally; a second click reverses. Without JS the page is
# unchanged, in rank order.
_JS = """
(function () {
  function key(cell) {
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var n = Number(v.replace(/,/g, ""));
    return v !== "" && !isNaN(n) ? { n: n } : { s: v };
  }
  function compare(a, b) {
    if ("n" in a && "n" in b) return a.n - b.n;
    if ("n" in a) return -1;
    if ("n" in b) return 1;
    return a.s.localeCompare(b.s, undefined, { numeric: true, sensitivity: "base" });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      th.classList.add("js-sort");
      th.title = "Sort by " + th.textContent.trim();
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return { row: row, key: key(row.cells[col]), i: i };
        });
        rows.sort(function (x, y) { return (asc ? 1 : -1) * compare(x.key, y.key) || x.i - y.i; });
        rows.forEach(function (x) { body.appendChild(x.row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); }
      });
    });
  });
})();
""".strip()


def _html_table(task_rows: Sequence[Row], index: int) -> str:
    head = "".join(
        '<th scope="col"' + (' class="num"' if c in _NUMERIC else "")
        + (' aria-sort="ascending"' if i == 0 else "") + f">{_e(c)}</th>"
        for i, c in enumerate(COLUMNS)
    )
    body = []
    for r in task_rows:
        cells = []
        for col, (text, sort) in zip(COLUMNS, _cells(r)):
            classes = ["num"] if col in _NUMERIC else []
            attrs = ""
            if col == "Pareto":
                classes = ["pareto"]
            elif col == "verified":
                classes.append("status-" + ("verified" if r.verified else "other"))
            elif col == "commit":
                attrs += f' title="{_e(", ".join(r.commits))}"'
            elif col.startswith("test accuracy"):
                per_seed = ", ".join(f"seed {s}: {100 * a:.2f}" for s, a in zip(r.seed_ids, r.accuracies))
                attrs += f' title="{_e(per_seed)}"'
            if sort is not None:
                attrs += f' data-sort="{_e(sort)}"'
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}{attrs}>{_e(text)}</td>")
        tr_cls = ' class="pareto"' if r.pareto else ""
        body.append(f"<tr{tr_cls}>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable" id="table-{index}">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n<figcaption>{_e(caption)}</figcaption>\n{svg}</figure>"


def render_html(records: Sequence[Record], problems: Sequence[str] = ()) -> str:
    """The leaderboard as one self-contained HTML page: tables, plots and problems."""
    records = list(records)
    rows = aggregate(records)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ntkbench leaderboard</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
        "<header><h1>ntkbench leaderboard</h1>",
        "<p class=\"note\">Neural networks against their NTK/NNGP kernel regressions, on the same tasks.</p>",
    ]
    by_task = _by_task(rows)
    if rows:
        parts.append(f'<p class="summary">{_e(_summary(records, rows))}</p>')
        parts.append("<nav>" + "".join(f'<a href="#task-{i}">{_e(t)}</a>' for i, t in enumerate(by_task)) + "</nav>")
    parts.append("</header>")
    parts.append("<main>")
    if problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        parts.append('<section class="problems" id="problems"><h2>Problems</h2>'
                     f"<p>These entry files could not be read and are left out:</p><ul>{items}</ul></section>")
    if not rows:
        parts.append(f'<p class="empty"><strong>No runs yet.</strong> Create runs with <code>{_e(HOW_TO_RUN)}</code> '
                     "(every method on the <code>digits</code> task, logged to MLflow), then render the "
                     "leaderboard again.</p>")
    else:
        parts.append(f'<p class="note">{_e(_LEGEND)} Click a column header to sort.</p>')
        colors = plots.method_colors(rows)
        for i, (task, task_rows) in enumerate(by_task.items()):
            parts.append(f'<section id="task-{i}">\n<h2>{_e(task)}</h2>')
            parts.append(_html_table(task_rows, i))
            figs = [_figure(plots.accuracy_vs_time(task_rows, colors, f"t{i}-time"),
                            "Accuracy vs wall-clock time (log scale); circled: Pareto front")]
            curves = plots.learning_curves(task_rows, colors, f"t{i}-curves")
            if curves is not None:
                figs.append(_figure(curves, "Learning curves: accuracy vs n_train"))
            figs.append(_figure(plots.seed_spread(task_rows, colors, f"t{i}-seeds"),
                                "Accuracy of each seed"))
            parts.append('<div class="plots">\n' + "\n".join(figs) + "\n</div>\n</section>")
    parts += ["</main>", f"<script>\n{_JS}\n</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


def render(records: Iterable[Record], out_dir: Path, problems: Sequence[str] = ()) -> None:
    """Write ``out_dir/README.md`` and ``out_dir/site/index.html`` (UTF-8, ``\\n`` line ends),
    creating the folders. ``problems`` (bad entry files, one line each) are listed in both."""
    records = list(records)
    out_dir = Path(out_dir)
    site = out_dir / "site"
    site.mkdir(parents=True, exist_ok=True)
    (out_dir / "README.md").write_text(render_markdown(records, problems), encoding="utf-8", newline="\n")
    (site / "index.html").write_text(render_html(records, problems), encoding="utf-8", newline="\n")
