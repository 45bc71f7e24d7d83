"""Attempts of one grid run: a run sent to another process (a Ray task, ``--executor ray``) is
tried again when that process dies, and the highest attempt is the run; the store never holds
two of them.

Each attempt's run carries :data:`GRID_KEY_TAG` (:func:`grid_key`: the grid, the run's
fingerprint, seed and n_train) and :data:`ATTEMPT_TAG` (0, 1, ...). Before a later attempt logs
anything, :func:`settle` looks for earlier attempts of its key:

- one that ended (FINISHED or FAILED, with its ``record.json``) is the run's result: it is
  returned and not redone (the process died after the run ended, before its caller heard);
- one that did not end (its process died mid-run: left RUNNING, or reaped FAILED by ``ntkbench
  sync``) is deleted from the store, and its journal is moved from the outbox to
  ``<outbox>/superseded/``, where ``ntkbench sync`` does not look.

A journal of an earlier attempt on another host's outbox is left to ``ntkbench sync`` there,
which skips it once a later attempt of its key is in the store (:func:`rivals`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench.record import RECORD_ARTIFACT, RunRecord
from ntkbench.tracking.journal import RECORD_ID_TAG, JournalError, read_journal

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ntkbench.tracking.live import Tracker

GRID_KEY_TAG = "ntkbench_grid_key"
ATTEMPT_TAG = "ntkbench_attempt"
SUPERSEDED = "superseded"
"""The outbox's folder of journals whose run a later attempt replaced."""


def grid_key(grid_id: str, fingerprint: str, seed: int, n_train: int) -> str:
    """sha256 (first 16 hex digits) of the grid's id and the run's fingerprint, seed and n_train."""
    return hashlib.sha256(f"{grid_id}:{fingerprint}:{seed}:{n_train}".encode()).hexdigest()[:16]


def settle(tracker: Tracker, experiment: str, key: str) -> tuple[RunRecord | None, int]:
    """Before an attempt of grid run ``key`` (in ``experiment``) logs: the record of an earlier
    attempt that ended, if any (then nothing is removed); else None, with every earlier attempt
    removed from the store and the outbox (module docstring). Also returns how many earlier
    attempts were found."""
    runs = [] if tracker.client is None else _runs(tracker.client, experiment, key)
    for run in runs:
        record = _stored_record(tracker.client, run)
        if record is not None:
            return record, len(runs)
    journals = list(_journals(tracker.outbox, key))
    for path, events in journals:
        record = _journal_record(events)
        if record is not None:  # the store failed in that attempt; sync imports the journal as the run
            return record, max(len(runs), len(journals))
    for run in runs:
        tracker.client.delete_run(run.info.run_id)
    for path, _ in journals:
        (path.parent / SUPERSEDED).mkdir(exist_ok=True)
        path.replace(path.parent / SUPERSEDED / path.name)
    return None, max(len(runs), len(journals))


def rivals(client: MlflowClient, start: dict[str, Any]) -> tuple[list, list]:
    """The runs of the store that are other attempts of the grid run of the journal whose start
    event is ``start``: (later attempts, earlier attempts); both empty for a journal of no grid."""
    tags = start.get("tags", {})
    if GRID_KEY_TAG not in tags:
        return [], []
    attempt = int(tags.get(ATTEMPT_TAG, 0))
    others = [r for r in _runs(client, start["experiment"], tags[GRID_KEY_TAG])
              if r.data.tags.get(RECORD_ID_TAG) != start["record_id"]]
    return ([r for r in others if int(r.data.tags.get(ATTEMPT_TAG, 0)) > attempt],
            [r for r in others if int(r.data.tags.get(ATTEMPT_TAG, 0)) < attempt])


def _runs(client: MlflowClient, experiment: str, key: str) -> list:
    """The active runs of ``experiment`` tagged with grid run ``key``."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], f"tags.{GRID_KEY_TAG} = '{key}'"))


def _stored_record(client: MlflowClient, run: Any) -> RunRecord | None:
    """The record of a stored run that ended (not reaped), read from its ``record.json``; None
    for a run that did not end, or has no readable record."""
    from ntkbench.tracking.sync import REAPED_TAG  # sync imports this module

    if run.info.status == "RUNNING" or REAPED_TAG in run.data.tags:
        return None
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run.info.run_id, RECORD_ARTIFACT, folder)
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        return replace(RunRecord.from_json(data), storage="mlflow")
    except Exception:  # no artifact (the run ended before it was written), unreadable: redo the run
        return None


def _journals(outbox: Path, key: str):
    """(path, events) of the journals in ``outbox`` of grid run ``key`` that no live process
    holds (a writer keeps its journal locked)."""
    if not outbox.is_dir():
        return
    for path in sorted(outbox.glob("*.jsonl")):
        try:
            with path.open("rb") as handle:
                first = json.loads(handle.readline() or b"{}")
                if first.get("tags", {}).get(GRID_KEY_TAG) != key:
                    continue
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                handle.seek(0)
                events = read_journal(path, handle.read())
        except (OSError, ValueError, JournalError):  # locked (alive), gone, or not a journal of ours
            continue
        yield path, events


def _journal_record(events: list[dict[str, Any]]) -> RunRecord | None:
    """The record of a journal that ended with its ``record.json``, else None."""
    if events[-1]["event"] != "end":
        return None
    data = [e["data"] for e in events if e["event"] == "artifact" and e["file_name"] == RECORD_ARTIFACT]
    return replace(RunRecord.from_json(data[-1]), storage="outbox") if data else None
