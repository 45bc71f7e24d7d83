"""Render the ranked rows (:mod:`ntkbench.leaderboard.ranking`) as the leaderboard: a Markdown
``README.md``, a static ``site/index.html`` (no server, no CDN: CSS, JavaScript and the plots'
SVG are all inline) and ``leaderboard.csv`` (one line per row, for pandas).

:func:`render` writes the three files; :func:`render_markdown`, :func:`render_html` and
:func:`render_csv` return their text. Every string from a row is escaped (HTML with
:func:`html.escape`, Markdown with :func:`escape_markdown`, CSV by the ``csv`` module), and the
output is byte-identical for the same rows: nothing depends on the time of rendering; the page
shows the data's latest ``finished_at``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ntkbench.leaderboard import plots
from ntkbench.leaderboard.ranking import VERIFIED, Row

__all__ = ["RENDERED", "render", "render_markdown", "render_html", "render_csv", "escape_markdown"]

HOW_TO_RUN = "make bench"
RENDERED = ("README.md", "site/index.html", "leaderboard.csv")
COLUMNS = (
    "rank", "method", "config", "n_train", "test accuracy, % (mean ± std, seeds)",
    "fit time", "predict time", "total time", "peak memory", "parameters", "device", "commit",
    "source", "Pareto",
)
CSV_COLUMNS = (
    "task", "method", "arch", "config", "label", "n_train", "test_accuracy_mean", "test_accuracy_std", "seeds",
    "source", "device", "time_fit_s", "time_predict_s", "time_total_s", "peak_memory_mb", "n_params", "commit",
    "rank", "pareto",
)
PARETO_MARK = "★"
_NUMERIC = frozenset(COLUMNS[i] for i in (0, 3, 4, 5, 6, 7, 8, 9))
_LEGEND = (
    f"{PARETO_MARK} marks the task's Pareto front over total wall-clock time (fit + test prediction) and "
    "mean test accuracy (no other row is both as fast and as accurate). A row is one config on one device "
    "from one source: runs that differ in any option, local runs and committed entries, and different "
    "devices are never averaged; config names the options that set a row apart from its task's other "
    "rows of the same method and architecture. Each seed counts once (the latest run of a seed is kept). "
    "Times are means over seeds; peak memory is the most a run added over its process's level at the "
    "start. verified: an entry the maintainers reproduced (leaderboard/verified.json); self-reported: a "
    "committed entry not yet reproduced; local: a run of the MLflow store not in an entry. commit "
    "\"mixed\": the seeds come from several commits."
)

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
        (row.label, row.label),
        (str(row.n_train), None),
        (_fmt_accuracy(row), repr(row.acc_mean)),
        (_fmt_seconds(row.time_fit_s), repr(row.time_fit_s)),
        (_fmt_seconds(row.time_predict_s), repr(row.time_predict_s)),
        (_fmt_seconds(row.time_total_s), repr(row.time_total_s)),
        (_fmt_memory(row.peak_memory_mb), repr(row.peak_memory_mb)),
        (f"{row.n_params:,}", str(row.n_params)),
        (row.device, None),
        (_short_commit(row.commit), None),
        (row.source, None),
        (PARETO_MARK if row.pareto else "", "1" if row.pareto else "0"),
    ]


def _by_task(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.task, []).append(r)
    return out


def _summary(rows: Sequence[Row]) -> str:
    latest = max(r.finished_at for r in rows)
    tasks = len({r.task for r in rows})
    return (f"{sum(r.seeds for r in rows)} runs in {len(rows)} rows over {tasks} task" + ("" if tasks == 1 else "s")
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


def render_markdown(rows: Sequence[Row], problems: Sequence[str] = ()) -> str:
    """The leaderboard as Markdown: one table per task, then the problems, if any. The config
    cell adds the fingerprint to the label (the page shows the whole config)."""
    lines = ["# ntkbench leaderboard", ""]
    if not rows:
        lines += ["**No runs yet.** Create runs with `" + HOW_TO_RUN + "` (every method on the "
                  "`digits` task, logged to MLflow), then render the leaderboard again.", ""]
    else:
        lines += [_summary(rows), "", escape_markdown(_LEGEND), ""]
        for task, task_rows in _by_task(rows).items():
            lines += [f"## {escape_markdown(task)}", ""]
            lines.append("| " + " | ".join(escape_markdown(c) for c in COLUMNS) + " |")
            lines.append("|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|")
            for r in task_rows:
                cells = [text for text, _ in _cells(r)]
                cells[COLUMNS.index("config")] = f"{r.label} ({r.fingerprint})"
                lines.append("| " + " | ".join(escape_markdown(text) for text in cells) + " |")
            lines.append("")
    if problems:
        lines += ["## Problems", "", "These files or runs could not be read and are left out:", ""]
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
td details pre { margin: .2rem 0; font-size: 12px; }
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


def _config_details(row: Row) -> str:
    """The label, opening onto the fingerprint and the whole config as JSON."""
    config = json.dumps(row.config.to_json(), sort_keys=True, indent=1, ensure_ascii=False)
    return (f"<details><summary>{_e(row.label)}</summary>fingerprint <code>{_e(row.fingerprint)}</code>"
            f"<pre>{_e(config)}</pre></details>")


def _per_seed(row: Row) -> str:
    """Each seed's accuracy; a seed run more than once says that its latest run is shown."""
    return ", ".join(f"seed {s}: {100 * a:.2f}" + (f" (latest of {n} runs)" if n > 1 else "")
                     for s, a, n in zip(row.seed_ids, row.accuracies, row.runs_per_seed))


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
            attrs, content = "", _e(text)
            if col == "Pareto":
                classes = ["pareto"]
            elif col == "config":
                content = _config_details(r)
            elif col == "source":
                classes.append("status-" + ("verified" if r.source == VERIFIED else "other"))
                attrs += f' title="verified by {_e(r.verified_by)}"' if r.verified_by else ""
            elif col == "commit":
                attrs += f' title="{_e(", ".join(r.commits))}"'
            elif col.startswith("test accuracy"):
                attrs += f' title="{_e(_per_seed(r))}"'
            if sort is not None:
                attrs += f' data-sort="{_e(sort)}"'
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}{attrs}>{content}</td>")
        tr_cls = ' class="pareto"' if r.pareto else ""
        body.append(f"<tr{tr_cls}>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable" id="table-{index}">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n<figcaption>{_e(caption)}</figcaption>\n{svg}</figure>"


def render_html(rows: Sequence[Row], problems: Sequence[str] = ()) -> str:
    """The leaderboard as one self-contained HTML page: tables, plots and problems."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ntkbench leaderboard</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
        "<header><h1>ntkbench leaderboard</h1>",
        "<p class=\"note\">Neural networks against their NTK/NNGP kernel regressions, on the same tasks.</p>",
    ]
    by_task = _by_task(rows)
    if rows:
        parts.append(f'<p class="summary">{_e(_summary(rows))}</p>')
        parts.append("<nav>" + "".join(f'<a href="#task-{i}">{_e(t)}</a>' for i, t in enumerate(by_task)) + "</nav>")
    parts.append("</header>")
    parts.append("<main>")
    if problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        parts.append('<section class="problems" id="problems"><h2>Problems</h2>'
                     f"<p>These files or runs could not be read and are left out:</p><ul>{items}</ul></section>")
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


def render_csv(rows: Sequence[Row]) -> str:
    """One line per row under :data:`CSV_COLUMNS`: ``config`` is the fingerprint, ``label`` the
    options that set the row apart, ``seeds`` the number of distinct seeds; numbers as Python's
    ``repr`` (full precision), so pandas reads them back exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.task, r.method, r.arch, r.fingerprint, r.label, r.n_train, repr(r.acc_mean),
                         repr(r.acc_std), r.seeds, r.source, r.device, repr(r.time_fit_s), repr(r.time_predict_s),
                         repr(r.time_total_s), repr(r.peak_memory_mb), r.n_params, r.commit, r.rank, r.pareto])
    return out.getvalue()


def render(rows: Sequence[Row], out_dir: Path, problems: Sequence[str] = ()) -> None:
    """Write :data:`RENDERED` under ``out_dir`` (UTF-8, ``\\n`` line ends), creating the folders.
    ``problems`` (files and runs left out, one line each) are listed in the README and the page."""
    out_dir = Path(out_dir)
    (out_dir / "site").mkdir(parents=True, exist_ok=True)
    texts = (render_markdown(rows, problems), render_html(rows, problems), render_csv(rows))
    for name, text in zip(RENDERED, texts):
        (out_dir / name).write_text(text, encoding="utf-8", newline="\n")
