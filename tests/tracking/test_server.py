"""``ntkbench server`` with a real PostgreSQL and a real ``mlflow server``, started once for the
module by the command line, in a 0755 folder the ``postgres`` user can reach (pytest's own tmp
folders are 0700). Six workers log into it at once; then the server is stopped, restarted on the
same folder (its runs are still there) and stopped again, and no process of it is left.

The server's tests are skipped, with the reason, where PostgreSQL's programs or (for root) the
``postgres`` user are missing; ``apt-get install postgresql`` provides both."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow import MlflowClient

import ntkbench
from ntkbench import cli
from ntkbench.tracking import postgres, server

pytestmark = pytest.mark.processes  # CI runs these once, in its 2-thread pass

WORKERS = 6
ROOT = str(Path(ntkbench.__file__).resolve().parents[1])
ENV = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "NTKBENCH_OUTBOX")}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, ENV.get("PYTHONPATH")]))  # this checkout, not an installed copy


def _ntkbench(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ntkbench.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(folder: Path) -> list[psutil.Process]:
    """Every live process of the server in ``folder``, found without ntkbench: the mlflow server
    (its pid file) and its descendants, and the postmaster (postmaster.pid) and its children."""
    found = []
    for pid_file in (folder / "mlflow.pid", folder / "pgdata" / "postmaster.pid"):
        try:
            leader = psutil.Process(int(pid_file.read_text().split()[0]))
            found += [leader, *leader.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            continue
    return [p for p in found if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def base() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ntkbench-server-"))
    folder.chmod(0o755)
    yield folder
    for process in _processes_of(folder / "srv"):  # only if a test failed half-way
        process.kill()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def uri(base) -> str:
    """The server's tracking URI, started by the command line; the tests that need it are
    skipped, with the reason, where PostgreSQL is missing."""
    if postgres.missing():
        pytest.skip(postgres.missing())
    port = _free_port()
    started = _ntkbench("server", "start", "--dir", "srv", "--port", str(port), cwd=base)
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.strip().splitlines()[-1] == f"http://127.0.0.1:{port}"
    return f"http://127.0.0.1:{port}"


def test_six_workers_started_at_once_log_every_run_once(base, uri):
    """Every worker exits 0; each (method, seed) is one FINISHED run; its record.json is read
    back through the server and lies in the server's artifacts folder (proxied artifacts); no
    journal is left in the workers' outbox (the store took every event)."""
    workdir = base / "workers"
    workdir.mkdir()
    command = [sys.executable, "-m", "ntkbench.cli", "run", "--task", "iris", "--method", "ntk,nngp",
               "--tracking-uri", uri]
    workers = [subprocess.Popen([*command, "--seeds", str(seed)], cwd=workdir, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for seed in range(WORKERS)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("iris").experiment_id], max_results=1000)
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(f"{m}-mlp-s{s}-n120" for m in ("ntk", "nngp") for s in range(WORKERS))
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="record.json",
                                                   tracking_uri=uri, dst_path=str(workdir / run.info.run_id))
        record = json.loads(Path(path).read_text())
        assert record["status"] == "FINISHED" and record["run_id"] == run.info.run_id
    assert len(list((base / "srv" / "artifacts").rglob("record.json"))) == len(runs)
    assert not list((workdir / "mlruns-outbox").glob("*.jsonl"))


def test_status_reports_both_running(base, uri):
    status = _ntkbench("server", "status", "--dir", "srv", cwd=base, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.strip().splitlines()
    assert lines[0].startswith("mlflow server: running, pid ") and lines[0].endswith(uri)
    assert lines[1].startswith("postgres: running, pid ") and "postgresql+psycopg2://mlflow@127.0.0.1:" in lines[1]


def test_stop_leaves_nothing_running_and_a_restart_keeps_the_runs(base, uri):
    """Stopped by the command line, restarted on the folder (its port, its data), stopped by
    the Python API: each time no process of the server is left."""
    folder = base / "srv"
    processes = _processes_of(folder)
    assert len(processes) >= 3  # the mlflow server, its uvicorn, the postmaster at least
    stopped = _ntkbench("server", "stop", "--dir", "srv", cwd=base, timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert [p.pid for p in processes if _alive(p)] == [] and not server.leftovers(folder), stopped.stdout
    assert [s.state for s in server.status(folder)] == ["stopped", "stopped"]

    again = _ntkbench("server", "start", "--dir", "srv", cwd=base)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == uri, again.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("iris").experiment_id], max_results=1000)
    assert len(runs) == 2 * WORKERS and {r.info.status for r in runs} == {"FINISHED"}

    processes = _processes_of(folder)
    mlflow_pid, postmaster = (int(p.read_text().split()[0]) for p in (folder / "mlflow.pid", folder / "pgdata" / "postmaster.pid"))
    assert len(processes) >= 3
    assert server.stop(folder) == [f"mlflow server (pid {mlflow_pid}): stopped", f"postgres (pid {postmaster}): stopped"]
    assert [p.pid for p in processes if _alive(p)] == [] and not server.leftovers(folder)


def test_bad_folders_are_one_line_and_exit_2(base, capsys):
    (base / "a-file").write_text("")
    assert cli.main(["server", "status", "--dir", str(base / "nothing-here")]) == 2
    assert cli.main(["server", "start", "--dir", str(base / "a-file")]) == 2
    assert cli.main(["server", "start", "--dir", str(base / "x"), "--port", "70000"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ntkbench")]  # not torch's warnings
    assert len(err) == 3 and all(line.startswith("ntkbench: error: ") for line in err)
    assert "holds no ntkbench server" in err[0] and "is a file" in err[1] and "--port must be" in err[2]
