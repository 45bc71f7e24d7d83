"""Tracking: MLflow and the offline outbox. The only module that imports MLflow, and only when
a run logs to it or a record is synced (the GPU machine's image has no MLflow).

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
the working directory (MLflow 3's own default). One experiment per task; one run per
(method, arch, seed, n_train).

Every run keeps a complete record: a list of events (``start``, ``params``, ``tags``,
``metrics``, ``artifact``, ``end``), each with its time in ms since the epoch. With tracking
``offline`` the record is appended event by event, flushed, to ``<outbox>/<time>-<experiment>-
<run name>-<record id>.jsonl`` (one JSON object a line), so a SIGKILL loses at most the event
being written. With ``mlflow`` the events go to the store as they come; if the store fails, the
record so far is written to the outbox and the run goes on there. :func:`sync` imports records.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

import ntkbench

if TYPE_CHECKING:
    import pandas
    from mlflow import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_OUTBOX = "mlruns-outbox"
RECORD_FORMAT = 1
RECORD_ID_TAG = "ntkbench_record_id"
"""Every run, live or imported, carries its record's id: :func:`sync` skips records already in the store."""
STATUSES = ("FINISHED", "FAILED", "KILLED")


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def resolve_outbox(outbox: str | Path | None) -> Path:
    """``outbox``, else ``NTKBENCH_OUTBOX``, else ``mlruns-outbox`` in the working directory."""
    return Path(outbox or os.environ.get("NTKBENCH_OUTBOX") or DEFAULT_OUTBOX)


def environment_tags(device: torch.device) -> dict[str, str]:
    """ntkbench version, git commit, device name, torch version and hostname."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "ntkbench_version": ntkbench.__version__,
        "git_commit": git_commit(),
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "hostname": platform.node(),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo on Linux, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else (platform.processor() or platform.machine())


def git_commit() -> str:
    root = Path(ntkbench.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"



def source_tags() -> dict[str, str]:
    """The user and source tags MLflow's own ``start_run`` adds, computed without MLflow."""
    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):  # no login name, e.g. a container's numeric uid
        user = "unknown"
    source = sys.argv[0] if sys.argv and sys.argv[0] else "<console>"
    return {"mlflow.user": user, "mlflow.source.name": source, "mlflow.source.type": "LOCAL"}


def _now_ms() -> int:
    return int(time.time() * 1000)


