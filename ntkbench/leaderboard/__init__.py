"""The leaderboard: records from MLflow runs and committed entries, ranked and rendered.

``build`` reads both sources and writes ``<out>/README.md`` and ``<out>/site/index.html``. It
only reads data: nothing named in an entry is imported or run.
"""

from __future__ import annotations

from pathlib import Path

from ntkbench.leaderboard.entries import Problem, load_entries, records_from_mlflow
from ntkbench.leaderboard.render import render


def build(tracking_uri: str | None, entries_dir: Path, out_dir: Path) -> tuple[int, list[Problem]]:
    """Render the leaderboard; returns the number of records shown and the skipped bad entries."""
    records = records_from_mlflow(tracking_uri)
    entry_records, problems = load_entries(entries_dir) if entries_dir.exists() else ([], [])
    records += entry_records
    render(records, out_dir, problems=[str(p) for p in problems])
    return len(records), problems
