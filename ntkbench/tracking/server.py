"""``ntkbench server``: a team tracking server in one folder, a local PostgreSQL and
``mlflow server`` in front of it, for many workers logging at once over HTTP.

    DIR/pgdata/        PostgreSQL's cluster (``initdb``), listening on 127.0.0.1 only
    DIR/artifacts/     the runs' artifacts, proxied by the server (``--serve-artifacts``)
    DIR/server.json    what was started: ports, the mlflow server's pid and its start time
    DIR/mlflow.log, DIR/postgres.log, DIR/mlflow.pid

What is guaranteed:

- :func:`start` returns the tracking URI only once the server answers ``/health``, which it does
  after it created or upgraded the database's schema (once, before any worker logs). If it does
  not answer within the deadline, what this call started is stopped again and the error names
  the log. Restarting a folder reuses its data; a server already running is left as it is.
- :func:`stop` stops the mlflow server (its whole session: the uvicorn workers too) and
  PostgreSQL, and raises unless no process of either is left.
- The database (``ntkbench.tracking.postgres``) trusts connections from 127.0.0.1: anyone with a
  shell on this machine can reach it. With ``--backend-store-uri`` a database of your own is
  used and no PostgreSQL is started.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from ntkbench import signals
from ntkbench.tracking.postgres import Cluster, ServerError, alive

__all__ = ["Layout", "Service", "ServerError", "StillRunning", "leftovers", "start", "status", "stop"]

DEFAULT_PORT = 5000
DEFAULT_WORKERS = 1
"""uvicorn worker processes of the mlflow server. One, not MLflow's 4: measured here (2 cores,
mlflow 3.17), each request of a client that keeps its connection alive, as MLflow's client does,
took ~50 ms with 2 or 4 workers and ~5 ms with 1; 8 concurrent clients got 182 requests/s from
1 worker, 82 from 4; and 1 worker starts in 6 s, 4 in 25 s."""
HEALTH_DEADLINE_S = 120.0


class StillRunning(ServerError):
    """:func:`stop` left processes alive (their pids are in the message)."""


@dataclass(frozen=True)
class Layout:
    """The files of a server folder."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def postgres_log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.pgdata, self.postgres_log)


@dataclass(frozen=True)
class Service:
    """One process of the server: ``state`` is running, stopped or unknown (it was started on
    another host, which this machine cannot see)."""

    name: str
    state: str
    pid: int | None
    port: int | None
    uri: str

    def line(self) -> str:
        where = f", pid {self.pid}" if self.pid else ""
        return f"{self.name}: {self.state}{where}, port {self.port or '-'}, {self.uri or '-'}"


# ---- the commands ----------------------------------------------------------------------------

