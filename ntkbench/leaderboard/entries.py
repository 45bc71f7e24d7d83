"""Reading the committed leaderboard files: entries and the maintainers' ``verified.json``.

``validate`` reports every problem, one line each; ``load_entries`` turns the valid entries into
:class:`~ntkbench.leaderboard.ranking.Result` s (``verified`` when the maintainers list the
entry's checksum, else ``self-reported``) and skips the others. Reading only parses JSON:
nothing named in a file is ever imported or executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ntkbench.leaderboard.ranking import SELF_REPORTED, VERIFIED, Result
from ntkbench.leaderboard.schema import MAX_FILE_BYTES, MODEL_ERROR_FIELDS, Entry, Problem, Verification, VerifiedFile
from ntkbench.record import Environment, Evaluation, RunRecord

VERIFIED_FILE = "verified.json"


def verified_path(entries_dir: Path) -> Path:
    """The maintainers' file that belongs to an entries folder: ``<entries>/../verified.json``."""
    return Path(entries_dir).parent / VERIFIED_FILE


def _read_json(path: Path) -> tuple[Any, list[Problem]]:
    """The JSON in ``path``, or None and the reason; the size is checked before reading."""
    def bad(reason: str) -> tuple[None, list[Problem]]:
        return None, [Problem(str(path), "<file>", reason)]

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return bad(f"{size} bytes; a file is limited to {MAX_FILE_BYTES} bytes (1 MiB)")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        return bad(f"not valid JSON (truncated?): {e.msg} at line {e.lineno} column {e.colno}")
    except RecursionError:
        return bad("JSON nested too deeply")
    except (OSError, ValueError) as e:  # unreadable, not UTF-8
        return bad(f"unreadable: {e}")
    if not isinstance(data, dict):
        return bad(f"expected a JSON object, got {type(data).__name__}")
    return data, []


def _model(path: Path, model: type[BaseModel]) -> tuple[Any, list[Problem]]:
    data, problems = _read_json(path)
    if data is None:
        return None, problems
    try:
        return model.model_validate(data), []
    except ValidationError as e:
        return None, [Problem(str(path), ".".join(str(p) for p in error["loc"])
                              or MODEL_ERROR_FIELDS.get(error["type"], "<file>"), error["msg"])
                      for error in e.errors(include_url=False)]


def check_entry(path: Path) -> tuple[Entry | None, list[Problem]]:
    """The entry in ``path``, or None and every problem found; the file must carry the name
    :func:`~ntkbench.leaderboard.schema.file_name` gives its content."""
    entry, problems = _model(path, Entry)
    if entry is not None and path.name != entry.file_name:
        return None, [Problem(str(path), "<file>", f"named {path.name}; an entry of this config and device "
                                                   f"is named {entry.file_name}")]
    return entry, problems


def read_verified(path: Path) -> tuple[dict[str, Verification], list[Problem]]:
    """checksum → who verified it, from the maintainers' file; {} when there is none, and when
    it is invalid (with its problems: nothing counts as verified then)."""
    if not path.exists():
        return {}, []
    verified, problems = _model(path, VerifiedFile)
    return ({v.checksum: v for v in verified.verified} if verified else {}), problems


def _entry_files(path: Path) -> tuple[list[Path], list[Problem]]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file()), []
    return ([path], []) if path.is_file() else ([], [Problem(str(path), "<file>", "no such file or directory")])


def _entries(path: Path) -> tuple[dict[Path, Entry], list[Problem]]:
    """The valid entries of a file or folder, and the problems of the others; a run id that two
    entries share is a problem of the second (in name order), which is left out."""
    files, problems = _entry_files(path)
    entries: dict[Path, Entry] = {}
    owner: dict[str, Path] = {}
    for file in files:
        entry, found = check_entry(file)
        problems += found
        if entry is None:
            continue
        if shared := [r.run_id for r in entry.results if r.run_id in owner]:
            problems.append(Problem(str(file), "results", f"run {shared[0]} is also in {owner[shared[0]].name}"))
            continue
        owner.update({r.run_id: file for r in entry.results})
        entries[file] = entry
    return entries, problems


def validate(path: Path, verified_file: Path | None = None) -> list[Problem]:
    """Every problem of the entry ``path`` or of each ``*.json`` in the folder ``path``, and of
    the maintainers' file (default: :func:`verified_path`); for a folder, every checksum the
    maintainers list must be an entry's in it. An empty list when all is valid."""
    path = Path(path)
    verified_file = verified_path(path) if verified_file is None else Path(verified_file)
    entries, problems = _entries(path)
    verified, found = read_verified(verified_file)
    problems += found
    if path.is_dir():
        known = {e.checksum for e in entries.values()}
        problems += [Problem(str(verified_file), "verified", f"checksum {c} names no valid entry in {path}")
                     for c in verified if c not in known]
    return problems


def results_of(entry: Entry, verification: Verification | None = None) -> list[Result]:
    """One Result per seed of ``entry``: ``verified`` (by whom, when) if the maintainers listed
    it, else ``self-reported``; the entry's date stands for each seed's end time."""
    config = entry.as_config()
    environment = Environment(**entry.environment.model_dump(), git_commit=entry.commit)
    source = VERIFIED if verification else SELF_REPORTED
    by = f"{verification.by} on {verification.date}" if verification else ""
    return [Result(RunRecord(config, r.seed, r.n_train, "FINISHED", environment,
                             Evaluation.from_json(r.model_dump()), run_id=r.run_id, finished_at=entry.date), source, by)
            for r in entry.results]


def load_entries(directory: Path, verified_file: Path | None = None) -> tuple[list[Result], list[Problem]]:
    """The results of the valid entries in ``directory`` and the problems of the other files
    (and of the maintainers' file), which are skipped. Never raises for a bad or missing file."""
    directory = Path(directory)
    if not directory.exists():
        return [], []
    entries, problems = _entries(directory)
    verified, found = read_verified(verified_path(directory) if verified_file is None else Path(verified_file))
    results = [res for entry in entries.values() for res in results_of(entry, verified.get(entry.checksum))]
    return results, problems + found
