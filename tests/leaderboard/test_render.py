"""The leaderboard renderer: aggregation, ranks, Pareto front, escaping, determinism."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from ntkbench.leaderboard.record import Record
from ntkbench.leaderboard.render import aggregate, escape_markdown, pareto_front, render, render_markdown

SCRIPT = "<script>alert(1)</script>"
PIPE = "a|b"

# (task, method, arch, n_train, per-seed accuracies, time_total_s, source kind, verified)
SPECS = [
    ("digits", "nn", "mlp", 500, (0.95, 0.96, 0.97), 10.0, "mlflow", False),
    ("digits", "nn", "mlp", 1000, (0.97, 0.98, 0.99), 20.0, "mlflow", False),
    ("digits", "ntk", "mlp", 500, (0.93, 0.94, 0.95), 2.0, "mlflow", False),
    ("digits", "nngp", "mlp", 500, (0.85, 0.86, 0.87), 1.5, "mlflow", False),  # ties entk, slower
    ("digits", "entk", "mlp", 500, (0.86, 0.86, 0.86), 1.0, "mlflow", False),
    ("digits", "taylor", "mlp", 500, (0.90, 0.91, 0.92), 30.0, "mlflow", False),  # dominated
    ("wine", SCRIPT, "mlp", 100, (0.90, 0.91, 0.92), 3.0, "entry", False),
    ("wine", PIPE, "cnn", 100, (0.80, 0.82, 0.84), 1.0, "entry", True),
    ("wine", "ntk", "mlp", 100, (0.95, 0.95, 0.95), 5.0, "entry", True),
]
EXPECTED_RANKS = {
    ("digits", "nn", 1000): 1, ("digits", "nn", 500): 2, ("digits", "ntk", 500): 3,
    ("digits", "taylor", 500): 4, ("digits", "entk", 500): 5, ("digits", "nngp", 500): 6,
    ("wine", "ntk", 100): 1, ("wine", SCRIPT, 100): 2, ("wine", PIPE, 100): 3,
}
EXPECTED_FRONT = {
    ("digits", "nn", 1000), ("digits", "nn", 500), ("digits", "ntk", 500), ("digits", "entk", 500),
    ("wine", "ntk", 100), ("wine", SCRIPT, 100), ("wine", PIPE, 100),
}


def make_records() -> list[Record]:
    records = []
    for task, method, arch, n_train, accs, total, kind, verified in SPECS:
        for seed, acc in enumerate(accs):
            # One nn seed comes from another commit, to show "mixed".
            commit = "f" * 40 if (method, n_train, seed) == ("nn", 1000, 2) else "0123456789abcdef" * 2 + "01234567"
            records.append(Record(
                task=task, method=method, arch=arch, n_train=n_train, seed=seed, test_accuracy=acc,
                time_fit_s=0.8 * total, time_predict_s=0.1 * total, time_total_s=total,
                peak_memory_mb=100.0 + seed, n_params=0 if method in ("ntk", "nngp") else 67_850,
                device="cpu", commit=commit, verified=verified,
                source=f"mlflow:run{seed}" if kind == "mlflow" else f"entry:{task}-{seed}.json",
                finished_at=f"2025-01-0{seed + 1}T12:00:00Z",
            ))
    return records


@pytest.fixture
def records() -> list[Record]:
    return make_records()


def by_key(rows):
    return {(r.task, r.method, r.n_train): r for r in rows}


def test_aggregate_means_std_and_counts(records):
    rows = by_key(aggregate(records))
    assert len(rows) == len(SPECS)
    r = rows[("digits", "nn", 500)]
    assert r.seeds == 3 and r.accuracies == (0.95, 0.96, 0.97) and r.seed_ids == (0, 1, 2)
    assert r.acc_mean == pytest.approx(0.96) and r.acc_std == pytest.approx(0.01)
    assert r.time_total_s == pytest.approx(10.0) and r.time_fit_s == pytest.approx(8.0)
    assert r.time_predict_s == pytest.approx(1.0)
    assert r.peak_memory_mb == 102.0 and r.n_params == 67_850 and r.device == "cpu"
    assert rows[("digits", "entk", 500)].acc_std == 0.0
    assert rows[("digits", "nn", 1000)].commit == "mixed"
    assert len(rows[("digits", "nn", 1000)].commits) == 2
    assert rows[("digits", "nn", 500)].commit == "0123456789abcdef" * 2 + "01234567"
    # status comes from source and verified
    assert rows[("digits", "ntk", 500)].status == "local" and not rows[("digits", "ntk", 500)].verified
    assert rows[("wine", SCRIPT, 100)].status == "self-reported"
    assert rows[("wine", PIPE, 100)].status == "verified" and rows[("wine", PIPE, 100)].verified


def test_one_seed_has_zero_std_and_mixed_status(records):
    one = [records[0]]
    (row,) = aggregate(one)
    assert row.seeds == 1 and row.acc_std == 0.0 and row.rank == 1 and row.pareto
    mixed = [r for r in records if r.task == "wine" and r.method == "ntk"]
    mixed[0] = type(mixed[0])(**{**mixed[0].__dict__, "verified": False, "source": "mlflow:x"})
    (row,) = aggregate(mixed)
    assert row.status == "local + verified" and not row.verified


def test_ranks_and_tie_goes_to_lower_time(records):
    rows = aggregate(records)
    assert {k: r.rank for k, r in by_key(rows).items()} == EXPECTED_RANKS
    # entk and nngp both average 0.86 (up to float rounding); entk is faster, so ranks first.
    got = by_key(rows)
    assert got[("digits", "entk", 500)].rank < got[("digits", "nngp", 500)].rank
    # sorted by task then rank, whatever the input order
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled) == rows
    assert [(r.task, r.rank) for r in rows] == sorted((r.task, r.rank) for r in rows)


def test_full_tie_is_ordered_by_method():
    base = make_records()[0]
    recs = [type(base)(**{**base.__dict__, "method": m}) for m in ("zeta", "alpha", "mid")]
    assert [r.method for r in aggregate(recs)] == ["alpha", "mid", "zeta"]
    assert [r.rank for r in aggregate(recs)] == [1, 2, 3]


def test_pareto_front(records):
    rows = aggregate(records)
    assert {k for k, r in by_key(rows).items() if r.pareto} == EXPECTED_FRONT
    assert {(r.task, r.method, r.n_train) for r in pareto_front(rows)} == EXPECTED_FRONT


def md_cells(line: str) -> list[str]:
    """Split a Markdown table row on unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown_table(records, tmp_path: Path):
    render(records, tmp_path)
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    tables = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = md_cells(tables[0])
    assert len(header) == 14 and "Pareto" in header[-1]
    assert all(len(md_cells(ln)) == len(header) for ln in tables), "a row broke the table"
    assert len(tables) == 2 * 2 + len(SPECS)  # header + rule per task
    rows = {md_cells(ln)[1].strip(): md_cells(ln) for ln in tables if md_cells(ln)[0].strip().isdigit()}
    nn = next(c for c in (md_cells(ln) for ln in tables) if c[1].strip() == "nn" and c[3].strip() == "1000")
    assert nn[0].strip() == "1"
    assert nn[4].strip() == "98.00 ± 1.00 (3 seeds)"
    assert nn[11].strip() == "mixed" and nn[13].strip() == "★"
    ntk = next(c for c in (md_cells(ln) for ln in tables) if c[1].strip() == "ntk" and c[3].strip() == "500")
    assert ntk[11].strip() == "0123456789" and ntk[12].strip() == "local"
    assert "nngp" in rows and md_cells(next(ln for ln in tables if "| nngp |" in ln))[13].strip() == ""
    # escaping
    assert SCRIPT not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "a\\|b" in md
    assert "## digits" in md and "## wine" in md


