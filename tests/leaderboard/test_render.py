"""The leaderboard's files: Markdown and HTML tables, the config one click away, the CSV,
escaping and determinism."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
from board_records import make_record, local

from ntkbench.leaderboard.ranking import SELF_REPORTED, VERIFIED, Result, aggregate
from ntkbench.leaderboard.render import (COLUMNS, CSV_COLUMNS, RENDERED, escape_markdown, render, render_csv,
                                         render_markdown)

SCRIPT = "<script>alert(1)</script>"
PIPE = "a|b"
REQUIRED_CSV = ("task", "method", "arch", "config", "n_train", "test_accuracy_mean", "test_accuracy_std", "seeds",
                "source", "device")


def make_results() -> list[Result]:
    results = local(*(make_record("digits", "nn", seed=s, acc=a, total=10.0) for s, a in enumerate((0.95, 0.96, 0.97))))
    results += local(make_record("digits", "nn", seed=0, acc=0.5, arch_options={"depth": 1, "width": 64},
                                 finished_at="2026-12-03T00:00:00.000+00:00"),
                     make_record("digits", "nn", seed=0, acc=0.6, arch_options={"depth": 1, "width": 64},
                                 finished_at="2026-12-04T00:00:00.000+00:00"))  # a rerun of seed 0
    results += [Result(make_record("digits", "ntk", seed=s, acc=0.94, total=2.0, commit="f" * 40 if s else "a" * 40),
                       SELF_REPORTED) for s in (0, 1)]
    results += [Result(make_record("wine", SCRIPT, seed=s, acc=0.9, total=3.0), VERIFIED, "Ann on 2026-12-05")
                for s in (0, 1)]
    results += local(make_record("wine", PIPE, seed=0, acc=0.8, total=1.0))
    return results


@pytest.fixture
def rows():
    return aggregate(make_results())


def md_cells(line: str) -> list[str]:
    """Split a Markdown table row on unescaped pipes."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_table(rows, tmp_path: Path):
    render(rows, tmp_path)
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    tables = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = md_cells(tables[0])
    assert header == [escape_markdown(c) for c in COLUMNS]
    assert all(len(md_cells(ln)) == len(header) for ln in tables), "a row broke the table"
    assert len(tables) == 2 * 2 + len(rows)  # header + rule per task
    body = [md_cells(ln) for ln in tables if md_cells(ln)[0].isdigit()]
    wide = next(c for c in body if c[2].startswith("mlp depth=2"))
    fingerprint = make_record().fingerprint
    assert wide[:5] == ["1", "nn", f"mlp depth=2 width=256 ({fingerprint})", "100", "96.00 ± 1.00 (3 seeds)"]
    narrow = next(c for c in body if c[2].startswith("mlp depth=1"))
    assert narrow[4] == "60.00 ± 0.00 (1 seed)" and narrow[12] == "local"
    ntk = next(c for c in body if c[1] == "ntk")
    assert ntk[11] == "mixed" and ntk[12] == "self-reported" and ntk[2].startswith("mlp (")
    assert SCRIPT not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "a\\|b" in md
    assert "## digits" in md and "## wine" in md and "9 runs in 5 rows over 2 tasks" in md


def test_escape_markdown():
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("`x`*y*_z_[l]") == "\\`x\\`\\*y\\*\\_z\\_\\[l\\]"
    assert escape_markdown("<b>&\nnext\r\nline") == "&lt;b&gt;&amp; next line"
    assert escape_markdown("back\\slash|") == "back\\\\slash\\|"


def test_html_shows_the_config_one_click_away(rows, tmp_path: Path):
    render(rows, tmp_path)
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    details = re.findall(r"<details><summary>([^<]*)</summary>fingerprint <code>([0-9a-f]{16})</code>"
                         r"<pre>(.*?)</pre></details>", page, flags=re.S)
    assert len(details) == len(rows)
    for label, fingerprint, config in details:
        row = next(r for r in rows if r.fingerprint == fingerprint and r.label == label)
        assert json.loads(config.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                          .replace("&#x27;", "'").replace("&amp;", "&")) == row.config.to_json()
    assert "seed 0: 60.00 (latest of 2 runs)" in page
    assert 'title="verified by Ann on 2026-12-05"' in page


def test_html_escaping_and_content(rows, tmp_path: Path):
    render(rows, tmp_path)
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert ">a|b</td>" in page
    assert page.count("<table") == 2 and page.count("<svg") == 2 * 2  # no task has two n_train
    assert page.count('<tr class="pareto">') == sum(r.pareto for r in rows)
    assert 'href="http' not in page and 'src="http' not in page and "@import" not in page
    assert "2026-12-04T00:00:00.000+00:00" in page  # the data's latest finished_at
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids"


def test_csv_has_one_line_per_row_and_loads_with_pandas(rows, tmp_path: Path):
    render(rows, tmp_path)
    frame = pd.read_csv(tmp_path / "leaderboard.csv", dtype={"config": str, "commit": str})
    assert list(frame.columns) == list(CSV_COLUMNS) and set(REQUIRED_CSV) <= set(frame.columns)
    assert len(frame) == len(rows)
    for line, row in zip(frame.to_dict("records"), rows):
        assert (line["task"], line["method"], line["arch"], line["config"], line["label"]) == (
            row.task, row.method, row.arch, row.fingerprint, row.label)
        assert (line["n_train"], line["seeds"], line["source"], line["device"]) == (
            row.n_train, row.seeds, row.source, row.device)
        assert line["test_accuracy_mean"] == row.acc_mean and line["test_accuracy_std"] == row.acc_std
        assert line["time_total_s"] == row.time_total_s and line["rank"] == row.rank
        assert line["pareto"] == row.pareto
    assert render_csv([]).splitlines() == [",".join(CSV_COLUMNS)]


def test_deterministic(tmp_path: Path):
    results = make_results()
    render(aggregate(results), tmp_path / "a")
    shuffled = list(results)
    random.Random(1).shuffle(shuffled)
    render(aggregate(shuffled), tmp_path / "b")
    render(aggregate(results), tmp_path / "a2")
    for name in RENDERED:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "a2" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_problems_listed(rows, tmp_path: Path):
    render(rows, tmp_path, problems=["entries/bad.json: <file>: not valid JSON", "x|<i>y</i>"])
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "## Problems" in md and "entries/bad.json" in md and "x\\|&lt;i&gt;y&lt;/i&gt;" in md
    assert "Problems" in page and "entries/bad.json: &lt;file&gt;: not valid JSON" in page
    assert "<i>y</i>" not in page


def test_empty(tmp_path: Path):
    render([], tmp_path, problems=["entries/bad.json: not JSON"])
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "No runs yet" in text and "make bench" in text and "entries/bad.json" in text
    assert "<table" not in page and "<svg" not in page
    assert render_markdown([]).startswith("# ntkbench leaderboard")
