"""Rendering a study: ``study-<task>.html`` (static, inline SVG, every string escaped) and its
Markdown twin ``study-<task>.md``, from the runs :func:`ntkbench.study.load.load` reads back."""

from __future__ import annotations

import html
from pathlib import Path

from ntkbench.leaderboard.render import escape_markdown
from ntkbench.study.load import load
from ntkbench.study.sections import sections

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
    frame, study_id = load(task, tracking_uri, study_id)
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
        for heading, question, svg, answers, columns, rows, note in sections(frame, tracking_uri):
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
