"""The leaderboard: the local MLflow runs and the committed entries, ranked and rendered.

``build`` reads both sources (or the entries alone) and writes ``README.md``,
``site/index.html`` and ``leaderboard.csv`` under a folder; ``stale`` says which committed files
differ from what the entries render to. Reading only parses data: nothing named in an entry is
imported or run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ntkbench.leaderboard.entries import load_entries
from ntkbench.leaderboard.export import records_from_mlflow
from ntkbench.leaderboard.ranking import Row, aggregate, combine
from ntkbench.leaderboard.render import RENDERED, render
from ntkbench.leaderboard.schema import Problem
from ntkbench.record import RunRecord

__all__ = ["build", "stale"]


def build(tracking_uri: str | None, entries_dir: Path, out_dir: Path, verified_file: Path | None = None,
          entries_only: bool = False) -> tuple[list[Row], list[Problem]]:
    """Render the entries of ``entries_dir`` (verified per ``verified_file``, by default the one
    beside the folder) and, unless ``entries_only``, the FINISHED runs of the store; returns the
    rows shown and the files or runs left out."""
    results, problems = load_entries(entries_dir, verified_file)
    local: list[RunRecord] = []
    if not entries_only:
        from ntkbench.tracking.sync import report_dead_runs  # lazily: the tracking package imports torch

        report_dead_runs(tracking_uri)  # one line when killed runs of the store are still RUNNING
        local, found = records_from_mlflow(tracking_uri)
        problems += found
    rows = aggregate(combine(local, results))
    render(rows, out_dir, problems=[str(p) for p in problems])
    return rows, problems


def stale(entries_dir: Path, committed_dir: Path, verified_file: Path | None = None) -> list[Path]:
    """The files of :data:`~ntkbench.leaderboard.render.RENDERED` under ``committed_dir`` that
    differ, byte for byte, from what ``entries_dir`` alone renders to (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        build(None, entries_dir, Path(tmp), verified_file, entries_only=True)
        return [Path(committed_dir) / name for name in RENDERED
                if not (Path(committed_dir) / name).is_file()
                or (Path(committed_dir) / name).read_bytes() != (Path(tmp) / name).read_bytes()]
