"""What tracking costs, and how many runs a store takes from many workers at once.

- ``test_runs_per_second``: N worker processes (N = 1, 2, 4, 8) each log ``RUNS`` tiny runs
  (iris, ntk, 30 training and 30 test points) as one grid, all at once, into a fresh SQLite
  store (schema created before, as the first run would) or into ``ntkbench server``
  (PostgreSQL + ``mlflow server``, over HTTP). The workers import everything and do one warm-up
  run first; the timed span is from the "go" to the last worker's end. ``extra_info``:
  ``runs_per_s`` = N · RUNS / that span, and each worker's own span.
- ``test_tracking_cost``: the same grid of ``RUNS`` runs in this process with ``--tracking
  off`` and with MLflow (SQLite, or the server), alternating within each round so that load on a
  shared machine hits both alike. ``extra_info``: ``ratio_mlflow_over_off`` (fastest rounds) and
  ``tracking_fraction`` = 1 − off/mlflow, the share of a run's wall-clock that tracking takes.

Tiny runs make tracking's share as large as it gets: a run that trains for minutes pays the same
few writes. The server's figures need PostgreSQL (skipped without it, as in tests/tracking).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import ntkbench
from ntkbench import runner
from ntkbench.tracking import postgres, server
from ntkbench.tracking.schema import open_client

RUNS = 12
OPTIONS = {"task.n_train": 30, "task.n_test": 30}
ROOT = str(Path(ntkbench.__file__).resolve().parents[1])
WORKER = f"""
import json, sys, time
sys.path.insert(0, {ROOT!r})
from ntkbench import runner
uri, first = sys.argv[1], int(sys.argv[2])
grid = dict(task="iris", method="ntk", options={OPTIONS!r}, tracking_uri=uri, device="cpu")
runner.run(seeds=(first + 10_000,), **grid)  # warm-up: imports, the store's client
print("ready", flush=True)
sys.stdin.readline()
start = time.time()
results = runner.run(seeds=tuple(range(first, first + {RUNS})), **grid)
print(json.dumps({{"start": start, "end": time.time(), "finished": sum(r.status == "FINISHED" for r in results),
                   "stored": sum(r.storage == "mlflow" for r in results)}}), flush=True)
"""


@pytest.fixture(scope="module")
def team_server():
    """``ntkbench server`` in a 0755 folder (the postgres user must reach it), for the module."""
    if postgres.missing():
        pytest.skip(postgres.missing())
    folder = Path(tempfile.mkdtemp(prefix="ntkbench-bench-server-"))
    folder.chmod(0o755)
    try:
        yield server.start(folder / "srv", port=_free_port())
    finally:
        server.stop(folder / "srv")
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store(request, tmp_path):
    """The URI of a fresh SQLite store with its schema created, or of the team server."""
    if request.param == "postgres":
        return request.getfixturevalue("team_server")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    open_client(uri)
    return uri


@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_runs_per_second(benchmark, store, workers, tmp_path):
    spans, rounds = [], iter(range(100))

    def launch():
        first = next(rounds) * 1000
        processes = [subprocess.Popen([sys.executable, "-c", WORKER, store, str(first + 100 * w)], cwd=tmp_path,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      stderr=open(tmp_path / f"worker{w}.err", "w")) for w in range(workers)]
        for process in processes:  # MLflow prints "View run at ..." lines of its own for a server
            assert "ready\n" in iter(process.stdout.readline, ""), f"a worker failed; see {tmp_path}/worker*.err"
        return (processes,), {}

    def go(processes):
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [json.loads([line for line in process.stdout if line.startswith("{")][-1]) for process in processes]
        for process in processes:
            assert process.wait(timeout=600) == 0
        assert all(r["finished"] == r["stored"] == RUNS for r in reports), reports
        spans.append(max(r["end"] for r in reports) - min(r["start"] for r in reports))

    benchmark.pedantic(go, setup=launch, rounds=2)
    best = min(spans)
    benchmark.extra_info.update(workers=workers, runs=workers * RUNS, span_s=best, runs_per_s=workers * RUNS / best)
    print(f"\n{_name(store)}: {workers} workers x {RUNS} runs in {best:.2f} s = {workers * RUNS / best:.1f} runs/s")


@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
def test_tracking_cost(benchmark, store):
    times: dict[str, list[float]] = {"off": [], "mlflow": []}
    seeds = iter(range(10_000))

    def pair():
        for tracking in ("off", "mlflow"):
            grid = tuple(next(seeds) for _ in range(RUNS))
            start = time.perf_counter()
            results = runner.run(task="iris", method="ntk", seeds=grid, options=OPTIONS, tracking=tracking,
                                 tracking_uri=store, device="cpu")
            times[tracking].append(time.perf_counter() - start)
            assert all(r.status == "FINISHED" for r in results)

    benchmark.pedantic(pair, rounds=5, warmup_rounds=1)
    off, on = min(times["off"]), min(times["mlflow"])
    benchmark.extra_info.update(runs=RUNS, off_min_s=off, mlflow_min_s=on, ratio_mlflow_over_off=on / off,
                                tracking_fraction=1 - off / on)
    print(f"\n{_name(store)}: {RUNS} tiny runs, tracking off {off:.3f} s, mlflow {on:.3f} s; tracking takes "
          f"{1 - off / on:.0%} of the wall-clock")


def _name(uri: str) -> str:
    return "SQLite" if uri.startswith("sqlite") else "ntkbench server (PostgreSQL)"
