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
from collections.abc import Sequence
from pathlib import Path

from ntkbench import format as fmt
from ntkbench.leaderboard import plots
from ntkbench.leaderboard.assets import CSS, JS
from ntkbench.leaderboard.ranking import VERIFIED, Row

__all__ = ["RENDERED", "render", "render_markdown", "render_html", "render_csv", "escape_markdown"]

HOW_TO_RUN = "make bench"
RENDERED = ("README.md", "site/index.html", "leaderboard.csv")
COLUMNS = (
    "rank", "method", "test accuracy, %", "config", "n_train", "fit time", "predict time",
    "total time", "peak memory", "parameters", "device", "commit", "source", "Pareto",
)
ACCURACY = COLUMNS[2]
STICKY = 3  # rank, method and accuracy stay in view while a wide table scrolls sideways
CSV_COLUMNS = (
    "task", "method", "arch", "config", "label", "n_train", "test_accuracy_mean", "test_accuracy_std", "seeds",
    "source", "device", "time_fit_s", "time_predict_s", "time_total_s", "peak_memory_mb", "n_params", "commit",
    "rank", "pareto",
)
PARETO_MARK = "★"
_NUMERIC = frozenset(COLUMNS[i] for i in (0, 2, 4, 5, 6, 7, 8, 9))
_LEGEND = (
    f"{PARETO_MARK} marks the task's Pareto front over total wall-clock time (fit + test prediction) and "
    "mean test accuracy (no other row is both as fast and as accurate). A row is one config on one device "
    "from one source: runs that differ in any option, local runs and committed entries, and different "
    "devices are never averaged; accuracy is the mean over seeds in percent, ± the seeds' standard "
    "deviation (none for one seed); config names the options that set a row apart from its task's other "
    "rows of the same method and architecture. Each seed counts once (the latest run of a seed is kept). "
    "Times are means over seeds; peak memory is the most a run added over its process's level at the "
    "start. verified: an entry the maintainers reproduced (leaderboard/verified.json); self-reported: a "
    "committed entry not yet reproduced; local: a run of the MLflow store not in an entry. commit "
    "\"mixed\": the seeds come from several commits."
)

# -- formatting (ntkbench.format) ----------------------------------------------------------------

def _fmt_accuracy(row: Row) -> str:
    return f"{fmt.accuracy(row.acc_mean, row.acc_std, row.seeds)} ({fmt.seeds(row.seeds)})"


def _short_commit(commit: str) -> str:
    return commit if commit == "mixed" else commit[:10]