class RunRecord:
    """One run's events in order as JSON lines: in memory until :meth:`spill`, then in a file
    of the outbox, to which each later event is appended and flushed. The file is locked
    (``flock``) until :meth:`close`, so :func:`sync` leaves a running record alone."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.params: dict[str, str] = {}
        self.path: Path | None = None
        self._file: TextIO | None = None

    def add(self, event: dict[str, Any]) -> None:
        """Keep ``event`` (and append it to the file, if any); a param logged twice with two
        values raises, as MLflow would."""
        for key, value in event.get("params", {}).items():
            if self.params.setdefault(key, value) != value:
                raise ValueError(f"param {key!r} was logged as {self.params[key]!r} and again as {value!r}; "
                                 "a param is logged once per run")
        line = json.dumps(event) + "\n"
        if self._file:
            self._file.write(line)
            self._file.flush()
        else:
            self.lines.append(line)

    def spill(self, outbox: Path) -> Path:
        """Write every event so far to a new file in ``outbox`` and keep appending there. The
        file is written and locked under a ``.part`` name, then renamed: a sync never sees it
        unlocked."""
        start = json.loads(self.lines[0])
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start["time"] / 1000))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{start['experiment']}-{start['run_name']}")[:100]
        outbox.mkdir(parents=True, exist_ok=True)
        self.path = outbox / f"{stamp}-{name}-{start['record_id']}.jsonl"
        part = self.path.with_name(self.path.name + ".part")
        self._file = part.open("a", encoding="utf-8")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.writelines(self.lines)
        self._file.flush()
        part.rename(self.path)
        self.lines = []
        return self.path

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class Tracker:
    """Opens runs; each ends FINISHED, FAILED (error in a tag) or KILLED (Ctrl-C, SIGTERM).

    ``mode`` ``mlflow`` logs live to the store ``uri`` and, once the store fails, writes that
    run and every later one to ``outbox`` (with a one-line warning); ``offline`` writes every
    run to ``outbox`` and never imports MLflow.
    """

    def __init__(self, uri: str | None = None, mode: str = "mlflow", outbox: str | Path | None = None) -> None:
        if mode not in ("mlflow", "offline"):
            raise ValueError(f"tracking must be one of mlflow, offline, off; got {mode!r}")
        self.uri, self.outbox = resolve_uri(uri), resolve_outbox(outbox)
        hint = "or use --tracking offline (then `ntkbench sync` where MLflow and the store are) or --tracking off"
        self.client = _client(self.uri, hint) if mode == "mlflow" else None
        if self.client is not None:  # as before the outbox: ``runs:/<run_id>/...`` then resolves in this store
            import mlflow

            mlflow.set_tracking_uri(self.uri)

    @contextmanager
    def run(self, experiment: str, run_name: str, params: dict[str, object], tags: dict[str, str],
            config: dict[str, object]) -> Iterator[Run]:
        start = {"event": "start", "time": _now_ms(), "format": RECORD_FORMAT, "record_id": uuid.uuid4().hex,
                 "experiment": experiment, "run_name": run_name, "tags": {**source_tags(), **tags}}
        run = Run(self, start)
        try:
            run.log_params(params)
            run.log_dict(config, "config.json")
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
        self.record, self.run_id = RunRecord(), None
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._emit(start)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._emit({"event": "metrics", "time": _now_ms(), "step": step or 0, "values": {key: float(value)}})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._emit({"event": "metrics", "time": _now_ms(), "step": 0,
                    "values": {k: float(v) for k, v in metrics.items()}})

    def log_param(self, key: str, value: object) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, object]) -> None:
        self._emit({"event": "params", "time": _now_ms(), "params": {k: _param(v) for k, v in params.items()}})

    def log_dict(self, data: object, file_name: str) -> None:
        self._emit({"event": "artifact", "time": _now_ms(), "file_name": file_name, "data": data})

    def end(self, status: str, error: str | None = None) -> None:
        if error is not None:
            self._emit({"event": "tags", "time": _now_ms(), "tags": {"error": error}})
        self._emit({"event": "end", "time": _now_ms(), "status": status})
        self.record.close()

    def _emit(self, event: dict[str, Any]) -> None:
        self.record.add(event)
        metric = event["event"] == "metrics"
        if metric and self.client is not None:
            self._pending.append(event)
        if self.client is not None and (not metric or time.monotonic() - self._flushed > self.FLUSH_S):
            try:
                if self._pending:
                    _log_batch(self.client, self.run_id, self._pending)
                self._pending, self._flushed = [], time.monotonic()
                if not metric:
                    self.run_id = _apply(self.client, self.run_id, event)
            except Exception as e:  # whatever the store raised (locked, gone, corrupt): the record has it all
                self.client = None
                self.tracker.store_failed(e)
        if self.client is None and self.record.path is None:
            self.record.spill(self.tracker.outbox)


def _param(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------- MLflow
def _client(uri: str, hint: str) -> MlflowClient:
    """An MLflow client of ``uri``. A missing MLflow or a store that cannot be opened is a
    ValueError that ends with ``hint`` (what else the user can do)."""
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise ValueError(f"MLflow cannot be imported ({e}); install it, {hint}") from None
    try:
        return MlflowClient(uri)
    except Exception as e:  # a bad scheme, an unreadable file: whatever MLflow raises
        raise ValueError(f"the MLflow store {uri} cannot be opened ({type(e).__name__}: {e}); "
                         f"fix --tracking-uri or $MLFLOW_TRACKING_URI, {hint}") from None


def _apply(client: MlflowClient, run_id: str | None, event: dict[str, Any]) -> str:
    """Log one event into the run ``run_id`` (a ``start`` creates it); returns the run's id."""
    kind = event["event"]
    if kind == "start":
        return _create_run(client, event)
    if kind == "artifact":
        client.log_dict(run_id, event["data"], event["file_name"])
    elif kind == "end":
        client.set_terminated(run_id, event["status"], event["time"])
    else:
        _log_batch(client, run_id, [event])
    return run_id


def _create_run(client: MlflowClient, start: dict[str, Any]) -> str:
    tags = {**start["tags"], RECORD_ID_TAG: start["record_id"]}
    experiment_id = _experiment_id(client, start["experiment"])
    return client.create_run(experiment_id, start_time=start["time"], tags=tags, run_name=start["run_name"]).info.run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if needed (another process may create it first)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _log_batch(client: MlflowClient, run_id: str, events: list[dict[str, Any]]) -> None:
    """The params, tags and metrics of ``events`` (metrics with their step and time), in
    batches within MLflow's limits (100 params or tags, 1000 metrics a call)."""
    from mlflow.entities import Metric, Param, RunTag

    params = {k: v for e in events if e["event"] == "params" for k, v in e["params"].items()}
    tags = {k: v for e in events if e["event"] == "tags" for k, v in e["tags"].items()}
    metrics = [Metric(k, v, e["time"], e["step"]) for e in events if e["event"] == "metrics"
               for k, v in e["values"].items()]
    batches = (("params", [Param(k, v) for k, v in params.items()], 100),
               ("tags", [RunTag(k, v) for k, v in tags.items()], 100), ("metrics", metrics, 1000))
    for field, items, size in batches:
        for i in range(0, len(items), size):
            client.log_batch(run_id, **{field: items[i:i + size]})