def start(folder: str | Path, port: int | None = None, host: str | None = None,
          backend_store_uri: str | None = None, workers: int | None = None,
          deadline_s: float = HEALTH_DEADLINE_S) -> str:
    """Start PostgreSQL (unless ``backend_store_uri``) and ``mlflow server`` for ``folder``
    and return the tracking URI once ``/health`` answers. ``port`` defaults to the folder's
    last port, else 5000; ``host`` is the interface the mlflow server binds (the folder's last,
    else 127.0.0.1; 0.0.0.0 serves other machines too); ``workers`` its uvicorn processes (the
    folder's last, else :data:`DEFAULT_WORKERS`). Raises :class:`ServerError`."""
    if port is not None and not 0 < port < 65536:
        raise ServerError(f"--port must be between 1 and 65535, got {port}")
    if workers is not None and workers < 1:
        raise ServerError(f"--workers must be >= 1, got {workers}")
    layout = Layout(Path(folder).resolve())
    if layout.root.exists() and not layout.root.is_dir():
        raise ServerError(f"--dir {layout.root} is a file; expected a folder for the server's data")
    layout.root.mkdir(parents=True, exist_ok=True)
    state = _read_state(layout)
    mlflow = _mlflow_service(layout, state)
    if mlflow.state == "running":
        if not state.get("backend_store_uri") and layout.cluster.postmaster() is None:  # the database died alone
            layout.cluster.start(state["postgres_port"])
        return mlflow.uri
    port, host = port or state.get("port") or DEFAULT_PORT, host or state.get("host") or "127.0.0.1"
    if not _port_free(host, port):
        raise ServerError(f"port {port} on {host} is in use by another program; pass --port with a free one")
    user_backend = _normalize(backend_store_uri or state.get("backend_store_uri") or "") or None
    started_db = user_backend is None and layout.cluster.postmaster() is None
    db_port = None
    if user_backend is None:
        wanted = state.get("postgres_port")
        try:
            db_port = layout.cluster.start(wanted if wanted and _port_free("127.0.0.1", wanted) else _free_port())
        except ServerError:
            if started_db:
                layout.cluster.stop()
            raise
    workers = workers or state.get("workers") or DEFAULT_WORKERS
    process = _launch_mlflow(layout, user_backend or Cluster.uri(db_port), host, port, workers)
    _write_state(layout, {"port": port, "host": host, "workers": workers, "pid": process.pid,
                          "pid_start": repr(psutil.Process(process.pid).create_time()),
                          "hostname": platform.node(), "backend_store_uri": user_backend, "postgres_port": db_port})
    uri = _display_uri(host, port)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    problem = "was interrupted"
    try:  # a Ctrl-C while waiting, too, stops what this call started
        problem = _wait_healthy(process, f"http://{local}:{port}/health", deadline_s)
    finally:
        if problem:
            _stop_session(process.pid)
            if started_db:
                layout.cluster.stop()
    if problem:
        raise ServerError(f"the mlflow server at {uri} {problem}; stopped what was started; see {layout.mlflow_log}")
    return uri


def stop(folder: str | Path) -> list[str]:
    """Stop the mlflow server's session and PostgreSQL; one line per service. Raises
    :class:`ServerError` if the folder holds no server or a process is still alive."""
    layout = _existing(folder)
    state = _read_state(layout)
    lines, left = [], []
    pid, mlflow = state.get("pid"), _mlflow_service(layout, state)
    if mlflow.state.startswith("unknown"):
        raise ServerError(f"the mlflow server of {layout.root} was {mlflow.state[len('unknown ('):-1]}; stop it there")
    if mlflow.state == "running":
        left += _stop_session(pid)
        lines.append(f"mlflow server (pid {pid}): stopped")
    else:
        lines.append("mlflow server: was not running")
    postgres = _postgres_service(layout)
    if postgres.state == "running":
        left += layout.cluster.stop()
        lines.append(f"postgres (pid {postgres.pid}): stopped")
    elif layout.pgdata.is_dir():
        lines.append("postgres: was not running")
    if left:
        raise StillRunning(f"processes {', '.join(map(str, left))} of {layout.root} are still alive; kill them by pid")
    return lines


def status(folder: str | Path) -> list[Service]:
    """The mlflow server and (if this folder runs one) PostgreSQL, each with its state."""
    layout = _existing(folder)
    services = [_mlflow_service(layout, _read_state(layout))]
    if layout.pgdata.is_dir():
        services.append(_postgres_service(layout))
    return services


def leftovers(folder: str | Path) -> list[int]:
    """The pids of every live process of the folder's server (mlflow's session, PostgreSQL's
    postmaster and its children); empty once :func:`stop` has succeeded."""
    layout = Layout(Path(folder).resolve())
    state = _read_state(layout)
    pids = _session(state["pid"]) if state.get("pid") else []
    postgres = _postgres_service(layout)
    if postgres.state == "running":
        pids += [postgres.pid, *(c.pid for c in psutil.Process(postgres.pid).children(recursive=True))]
    return pids


def _postgres_service(layout: Layout) -> Service:
    running = layout.cluster.postmaster()
    if running is None:
        return Service("postgres", "stopped", None, None, "")
    return Service("postgres", "running", running[0], running[1], Cluster.uri(running[1]))


# ---- the mlflow server -----------------------------------------------------------------------