def _cells(row: Row) -> list[tuple[str, str | None]]:
    """The displayed text of each column, with the numeric sort key where the text is not one."""
    return [
        (str(row.rank), None),
        (row.method, None),
        (_fmt_accuracy(row), repr(row.acc_mean)),
        (row.label, row.label),
        (fmt.integer(row.n_train), str(row.n_train)),
        (fmt.seconds(row.time_fit_s), repr(row.time_fit_s)),
        (fmt.seconds(row.time_predict_s), repr(row.time_predict_s)),
        (fmt.seconds(row.time_total_s), repr(row.time_total_s)),
        (fmt.megabytes(row.peak_memory_mb), repr(row.peak_memory_mb)),
        (fmt.integer(row.n_params), str(row.n_params)),
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
    return (f"{fmt.integer(sum(r.seeds for r in rows))} runs in {fmt.integer(len(rows))} rows over {tasks} task"
            + ("" if tasks == 1 else "s")
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


def _config_details(row: Row) -> str:
    """The label, opening onto the fingerprint and the whole config as JSON."""
    config = json.dumps(row.config.to_json(), sort_keys=True, indent=1, ensure_ascii=False)
    return (f"<details><summary>{_e(row.label)}</summary>fingerprint <code>{_e(row.fingerprint)}</code>"
            f"<pre>{_e(config)}</pre></details>")


def _per_seed(row: Row) -> str:
    """Each seed's accuracy; a seed run more than once says that its latest run is shown."""
    return ", ".join(f"seed {s}: {fmt.percent(a)} %" + (f" (latest of {n} runs)" if n > 1 else "")
                     for s, a, n in zip(row.seed_ids, row.accuracies, row.runs_per_seed))


def _html_table(task_rows: Sequence[Row], index: int) -> str:
    def head_cell(i: int, c: str) -> str:
        classes = (["num"] if c in _NUMERIC else []) + ([f"sticky s{i}"] if i < STICKY else [])
        cls = f' class="{" ".join(classes)}"' if classes else ""
        return f'<th scope="col"{cls}' + (' aria-sort="ascending"' if i == 0 else "") + f">{_e(c)}</th>"

    head = "".join(head_cell(i, c) for i, c in enumerate(COLUMNS))
    body = []
    for r in task_rows:
        cells = []
        for i, (col, (text, sort)) in enumerate(zip(COLUMNS, _cells(r))):
            classes = ["num"] if col in _NUMERIC else []
            attrs, content = "", _e(text)
            if col == "Pareto":
                classes = ["pareto"]
            elif col == "config":
                classes.append("wrap")
                content = _config_details(r)
            elif col == "device":
                classes.append("wrap")
            elif col == "source":
                classes.append("status-" + ("verified" if r.source == VERIFIED else "other"))
                attrs += f' title="verified by {_e(r.verified_by)}"' if r.verified_by else ""
            elif col == "commit":
                attrs += f' title="{_e(", ".join(r.commits))}"'
            elif col == ACCURACY:
                attrs += f' title="{_e(_per_seed(r))}"'
                content = (f"{_e(fmt.accuracy(r.acc_mean, r.acc_std, r.seeds))}"
                           f'<span class="seeds">{_e(fmt.seeds(r.seeds))}</span>')
            if i < STICKY:
                classes.append(f"sticky s{i}")
            if sort is not None:
                attrs += f' data-sort="{_e(sort)}"'
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}{attrs}>{content}</td>")
        tr_cls = ' class="pareto"' if r.pareto else ""
        body.append(f"<tr{tr_cls}>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable" id="table-{index}">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _figure(plot: plots.Plot, caption: str) -> str:
    """A plot in its card: the caption, the SVG, and the data it draws in a table one click away."""
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in plot.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in plot.rows)
    return (f"<figure>\n<figcaption>{_e(caption)}</figcaption>\n{plot.svg}"
            f'<details><summary>The data in this plot</summary><div class="table-wrap"><table class="data">'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div></details>\n</figure>")


def _figures(task_rows: Sequence[Row], colors: dict[str, str], i: int) -> list[str]:
    figs = [_figure(plots.accuracy_vs_time(task_rows, colors, f"t{i}-time"),
                    "Accuracy vs total wall-clock time (log scale). Circled and numbered by rank: the Pareto front.")]
    curves = plots.learning_curves(task_rows, colors, f"t{i}-curves")
    if curves is not None:
        figs.append(_figure(curves, "Learning curves: accuracy vs n_train."))
    figs.append(_figure(plots.seed_spread(task_rows, colors, f"t{i}-seeds"),
                        "Accuracy of each seed, by rank: how much the seeds disagree."))
    return figs


def render_html(rows: Sequence[Row], problems: Sequence[str] = ()) -> str:
    """The leaderboard as one self-contained HTML page: tables, plots (each with its data) and
    problems, readable at any width from 360 px (see :mod:`ntkbench.leaderboard.assets`)."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ntkbench leaderboard</title>", f"<style>\n{CSS}\n</style>", "</head>", "<body>",
        "<header><h1>ntkbench leaderboard</h1>",
        "<p class=\"note\">Neural networks against their NTK/NNGP kernel regressions, on the same tasks.</p>",
    ]
    by_task = _by_task(rows)
    if rows:
        parts.append(f'<p class="summary">{_e(_summary(rows))} Every row: <a href="../leaderboard.csv">'
                     "leaderboard.csv</a>.</p>")
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
        parts.append('<details class="note"><summary>How to read the tables</summary>'
                     f"<p>{_e(_LEGEND)} Click a column header to sort.</p></details>")
        colors = plots.method_colors(r.method for r in rows)
        for i, (task, task_rows) in enumerate(by_task.items()):
            parts.append(f'<section id="task-{i}">\n<h2>{_e(task)}</h2>')
            parts.append(_html_table(task_rows, i))
            parts.append('<div class="plots">\n' + "\n".join(_figures(task_rows, colors, i)) + "\n</div>\n</section>")
    parts += ["</main>", f"<script>\n{JS}\n</script>", "</body>", "</html>", ""]
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