# ---------------------------------------------------------------- sync
_FIELDS = {"start": ("format", "record_id", "experiment", "run_name", "tags"), "params": ("params",),
           "tags": ("tags",), "metrics": ("step", "values"), "artifact": ("file_name", "data"), "end": ("status",)}


class RecordError(ValueError):
    """A record file that cannot be read; the message names the file and line."""


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
    client = _client(resolve_uri(uri), "then sync again")
    results = []
    for path in sorted(folder.glob("*.jsonl")):
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
            outcome, message = _sync_events(client, path, read_record(path, handle.read()))
        except RecordError as e:
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
    run_id = _create_run(client, events[0])
    _log_batch(client, run_id, events)
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


def read_record(path: Path, data: bytes) -> list[dict[str, Any]]:
    """The events of the record file ``path`` whose content is ``data``. A last line with no
    newline that does not parse was cut off by a kill and is dropped; any other bad line
    raises a :class:`RecordError` naming the file and line."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON lines") from None
    events = [_parse(path, number, line) for number, line in enumerate(lines[:-1], 1)]
    if lines[-1]:
        try:
            events.append(_parse(path, len(lines), lines[-1]))
        except RecordError:
            pass  # the event being written when the process was killed
    if not events:
        raise RecordError(f"{path}: empty; expected a start event on line 1")
    for number, event in enumerate(events, 1):
        kind = event["event"]
        if (kind == "start") != (number == 1) or (kind == "end" and number != len(events)):
            raise RecordError(f"{path}:{number}: a {kind} event here; expected start on line 1 only and end last only")
    start = events[0]
    if start["format"] != RECORD_FORMAT or not re.fullmatch(r"[0-9a-f]{32}", str(start["record_id"])):
        raise RecordError(f"{path}:1: record format {start['format']!r}, id {start['record_id']!r}; "
                          f"expected format {RECORD_FORMAT} and a 32-digit hex id")
    if events[-1]["event"] == "end" and events[-1]["status"] not in STATUSES:
        raise RecordError(f"{path}:{len(events)}: status {events[-1]['status']!r}; expected one of {', '.join(STATUSES)}")
    return events


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    """One line of a record: a JSON object with its event's fields."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{number}: not JSON ({e.msg}); expected one event object a line") from None
    kind = event.get("event") if isinstance(event, dict) else None
    if kind not in _FIELDS:
        raise RecordError(f"{path}:{number}: event {kind!r}; expected one of {', '.join(_FIELDS)}")
    missing = [f for f in ("time", *_FIELDS[kind]) if f not in event]
    if missing:
        raise RecordError(f"{path}:{number}: the {kind} event lacks {', '.join(missing)}")
    return event


# ---------------------------------------------------------------- reading the store

def runs_frame(uri: str | None, run_ids: list[str] | None = None) -> "pandas.DataFrame":
    """The runs of the store ``uri`` as MLflow's pandas frame (``run_id``, ``status``,
    ``end_time``, ``params.*``, ``metrics.*``, ``tags.*``), across all experiments.

    Without ``run_ids``: every FINISHED run. With ``run_ids``: exactly those runs, whatever their
    status, in no particular order; an id that names no run raises a ``ValueError`` naming it.
    A local store that does not exist yet (an SQLite file, a folder) is read as empty and is
    not created.
    """
    import pandas as pd

    resolved = resolve_uri(uri)
    missing = _missing_local_store(resolved)
    if missing and not run_ids:
        return pd.DataFrame()
    if missing:
        raise ValueError(f"no such run(s) {', '.join(run_ids)}: the store {resolved} does not exist")
    if run_ids is None:
        frame = _search(resolved, "attributes.status = 'FINISHED'")
    else:
        bad = [r for r in run_ids if not r or not all(c.isalnum() or c in "-_" for c in r)]
        wanted = [r for r in dict.fromkeys(run_ids) if r not in bad]
        chunks = [wanted[i:i + 100] for i in range(0, len(wanted), 100)]
        frames = [_search(resolved, "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in chunk) + ")")
                  for chunk in chunks]
        frames = [f for f in frames if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])
        unknown = bad + [r for r in wanted if r not in set(frame["run_id"])]
        if unknown:
            raise ValueError(f"no such run(s) in {resolved}: {', '.join(map(repr, unknown))}")
    return frame.reset_index(drop=True)


def _search(uri: str, filter_string: str):
    """``mlflow.search_runs`` on ``uri``; MLflow's global tracking URI and the
    ``MLFLOW_TRACKING_URI`` variable are left as they were."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    old_global, old_env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(search_all_experiments=True, output_format="pandas", filter_string=filter_string)
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _missing_local_store(uri: str) -> bool:
    """True for an SQLite file or a local folder store that does not exist."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        return path not in ("", ":memory:") and not Path(path).exists()
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return not Path(unquote(urlparse(uri).path)).exists()
    if "://" not in uri and uri not in ("databricks",):
        return not Path(uri).exists()
    return False
