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
from ntkbench.leaderboard.render import (ACCURACY, COLUMNS, CSV_COLUMNS, RENDERED, escape_markdown, render, render_csv,
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
    body = [dict(zip(COLUMNS, md_cells(ln))) for ln in tables if md_cells(ln)[0].isdigit()]
    wide = next(c for c in body if c["config"].startswith("mlp depth=2"))
    fingerprint = make_record().fingerprint
    assert [wide[c] for c in ("rank", "method", ACCURACY, "config", "n_train")] == [
        "1", "nn", "96.0 ± 1.0 (3 seeds)", f"mlp depth=2 width=256 ({fingerprint})", "100"]
    assert (wide["fit time"], wide["total time"], wide["peak memory"], wide["parameters"]) == (
        "8.00 s", "10.0 s", "100 MB", "1,000")
    narrow = next(c for c in body if c["config"].startswith("mlp depth=1"))
    assert narrow[ACCURACY] == "60.0 (1 seed)" and narrow["source"] == "local"  # one seed: no spread
    ntk = next(c for c in body if c["method"] == "ntk")
    assert ntk["commit"] == "mixed" and ntk["source"] == "self-reported" and ntk["config"].startswith("mlp (")
    assert ntk[ACCURACY] == "94.0 ± 0.0 (2 seeds)"  # two seeds that agree: said, not hidden
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
    assert "seed 0: 60.0 % (latest of 2 runs)" in page
    assert 'title="verified by Ann on 2026-12-05"' in page


def test_html_escaping_and_content(rows, tmp_path: Path):
    render(rows, tmp_path)
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert ">a|b</td>" in page
    # a table per task, and each plot (no task has two n_train: no learning curves) with its data
    assert page.count('<table class="sortable"') == 2 and page.count("<svg") == page.count('<table class="data"') == 2 * 2
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


def test_numbers_read_in_human_units(tmp_path: Path):
    """The breast-cancer entk fit time read "1e+03 ms", and one seed "± 0.00 (1 seed)"."""
    results = local(make_record("breast_cancer", "entk", seed=0, acc=0.9561, total=1.2495, peak=13530.0,
                                n_params=1_234_567),
                    *(make_record("breast_cancer", "nn", seed=s, acc=a, total=4000.0, peak=0.05)
                      for s, a in enumerate((0.95, 0.96))))
    render(aggregate(results), tmp_path)
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    body = {c["method"]: c for c in (dict(zip(COLUMNS, md_cells(ln))) for ln in md.splitlines()
                                     if ln.startswith("| ") and md_cells(ln)[0].isdigit())}
    entk, nn = body["entk"], body["nn"]
    assert (entk["fit time"], entk["predict time"], entk["peak memory"], entk["parameters"]) == (
        "1.00 s", "250 ms", "13.2 GB", "1,234,567")
    assert entk[ACCURACY] == "95.6 (1 seed)" and nn[ACCURACY] == "95.5 ± 0.7 (2 seeds)"
    assert (nn["total time"], nn["peak memory"]) == ("1.11 h", "0.0500 MB")
    for text in (md, page):
        assert not re.search(r"\de[+-]\d", text.split("<script>")[0]) and "± 0.00" not in text
    assert "95.6<span class=\"seeds\">1 seed</span>" in page and "95.5 ± 0.7<span" in page
