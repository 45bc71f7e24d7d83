"""Helpers of test_failures: start real ``ntkbench`` processes, wait for what they write, and
read a real MLflow store back as plain data to compare."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient

import ntkbench
from ntkbench.tracking.journal import RECORD_ID_TAG, read_journal

ROOT = Path(ntkbench.__file__).resolve().parents[1]
DEADLINE_S = 300.0
"""How long to wait for an event that takes seconds: a hang, not a slow machine, runs past it."""
TINY = ("--set=task.n_train=60", "--set=task.n_test=30", "--set=arch.depth=1", "--set=arch.width=16")


def env() -> dict[str, str]:
    """The environment of a child: this checkout's ntkbench, and no store, outbox or connect
    timeout set from outside."""
    child = {k: v for k, v in os.environ.items()
             if k not in ("MLFLOW_TRACKING_URI", "NTKBENCH_OUTBOX", "NTKBENCH_CONNECT_TIMEOUT")}
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return child


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """``ntkbench ARGS`` in a new process in ``cwd``, its output captured as text."""
    return subprocess.Popen([sys.executable, "-m", "ntkbench.cli", *args], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_python(cwd: Path, code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for ``process`` (within the deadline) and return its status, stdout and stderr."""
    out, err = process.communicate(timeout=DEADLINE_S)
    return process.returncode, out, err


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S, every_s: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` past the deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {deadline_s:g} s for {what}")
        time.sleep(every_s)


class JournalWatch:
    """The names of the journals seen in an outbox so far: a run's journal appears when it
    starts and, in mlflow mode, goes once the store has every event."""

    def __init__(self, outbox: Path) -> None:
        self.outbox, self.seen = outbox, set()

    def count(self) -> int:
        if self.outbox.is_dir():
            self.seen.update(p.name for p in self.outbox.glob("*.jsonl"))
        return len(self.seen)


def journals(outbox: Path) -> dict[str, list[dict]]:
    """The events of each journal left in ``outbox``, by record id."""
    found = {}
    for path in sorted(outbox.glob("*.jsonl")):
        events = read_journal(path, path.read_bytes())
        found[events[0]["record_id"]] = events
    return found


def runs(uri: str) -> list:
    """Every active run of the store, all experiments."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, max_results=50000)) if experiments else []


def snapshot(uri: str) -> dict[str, dict]:
    """The active runs of the store by record id: name, status, times, params, tags, and each
    metric's history (step, value, time). Two runs with one record id fail it."""
    client, found = MlflowClient(uri), {}
    for run in runs(uri):
        record_id = run.data.tags[RECORD_ID_TAG]
        assert record_id not in found, f"record {record_id} is in {uri} twice"
        history = {key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key))
                   for key in run.data.metrics}
        found[record_id] = {"name": run.info.run_name, "status": run.info.status, "start": run.info.start_time,
                            "end": run.info.end_time, "params": run.data.params, "tags": run.data.tags,
                            "metrics": history}
    return found


def journal_metrics(events: list[dict]) -> dict[str, list[tuple]]:
    """Each metric's history (step, value, time) as the journal recorded it."""
    history: dict[str, list[tuple]] = {}
    for event in events:
        if event["event"] == "metrics":
            for key, value in event["values"].items():
                history.setdefault(key, []).append((event["step"], value, event["time"]))
    return {key: sorted(points) for key, points in history.items()}