def test_escape_markdown():
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("`x`*y*_z_[l]") == "\\`x\\`\\*y\\*\\_z\\_\\[l\\]"
    assert escape_markdown("<b>&\nnext\r\nline") == "&lt;b&gt;&amp; next line"
    assert escape_markdown("back\\slash|") == "back\\\\slash\\|"


def test_html_escaping_and_content(records, tmp_path: Path):
    render(records, tmp_path)
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert ">a|b</td>" in page
    assert page.count("<table") == 2 and page.count("<svg") == 2 * 2 + 1  # learning curves: digits only
    assert "98.00 ± 1.00 (3 seeds)" in page
    assert page.count('<tr class="pareto">') == len(EXPECTED_FRONT)
    assert 'href="http' not in page and 'src="http' not in page and "@import" not in page
    assert "2025-01-03T12:00:00Z" in page  # the data's latest finished_at
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids"


def test_deterministic(records, tmp_path: Path):
    render(records, tmp_path / "a")
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    render(shuffled, tmp_path / "b")
    render(records, tmp_path / "a2")
    for name in ("README.md", "site/index.html"):
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "a2" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes()


def test_problems_listed(records, tmp_path: Path):
    render(records, tmp_path, problems=["entries/bad.json: missing field 'seed'", "x|<i>y</i>"])
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "## Problems" in md and "entries/bad.json" in md and "x\\|&lt;i&gt;y&lt;/i&gt;" in md
    assert "Problems" in page and "entries/bad.json: missing field &#x27;seed&#x27;" in page
    assert "<i>y</i>" not in page


def test_empty(tmp_path: Path):
    render([], tmp_path, problems=["entries/bad.json: not JSON"])
    md = (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "No runs yet" in text and "make bench" in text and "entries/bad.json" in text
    assert "<table" not in page and "<svg" not in page
    assert aggregate([]) == [] and render_markdown([]).startswith("# ntkbench leaderboard")


def test_nan_accuracy_ranks_last_and_is_off_the_front(records):
    from dataclasses import replace

    bad = [replace(r, method="broken", test_accuracy=float("nan"), time_total_s=0.0) for r in records[:3]]
    rows = [r for r in aggregate(records + bad) if r.task == "digits"]
    assert rows[-1].method == "broken" and not rows[-1].pareto
    assert sum(r.pareto for r in rows) == 4
