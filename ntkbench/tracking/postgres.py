"""The local PostgreSQL of ``ntkbench server``: one cluster in a folder, listening on 127.0.0.1
only, with the database ``mlflow`` owned by the user ``mlflow``, which it trusts (no password).

``initdb`` refuses to run as root (sessions and CI run as root): then every PostgreSQL program
runs as the ``postgres`` user, which must be able to reach the folder. The URIs say
``postgresql+psycopg2://``: SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

DB_USER = DB_NAME = "mlflow"
INSTALL_HINT = ("install PostgreSQL (`apt-get install postgresql`) or pass --backend-store-uri "
                "postgresql+psycopg2://USER@HOST:PORT/DB to a database of your own")


class ServerError(ValueError):
    """A problem of ``ntkbench server`` (its PostgreSQL or its mlflow server) in one line, with
    what to do or the log to read."""


def missing() -> str:
    """Why a local PostgreSQL cannot be started here (no binaries, no user to run them as), or ""."""
    try:
        bin_dir()
        run_as()
    except ServerError as e:
        return str(e)
    return ""


def bin_dir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                     key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(folders):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ServerError(f"PostgreSQL's initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")


def run_as() -> dict:
    """Popen's ``user``/``group`` arguments for PostgreSQL's programs: none for an ordinary
    user; the ``postgres`` user for root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("initdb refuses to run as root and there is no `postgres` user to run PostgreSQL as; "
                          f"run as another user, or {INSTALL_HINT}") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def alive(pid: int, started: str | None = None) -> bool:
    """``pid`` runs and is not a zombie (an orphan's exit status waits for an init that may never
    collect it); with ``started`` (``repr`` of its create time), it is also the process started
    then, not a reused pid."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and started in (None, repr(process.create_time()))
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Cluster:
    """A cluster in ``pgdata``; the output of its programs goes to ``log``."""

    pgdata: Path
    log: Path

    def postmaster(self) -> tuple[int, int] | None:
        """(pid, port) of the live postmaster, from ``postmaster.pid`` (lines 1 and 4); None if
        it does not run."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if alive(pid) else None

    @staticmethod
    def uri(port: int) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"

    def start(self, port: int) -> int:
        """``initdb`` the first time; ``pg_ctl start`` on 127.0.0.1:``port`` unless a postmaster
        runs already; the database ``mlflow`` if missing. Returns the port it listens on."""
        folder, user = bin_dir(), run_as()
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(folder, user)
        running = self.postmaster()
        if running is None:
            options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            self._run(user, [str(folder / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log), "-o", options,
                             "-w", "-t", "60", "start"], "pg_ctl start")
            running = self.postmaster()
            if running is None:
                raise ServerError(f"PostgreSQL exited right after its start; see {self.log}")
        self._create_database(running[1])
        return running[1]

    def stop(self) -> list[int]:
        """``pg_ctl stop``, fast, then immediate; the pids still alive after it (none, normally)."""
        running = self.postmaster()
        if running is None:
            return []
        pids = [running[0], *(c.pid for c in psutil.Process(running[0]).children(recursive=True))]
        pg_ctl = str(bin_dir() / "pg_ctl")
        left = pids
        for mode in ("fast", "immediate"):
            subprocess.run([pg_ctl, "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"], cwd="/",
                           capture_output=True, **run_as())
            left = [p for p in pids if alive(p)]
            if not left:
                break
        return left

    def _initdb(self, folder: Path, user: dict) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.log.touch()
        if user:
            for path in (self.pgdata, self.log):
                os.chown(path, user["user"], user["group"])
            if subprocess.run(["test", "-w", str(self.pgdata), "-a", "-x", str(self.pgdata)], cwd="/", **user).returncode:
                raise ServerError(f"the postgres user cannot write {self.pgdata}: a folder above it is closed to it "
                                  "(mode 0700?); choose a --dir that other users can reach")
        self._run(user, [str(folder / "initdb"), "-D", str(self.pgdata), "-U", DB_USER, "-A", "trust", "-E", "UTF8",
                         "--locale=C", "--no-instructions"], "initdb")

    def _run(self, user: dict, command: list[str], name: str) -> None:
        """A PostgreSQL program (as ``user``), its output appended to the log."""
        done = subprocess.run(command, cwd="/", capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
                              **user)
        with open(self.log, "a") as log:
            log.write(f"# {name}: {' '.join(command)}\n{done.stdout}{done.stderr}")
        if done.returncode:
            last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
            raise ServerError(f"{name} failed ({last}); see {self.log}")

    def _create_database(self, port: int) -> None:
        try:
            import psycopg2
        except ImportError:
            raise ServerError("psycopg2 is not installed; `pip install psycopg2-binary` (ntkbench declares it)") from None
        try:
            connection = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres",
                                          connect_timeout=10)
        except psycopg2.Error as e:
            raise ServerError(f"PostgreSQL on port {port} refused a connection ({str(e).strip().splitlines()[0]}); "
                              f"see {self.log}") from None
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            connection.close()
