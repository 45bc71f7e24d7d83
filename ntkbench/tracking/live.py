"""Live tracking: a :class:`Tracker` opens runs, a :class:`Run` logs into one. Each run ends
FINISHED, FAILED (error in a tag) or KILLED (Ctrl-C, SIGTERM).

Every event goes into the run's :class:`~ntkbench.tracking.journal.Journal` and, with tracking
``mlflow``, to the store as it comes; if the store fails, the journal so far is written to the
outbox and the run (and every later one) goes on there. With ``offline`` the journal is written
to the outbox from the start and MLflow is never imported.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ntkbench.record import encode_param
from ntkbench.tracking import store
from ntkbench.tracking.environment import source_tags
from ntkbench.tracking.journal import JOURNAL_FORMAT, Journal, now_ms, resolve_outbox


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
        self.client = store.client(self.uri, hint) if mode == "mlflow" else None
        if self.client is not None:  # as before the outbox: ``runs:/<run_id>/...`` then resolves in this store
            import mlflow

            mlflow.set_tracking_uri(self.uri)

    @contextmanager
    def run(self, experiment: str, run_name: str, params: dict[str, object], tags: dict[str, str]) -> Iterator[Run]:
        start = {"event": "start", "time": now_ms(), "format": JOURNAL_FORMAT, "record_id": uuid.uuid4().hex,
                 "experiment": experiment, "run_name": run_name, "tags": {**source_tags(), **tags}}
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
        print(f"ntkbench: warning: the MLflow store {self.uri} failed ({type(error).__name__}: {detail}); runs go on "
              f"into the outbox {self.outbox}/; import them with `ntkbench sync --outbox {self.outbox}`", file=sys.stderr)


class Run:
    """Logging into one run: every event goes to the run's record, and to MLflow while the
    store works. ``run_id`` is the MLflow run's id, None for a run recorded offline.

    Metrics reach MLflow in one ``log_batch`` at most every ``FLUSH_S`` seconds and before any
    other event (the end included): one SQLite write costs ~14 ms, more than a training epoch of
    a small network (140 single writes took 1.9 s of a 5.9 s digits run). The record has every
    metric at once, so a store failure still loses nothing."""

    FLUSH_S = 5.0

    def __init__(self, tracker: Tracker, start: dict[str, Any]) -> None:
        self.tracker, self.client = tracker, tracker.client
        self.record, self.run_id = Journal(), None
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._emit(start)

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
        if error is not None:
            self._emit({"event": "tags", "time": now_ms(), "tags": {"error": error}})
        self._emit({"event": "end", "time": now_ms(), "status": status})
        self.record.close()

    def _emit(self, event: dict[str, Any]) -> None:
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
            except Exception as e:  # whatever the store raised (locked, gone, corrupt): the record has it all
                self.client = None
                self.tracker.store_failed(e)
        if self.client is None and self.record.path is None:
            self.record.spill(self.tracker.outbox)