def _mlflow_service(layout: Layout, state: dict) -> Service:
    pid, port = state.get("pid"), state.get("port")
    uri = _display_uri(state.get("host", "127.0.0.1"), port) if port else ""
    if not pid:
        return Service("mlflow server", "stopped", None, port, uri)
    if state.get("hostname") != platform.node():
        return Service("mlflow server", f"unknown (started on {state.get('hostname')})", pid, port, uri)
    if not alive(pid, state.get("pid_start")) and not _session(pid):
        return Service("mlflow server", "stopped", None, port, uri)
    return Service("mlflow server", "running", pid, port, uri)


def _launch_mlflow(layout: Layout, backend: str, host: str, port: int, workers: int) -> subprocess.Popen:
    """``mlflow server`` detached in its own session (a closed terminal does not stop it), its
    output appended to mlflow.log, its pid written to mlflow.pid."""
    layout.artifacts.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(layout.artifacts), "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers)]
    with open(layout.mlflow_log, "ab") as log:
        shown = re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", " ".join(command))  # a password of --backend-store-uri
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} ntkbench server start: {shown}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=layout.root, env=_server_env(host))
    (layout.root / "mlflow.pid").write_text(f"{process.pid}\n")
    return process


def _server_env(host: str) -> dict[str, str]:
    """The environment of ``mlflow server``: without its GenAI job runner (seven huey consumers,
    ~1.4 GB, which ntkbench never uses), and, bound to every interface, accepting requests
    addressed to this machine's name as well as MLflow's defaults (localhost, private IPs): the
    URI :func:`start` prints names it, and MLflow answers 403 to a Host it does not allow. The
    caller's own ``MLFLOW_SERVER_*`` settings win."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if host in ("0.0.0.0", "::"):
        try:
            from mlflow.server.security_utils import get_default_allowed_hosts
        except ImportError:  # another MLflow: its defaults, and MLFLOW_SERVER_ALLOWED_HOSTS, apply
            pass
        else:
            names = dict.fromkeys([socket.gethostname(), socket.getfqdn()])
            env["MLFLOW_SERVER_ALLOWED_HOSTS"] = ",".join([*get_default_allowed_hosts(), *names,
                                                           *(f"{n}:*" for n in names)])
    return {**env, **os.environ}


def _wait_healthy(process: subprocess.Popen, url: str, deadline_s: float) -> str:
    """"" once ``url`` answers 200, else what happened (the process exited, or the deadline)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        signals.check()
        if process.poll() is not None:
            return f"exited with status {process.returncode} before answering"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return ""
        except OSError:
            pass
        time.sleep(0.5)
    return f"did not answer {url} within {deadline_s:g} s"


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue
    return members


def _stop_session(sid: int, grace_s: float = 20.0) -> list[int]:
    """SIGTERM to every process of session ``sid``, SIGKILL to those left after ``grace_s``;
    returns the pids still alive after that (none, normally)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for pid in _session(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(sid)
            if not _session(sid):
                return []
            time.sleep(0.2)
    return _session(sid)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is this process's child (a start in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---- helpers ---------------------------------------------------------------------------------

def _normalize(uri: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg2://`` (SQLAlchemy 2.1 would want psycopg 3)."""
    return "postgresql+psycopg2://" + uri[len("postgresql://"):] if uri.startswith("postgresql://") else uri


def _display_uri(host: str, port: int) -> str:
    return f"http://{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on ``host``:``port`` (a socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _existing(folder: str | Path) -> Layout:
    layout = Layout(Path(folder).resolve())
    if not layout.state.is_file():
        raise ServerError(f"{layout.root} holds no ntkbench server (no server.json); start one with "
                          f"`ntkbench server start --dir {folder}`")
    return layout


def _read_state(layout: Layout) -> dict:
    try:
        return json.loads(layout.state.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ServerError(f"{layout.state} is not valid JSON ({e}); stop what runs by hand and remove it") from None


def _write_state(layout: Layout, state: dict) -> None:
    tmp = layout.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.chmod(tmp, 0o600)  # a --backend-store-uri may hold a password
    tmp.replace(layout.state)
