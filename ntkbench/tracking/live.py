"""Live tracking: a :class:`Tracker` opens runs, a :class:`Run` logs into one. Each run ends
FINISHED, FAILED (error in a tag) or KILLED (Ctrl-C, SIGTERM).

Every event goes into the run's :class:`~ntkbench.tracking.journal.Journal` and, with tracking
``mlflow``, to the store as it comes; if the store fails, the journal so far is written to the
outbox and the run (and every later one) goes on there. With ``offline`` the journal is written
to the outbox from the start and MLflow is never imported.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ntkbench.record import encode_param
from ntkbench.tracking import store
from ntkbench.tracking.environment import process_tags, source_tags
from ntkbench.tracking.journal import HEARTBEAT_TAG, JOURNAL_FORMAT, Journal, now_ms, resolve_outbox
from ntkbench.tracking.schema import StoreUnavailable
from ntkbench.tracking.sync import report_dead_runs


class Tracker:
    """Opens runs; each ends FINISHED, FAILED (error in a tag) or KILLED (Ctrl-C, SIGTERM).

    ``mode`` ``mlflow`` logs live to the store ``uri`` and, once the store fails, writes that
    run and every later one to ``outbox`` (with a one-line warning); ``offline`` writes every
    run to ``outbox`` and never imports MLflow.
    """

    def __init__(self, uri: str | None = None, mode: str = "mlflow", outbox: str | Path | None = None) -> None:
        if mode not in ("mlflow", "offline"):
            raise ValueError(f"tracking must be one of mlflow, offline, off; got {mode!r}")
        self.uri, self.outbox = store.resolve_uri(uri), resolve_outbox(outbox)
        hint = "or use --tracking offline (then `ntkbench sync` where MLflow and the store are) or --tracking off"
        self.client = None
        if mode == "mlflow":
            try:
                self.client = store.client(self.uri, hint)
            except StoreUnavailable as e:  # a server down, an unwritable path: the grid goes on into the outbox
                self._warn(str(e))
        if self.client is not None:  # as before the outbox: ``runs:/<run_id>/...`` then resolves in this store
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            report_dead_runs(self.uri, self.client)

    @contextmanager
    def run(self, experiment: str, run_name: str, params: dict[str, object], tags: dict[str, str]) -> Iterator[Run]:
        start = {"event": "start", "time": now_ms(), "format": JOURNAL_FORMAT, "record_id": uuid.uuid4().hex,
                 "experiment": experiment, "run_name": run_name, "tags": {**source_tags(), **process_tags(), **tags}}
        run = Run(self, start)
        try:
            run.log_params(params)
            yield run
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM through the CLI
            run.end("KILLED", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            raise
        except Exception as e:
            run.end("FAILED", f"{type(e).__name__}: {e}"[:5000])
            raise
        run.end("FINISHED")

    def store_failed(self, error: Exception) -> None:
        """Stop logging to MLflow, with a one-line warning the first time."""
        if self.client is None:
            return
        self.client = None
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        self._warn(f"the MLflow store {self.uri} failed ({type(error).__name__}: {detail})")

    def _warn(self, problem: str) -> None:
        print(f"ntkbench: warning: {problem}; runs go on into the outbox {self.outbox}/; import them with "
              f"`ntkbench sync --outbox {self.outbox} --tracking-uri {self.uri}`", file=sys.stderr)


class Run:
    """Logging into one run: every event goes to the run's journal, and to MLflow while the
    store works. ``run_id`` is the MLflow run's id, None for a run recorded offline.

    Write-ahead, in every mode: the journal is a file of the outbox from the run's first event
    on, each event appended and flushed before it goes to MLflow, so a hard kill loses at most
    the event being written; ``ntkbench sync`` completes the run from it. When the run ends and
    the store took every event, the file is removed. A heartbeat thread touches the file and
    sets the run's ``ntkbench_heartbeat`` tag every ``HEARTBEAT_S`` seconds, so that a sync on
    another host can tell a run whose process died (no heartbeat for a lease) from a slow one.

    Metrics reach MLflow in one ``log_batch`` at most every ``FLUSH_S`` seconds and before any
    other event (the end included): one SQLite write costs ~14 ms, more than a training epoch of
    a small network (140 single writes took 1.9 s of a 5.9 s digits run). The record has every
    metric at once, so a store failure still loses nothing."""

    FLUSH_S = 5.0
    HEARTBEAT_S = 30.0

    def __init__(self, tracker: Tracker, start: dict[str, Any]) -> None:
        self.tracker, self.client = tracker, tracker.client
        self.record, self.run_id = Journal(), None
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self.record.add(start)
        self.record.spill(tracker.outbox)
        self._emit(start, journaled=True)
        self._stop = threading.Event()
        self._heart = threading.Thread(target=self._beat, name="ntkbench-heartbeat", daemon=True)
        self._heart.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            self.record.touch()
            client, run_id = self.client, self.run_id
            if client is not None and run_id is not None:
                try:
                    client.set_tag(run_id, HEARTBEAT_TAG, str(now_ms()))
                except Exception:  # the main thread finds a failing store itself
                    pass

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._emit({"event": "metrics", "time": now_ms(), "step": step or 0, "values": {key: float(value)}})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._emit({"event": "metrics", "time": now_ms(), "step": 0,
                    "values": {k: float(v) for k, v in metrics.items()}})

    def log_param(self, key: str, value: object) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, object]) -> None:
        self._emit({"event": "params", "time": now_ms(), "params": {k: encode_param(v) for k, v in params.items()}})

    def log_dict(self, data: object, file_name: str) -> None:
        self._emit({"event": "artifact", "time": now_ms(), "file_name": file_name, "data": data})

    def end(self, status: str, error: str | None = None) -> None:
        """The end event; the journal is removed if the store took every event, else kept for sync."""
        self._stop.set()
        self._heart.join()
        if error is not None:
            self._emit({"event": "tags", "time": now_ms(), "tags": {"error": error}})
        self._emit({"event": "end", "time": now_ms(), "status": status})
        if self.client is not None:
            self.record.discard()
        else:
            self.record.close()

    def _emit(self, event: dict[str, Any], journaled: bool = False) -> None:
        if not journaled:
            self.record.add(event)
        metric = event["event"] == "metrics"
        if metric and self.client is not None:
            self._pending.append(event)
        if self.client is not None and (not metric or time.monotonic() - self._flushed > self.FLUSH_S):
            try:
                if self._pending:
                    store.log_batch(self.client, self.run_id, self._pending)
                self._pending, self._flushed = [], time.monotonic()
                if not metric:
                    self.run_id = store.apply(self.client, self.run_id, event)
            except Exception as e:  # whatever the store raised (locked, gone, corrupt): the journal has it all
                self.client = None
                self.tracker.store_failed(e)
