"""``ntkbench sync``: import the journals of an outbox into an MLflow store, each once."""

from __future__ import annotations

import fcntl
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench import signals
from ntkbench.tracking import attempts, store
from ntkbench.tracking.environment import HOST_TAG, PID_START_TAG, PID_TAG, process_alive
from ntkbench.tracking.journal import DEFAULT_OUTBOX, HEARTBEAT_TAG, RECORD_ID_TAG, JournalError, now_ms, read_journal, resolve_outbox

if TYPE_CHECKING:
    from mlflow import MlflowClient


REAPED_TAG = "ntkbench_reaped"
"""Set on a run that :func:`sync` marked FAILED because its process was gone: the store has only
what the run logged live, and its journal (if it turns up, e.g. synced on its host) replaces it."""
DEFAULT_LEASE_S = 600.0
"""How long a RUNNING run of another host may go without a heartbeat before sync calls it dead
(20 heartbeats; a run on this host is checked by its pid instead)."""


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync` did with one journal or run: ``outcome`` is imported, skipped (already
    in the store), running (still being written), bad (unreadable), failed (the store raised)
    or reaped (a RUNNING run whose process died, marked FAILED). ``source`` is the journal's
    path or the run's id."""

    source: str
    outcome: str
    message: str


def sync(outbox: str | Path | None = None, uri: str | None = None,
         report: Callable[[SyncResult], None] | None = None, lease_s: float = DEFAULT_LEASE_S,
         progress: Callable[[list[Path]], Iterable[Path]] = iter) -> list[SyncResult]:
    """Import every journal of ``outbox`` into the store ``uri``, oldest first, and move each
    imported (or already present) journal to ``outbox/synced/``; then mark FAILED every run
    still RUNNING whose process is dead (:func:`dead_runs`). ``report`` sees each result.

    A run is created in the journal's experiment with its original start time, run name and
    tags plus ``ntkbench_record_id``; params, tags and metrics (original steps and times) go in
    by ``log_batch``, then the JSON artifacts, then the recorded status and end time. A journal
    with no end (its process died) is imported FAILED with ``error`` = ``killed (no heartbeat
    since …)``, at the time of its last event or heartbeat. Each import is atomic: if any write
    fails, the run it created is deleted, and the journal stays for the next sync. A journal
    already in the store is skipped; the runs it left RUNNING (the store failed mid-run, the
    process died, or a sync was cut short) or that a sync reaped (``ntkbench_reaped``: the store
    had only what the run logged live) are deleted once its complete import is in. Of the attempts
    of one grid run (:mod:`~ntkbench.tracking.attempts`) the highest is kept: a journal of an
    earlier attempt than one in the store is skipped, and its import deletes earlier ones. A bad
    or failing journal stays in the outbox and the others go on. An ``outbox`` given that does
    not exist raises a ValueError; the default one may be missing (there may be dead runs to mark
    all the same). ``progress`` wraps the journals' loop (a progress bar).
    """
    folder = resolve_outbox(outbox)
    if outbox is not None and not folder.is_dir():
        raise ValueError(f"outbox {folder} does not exist; expected the folder that --tracking offline writes "
                         f"(--outbox, else $NTKBENCH_OUTBOX, else ./{DEFAULT_OUTBOX})")
    client = store.client(store.resolve_uri(uri), "then sync again")
    results = []
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    for path in progress(paths):
        signals.check()
        results.append(_sync_one(client, path))
        if report:
            report(results[-1])
    for run, since in dead_runs(client, lease_s):
        signals.check()
        results.append(_reap(client, run, since))
        if report:
            report(results[-1])
    return results


def dead_runs(client: MlflowClient, lease_s: float = DEFAULT_LEASE_S) -> list[tuple[Any, int]]:
    """The RUNNING runs written by ntkbench whose process is gone, with the time (ms) of their
    last sign of life: on this host, the pid of the run's tags no longer names the process that
    started it; on another host, no heartbeat for ``lease_s`` seconds."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    dead = []
    now = now_ms()
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50000):
        tags = run.data.tags
        if HOST_TAG not in tags:
            continue
        since = int(tags.get(HEARTBEAT_TAG, run.info.start_time))
        alive = process_alive(tags[HOST_TAG], tags.get(PID_TAG, ""), tags.get(PID_START_TAG, ""))
        if alive is False or (alive is None and now - since > lease_s * 1000):
            dead.append((run, since))
    return dead


def report_dead_runs(uri: str | None, client: MlflowClient | None = None) -> int:
    """How many runs of the store ``uri`` are RUNNING with their process gone (:func:`dead_runs`,
    default lease); when there are any, one line on stderr says so and that ``ntkbench sync``
    marks them FAILED. ``ntkbench run`` (mlflow mode) and ``leaderboard`` call it on the store
    they use. Without ``client`` the store is opened (``StoreBroken`` or ``StoreUnavailable``
    as :func:`~ntkbench.tracking.schema.open_client` raises them); a local store that does not
    exist is not created (0). A store that fails while searching counts 0: what the caller does
    next meets the failure and says so."""
    resolved = store.resolve_uri(uri)
    if client is None:
        if store.missing_local_store(resolved):
            return 0
        client = store.client(resolved, "or leave the store out (leaderboard --entries-only)")
    try:
        count = len(dead_runs(client))
    except Exception:  # whatever the store raised; the caller's own use of it reports the failure
        return 0
    if count:
        print(f"ntkbench: {count} run(s) in {resolved} are still RUNNING but their process is gone; mark them FAILED "
              f"with `ntkbench sync --tracking-uri {resolved}`", file=sys.stderr)
    return count


def _reap(client: MlflowClient, run: Any, since: int) -> SyncResult:
    """Mark one dead RUNNING run FAILED, ended at its last sign of life."""
    from mlflow.entities import RunTag

    run_id = run.info.run_id
    try:
        client.log_batch(run_id, tags=[RunTag("error", killed_since(since)), RunTag(REAPED_TAG, "true")])
        client.set_terminated(run_id, "FAILED", since)
    except Exception as e:  # whatever the store raised; the next sync tries again
        return SyncResult(run_id, "failed", f"run {run_id}: {type(e).__name__}: {e}; still RUNNING")
    return SyncResult(run_id, "reaped", f"run {run_id} ({run.info.run_name}) in experiment "
                      f"{run.info.experiment_id}: FAILED, {killed_since(since)}; its process is gone")


def killed_since(ms: int) -> str:
    """The ``error`` of a run whose process died after its last sign of life at ``ms``."""
    return f"killed (no heartbeat since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(ms / 1000))})"


def _sync_one(client: MlflowClient, path: Path) -> SyncResult:
    """Sync one journal file, locked so that a running process or a second sync keeps off it."""
    with path.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return SyncResult(str(path), "running", f"{path}: still being written by a running process; left in the outbox")
        try:
            events = read_journal(path, handle.read())
            outcome, message = _sync_events(client, path, events, int(path.stat().st_mtime * 1000))
        except JournalError as e:
            return SyncResult(str(path), "bad", f"{e}; left in the outbox")
        except Exception as e:  # whatever the store raised; the journal stays for the next sync
            return SyncResult(str(path), "failed", f"{path}: {type(e).__name__}: {e}; left in the outbox")
        (path.parent / "synced").mkdir(exist_ok=True)
        path.replace(path.parent / "synced" / path.name)
    return SyncResult(str(path), outcome, message)


def _sync_events(client: MlflowClient, path: Path, events: list[dict[str, Any]], touched: int) -> tuple[str, str]:
    runs = _runs_of(client, events[0])
    partial = [r for r in runs if r.info.status == "RUNNING" or REAPED_TAG in r.data.tags]
    done = [r.info.run_id for r in runs if r.info.status != "RUNNING" and REAPED_TAG not in r.data.tags]
    if done:  # imported before; a copy left RUNNING (or reaped) by a sync cut short after that goes
        for run in partial:
            client.delete_run(run.info.run_id)
        return "skipped", f"{path}: already in the store as run {done[0]}"
    later, earlier = attempts.rivals(client, events[0])  # a grid run tried again (--executor ray)
    if later:
        return "skipped", f"{path}: superseded by run {later[0].info.run_id}, a later attempt of the same grid run"
    return "imported", _import(client, path, events, partial + earlier, touched)


def _runs_of(client: MlflowClient, start: dict[str, Any]) -> list:
    """The active runs of the store that carry this journal's id."""
    experiment = client.get_experiment_by_name(start["experiment"])
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], f"tags.{RECORD_ID_TAG} = '{start['record_id']}'"))


def _import(client: MlflowClient, path: Path, events: list[dict[str, Any]], stale: list, touched: int) -> str:
    """Create the journal's run, complete, then delete the ``stale`` RUNNING runs it replaces.
    Atomic: a failure (or an interruption) after the run was created deletes it again."""
    if events[-1]["event"] != "end":
        events = [*events, *_death(events, touched)]
    run_id = store.create_run(client, events[0])
    try:
        store.log_batch(client, run_id, events)
        for event in events:
            if event["event"] == "artifact":
                client.log_dict(run_id, event["data"], event["file_name"])
        client.set_terminated(run_id, events[-1]["status"], events[-1]["time"])
    except BaseException:
        client.delete_run(run_id)
        raise
    for run in stale:
        client.delete_run(run.info.run_id)
    replaced = f", replacing the partial run {', '.join(r.info.run_id for r in stale)}" if stale else ""
    return f"{path}: run {run_id} ({events[-1]['status']}) in experiment {events[0]['experiment']!r}{replaced}"


def _death(events: list[dict[str, Any]], touched: int) -> list[dict[str, Any]]:
    """The ending of a journal whose process died: FAILED at its last sign of life (its last
    event, or the heartbeat's touch of the file), with ``error`` = ``killed (no heartbeat since
    …)`` unless the run had already recorded one."""
    last = max(events[-1]["time"], touched)
    logged = any("error" in e.get("tags", {}) for e in events if e["event"] == "tags")
    error = [] if logged else [{"event": "tags", "time": last, "tags": {"error": killed_since(last)}}]
    return [*error, {"event": "end", "time": last, "status": "FAILED"}]
