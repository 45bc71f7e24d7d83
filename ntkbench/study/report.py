"""Rendering a study: ``study-<task>.html`` (static, inline SVG, every string escaped) and its
Markdown twin ``study-<task>.md``, from the runs :func:`ntkbench.study.load.load` reads back.

The report opens with its findings (:mod:`ntkbench.study.findings`), each linking to the
section whose tables hold its numbers; then the six sections (:mod:`ntkbench.study.sections`).
A study of several architectures adds, after the findings, the published directions with their
verdicts and, after the six sections, the sections they link to (:mod:`ntkbench.study.published`).
Runs with flips appear only in the flip section.
Section anchors are the ones GitHub gives the Markdown headings, and the HTML uses the same.
Wide tables scroll inside their own box, so the page never scrolls sideways.
"""

from __future__ import annotations

import html
from pathlib import Path

from ntkbench.leaderboard.render import escape_markdown
from ntkbench.study.findings import findings
from ntkbench.study.load import load
from ntkbench.study.published import published
from ntkbench.study.sections import Section, anchor, sections

FINDINGS, DIRECTIONS = "Findings", "Published directions"
INTERVALS = ("Accuracies pool the seeds' test predictions (k correct of n = all seeds' test examples) and carry "
             "95% Wilson score intervals, which stay within [0, 100] % and exist for one seed; they measure the "
             "test set's sampling error, and the accuracy table also shows the range over seeds. Differences of "
             "accuracies carry Newcombe's interval. Other numbers are means over seeds with 95% Student-t "
             "intervals kept to the quantity's range (none for one seed).")
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "div.t{overflow-x:auto;margin:.5em 0 1.5em}table{border-collapse:collapse;font-size:.85em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;white-space:nowrap}p.q{font-style:italic}"
        "svg.plot{max-width:100%;height:auto}ul.a li{margin:.3em 0}dl.f dt{font-weight:600;margin-top:.8em}"
        "dl.f dd{margin:.2em 0 .2em 1.2em}")


def _html_section(section: Section) -> list[str]:
    esc = html.escape
    out = [f'<h2 id="{anchor(section.heading)}">{esc(section.heading)}</h2>', f'<p class="q">{esc(section.question)}</p>']
    if section.answers:
        out.append('<ul class="a">' + "".join(f"<li>{esc(a)}</li>" for a in section.answers) + "</ul>")
    out.append(section.svg or "")
    for table in section.tables:
        out += ['<div class="t"><table><thead><tr>' + "".join(f"<th>{esc(c)}</th>" for c in table.columns)
                + "</tr></thead><tbody>", *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in table.rows),
                "</tbody></table></div>"]
    return out + [f"<p>{esc(section.note)}</p>"]


def _md_section(section: Section) -> list[str]:
    md = escape_markdown
    out = [f"## {md(section.heading)}", "", f"*{md(section.question)}*", ""]
    if section.answers:
        out += [*(f"- {md(a)}" for a in section.answers), ""]
    for table in section.tables:
        out += ["| " + " | ".join(map(md, table.columns)) + " |", "|" + "---|" * len(table.columns),
                *("| " + " | ".join(map(md, r)) + " |" for r in table.rows), ""]
    return out + [md(section.note), ""]


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
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    mdl = [f"# {md(title)}", ""]
    if frame.empty:
        what = f"study {study_id}" if study_id else "study runs"
        msg = f"No {what} yet; run `ntkbench study --task {task}`."
        head.append(f"<p>{esc(msg.split('`')[0])}<code>{esc(f'ntkbench study --task {task}')}</code>.</p>")
        mdl += [md(msg).replace("\\`", "`"), ""]
    else:
        intro = (f"Study {study_id}: {len(frame)} finished runs of the tasks {', '.join(dict.fromkeys(frame.task))}. "
                 f"{INTERVALS} The runs column lists the first 8 characters of each run's MLflow id.")
        head.append(f"<p>{esc(intro)}</p>")
        mdl += [md(intro), ""]
        runs, frame = frame, frame[~frame.flip]  # every run, and those without flips
        found = findings(frame)
        head += [f'<h2 id="{anchor(FINDINGS)}">{FINDINGS}</h2>', '<dl class="f">']
        mdl += [f"## {FINDINGS}", ""]
        for t in dict.fromkeys(f.task for f in found):
            head.append(f"<dt>{esc(t)}</dt>")
            mdl.append(f"**{md(t)}**")
            mdl.append("")
            for f in (f for f in found if f.task == t):
                head.append(f"<dd><i>{esc(f.question)}</i> {esc(f.text)} "
                            f'(<a href="#{anchor(f.link)}">{esc(f.link)}</a>)</dd>')
                mdl.append(f"- *{md(f.question)}* {md(f.text)} ([{md(f.link)}](#{anchor(f.link)}))")
            mdl.append("")
        head.append("</dl>")
        directions, extra = published(runs) if "arch" in frame else ([], [])
        if directions:
            head += [f'<h2 id="{anchor(DIRECTIONS)}">{DIRECTIONS}</h2>', '<dl class="f">']
            mdl += [f"## {DIRECTIONS}", ""]
            for d in directions:
                head.append(f"<dt>{esc(d.paper)}: {esc(d.claim)}</dt><dd>{esc(d.text)} "
                            f'(<a href="#{anchor(d.link)}">{esc(d.link)}</a>)</dd>')
                mdl.append(f"- **{md(d.paper)}**: {md(d.claim)}. {md(d.text)} ([{md(d.link)}](#{anchor(d.link)}))")
            head.append("</dl>")
            mdl.append("")
        for section in [*sections(frame, tracking_uri), *extra]:
            head += _html_section(section)
            mdl += _md_section(section)
    head += ["</body>", "</html>", ""]
    path = out_dir / f"study-{task}.html"
    path.write_text("\n".join(h for h in head if h), encoding="utf-8")
    (out_dir / f"study-{task}.md").write_text("\n".join(mdl).rstrip("\n") + "\n", encoding="utf-8")
    return path
