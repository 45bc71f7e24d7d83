"""``ntkbench sync``: import the journals of an outbox into an MLflow store, each once."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench import signals
from ntkbench.tracking import store
from ntkbench.tracking.journal import DEFAULT_OUTBOX, RECORD_ID_TAG, JournalError, read_journal, resolve_outbox

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync` did with one record: ``outcome`` is imported, skipped (already in the
    store), running (still being written), bad (unreadable) or failed (the store raised)."""

    path: Path
    outcome: str
    message: str


def sync(outbox: str | Path | None = None, uri: str | None = None,
         report: Callable[[SyncResult], None] | None = None) -> list[SyncResult]:
    """Import every record of ``outbox`` into the store ``uri``, oldest first, and move each
    imported (or already present) record to ``outbox/synced/``; ``report`` sees each result.

    A run is created in the record's experiment with its original start time, run name and
    tags plus ``ntkbench_record_id``; params, tags and metrics (original steps and times) go in
    by ``log_batch``, then the JSON artifacts, then the recorded status and end time. A record
    with no end (its process died) is imported FAILED with an ``error`` tag saying so. A record
    already in the store is skipped; runs it left RUNNING (the store failed mid-run, or a sync
    was cut short) are deleted once its complete import is in. A bad or failing record stays
    in the outbox and the others go on. A missing outbox raises a ValueError.
    """
    folder = resolve_outbox(outbox)
    if not folder.is_dir():
        raise ValueError(f"outbox {folder} does not exist; expected the folder that --tracking offline writes "
                         f"(--outbox, else $NTKBENCH_OUTBOX, else ./{DEFAULT_OUTBOX})")
    client = store.client(store.resolve_uri(uri), "then sync again")
    results = []
    for path in sorted(folder.glob("*.jsonl")):
        signals.check()
        results.append(_sync_one(client, path))
        if report:
            report(results[-1])
    return results


def _sync_one(client: MlflowClient, path: Path) -> SyncResult:
    """Sync one record file, locked so that a running process or a second sync keeps off it."""
    with path.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return SyncResult(path, "running", f"{path}: still being written by a running process; left in the outbox")
        try:
            outcome, message = _sync_events(client, path, read_journal(path, handle.read()))
        except JournalError as e:
            return SyncResult(path, "bad", f"{e}; left in the outbox")
        except Exception as e:  # whatever the store raised; the record stays for the next sync
            return SyncResult(path, "failed", f"{path}: {type(e).__name__}: {e}; left in the outbox")
        (path.parent / "synced").mkdir(exist_ok=True)
        path.replace(path.parent / "synced" / path.name)
    return SyncResult(path, outcome, message)


def _sync_events(client: MlflowClient, path: Path, events: list[dict[str, Any]]) -> tuple[str, str]:
    runs = _runs_of(client, events[0])
    done = [r.info.run_id for r in runs if r.info.status != "RUNNING"]
    if done:
        return "skipped", f"{path}: already in the store as run {done[0]}"
    return "imported", _import(client, path, events, runs)


def _runs_of(client: MlflowClient, start: dict[str, Any]) -> list:
    """The active runs of the store that carry this record's id."""
    experiment = client.get_experiment_by_name(start["experiment"])
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], f"tags.{RECORD_ID_TAG} = '{start['record_id']}'"))


def _import(client: MlflowClient, path: Path, events: list[dict[str, Any]], stale: list) -> str:
    """Create the record's run, complete, then delete the ``stale`` RUNNING runs it replaces."""
    if events[-1]["event"] != "end":
        events = [*events, *_death(events)]
    run_id = store.create_run(client, events[0])
    store.log_batch(client, run_id, events)
    for event in events:
        if event["event"] == "artifact":
            client.log_dict(run_id, event["data"], event["file_name"])
    client.set_terminated(run_id, events[-1]["status"], events[-1]["time"])
    for run in stale:
        client.delete_run(run.info.run_id)
    replaced = f", replacing the partial run {', '.join(r.info.run_id for r in stale)}" if stale else ""
    return f"{path}: run {run_id} ({events[-1]['status']}) in experiment {events[0]['experiment']!r}{replaced}"


def _death(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ending of a record whose process died: FAILED at its last event's time, with an
    ``error`` tag unless the run had already recorded one."""
    last = events[-1]["time"]
    logged = any("error" in e.get("tags", {}) for e in events if e["event"] == "tags")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last / 1000))
    error = [] if logged else [{"event": "tags", "time": last, "tags": {
        "error": f"the run never ended: its process died (killed, out of memory, or the machine went down) "
                 f"after its last recorded event at {when}"}}]
    return [*error, {"event": "end", "time": last, "status": "FAILED"}]
