"""Safe first use of a store: its schema is created or upgraded exactly once, under a lock,
before any run is created; a store left half-migrated is named with the command that repairs
it; a tracking server that does not answer is found out in seconds, not minutes.

MLflow creates and migrates a database store's schema when a process first opens it. Several
processes opening one new store at once run those migrations concurrently and break it
(``duplicate column name: step``, ``table _alembic_tmp_metrics already exists``; see
shared/NOTES.md). Here the first open is serialized: an ``flock`` on ``<file>.lock`` beside an
SQLite file, a PostgreSQL advisory lock for a server database. An HTTP tracking server migrates
its own database once, at its start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

CONNECT_TIMEOUT_ENV = "NTKBENCH_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_ADVISORY_KEY = 0x6E746B62  # "ntkb": one advisory lock for every ntkbench process on a PostgreSQL store


class StoreUnavailable(ValueError):
    """The store cannot be reached or opened now (a server down, an unwritable path); a run can
    go on into the outbox."""


class StoreBroken(ValueError):
    """The store's schema was left half-migrated; the message names the repair command."""


def sqlite_path(uri: str) -> Path | None:
    """The file of an ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def connect_timeout() -> float:
    """Seconds to wait for a tracking server: ``$NTKBENCH_CONNECT_TIMEOUT``, default 5."""
    return float(os.environ.get(CONNECT_TIMEOUT_ENV) or DEFAULT_CONNECT_TIMEOUT_S)


def open_client(uri: str) -> MlflowClient:
    """An MLflow client of ``uri`` whose schema is ready: created or upgraded now, under the lock,
    if this is the store's first use. Raises :class:`StoreUnavailable` (with MLflow's reason in
    one line) or :class:`StoreBroken`. MLflow's own INFO lines about tables are silenced."""
    from mlflow import MlflowClient

    _quiet()
    if uri.startswith(("http://", "https://")):
        _probe(uri)
        # One failed request must not stall a grid for minutes of retries: it goes to the outbox.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(10, int(connect_timeout()))))
    try:
        with schema_lock(uri):
            broken = _broken(uri)  # MLflow opens it all the same when the race ended at the head revision
            if broken:
                raise broken
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # opens the store: creates or upgrades the schema
    except (StoreUnavailable, StoreBroken):
        raise
    except Exception as e:  # whatever MLflow raised for this store
        broken = _broken(uri)
        if broken:
            raise broken from None
        detail = (str(e).strip().splitlines() or [""])[0][:300]
        raise StoreUnavailable(f"the MLflow store {uri} cannot be opened ({type(e).__name__}: {detail})") from None
    return client


def _quiet() -> None:
    """Silence the INFO lines MLflow and alembic log about creating and upgrading tables."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _broken(uri: str) -> StoreBroken | None:
    """The :class:`StoreBroken` of a half-migrated store, naming the repair command; else None."""
    problem = half_migrated(uri)
    return StoreBroken(f"the MLflow store {uri} was left half-migrated ({problem}), as concurrent first use by an "
                       f"older ntkbench or MLflow leaves it; repair it with `ntkbench store repair --tracking-uri {uri}`"
                       ) if problem else None


def _probe(uri: str) -> None:
    """GET the server's /health within :func:`connect_timeout` seconds, or StoreUnavailable."""
    timeout = connect_timeout()
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except (OSError, ValueError) as e:  # refused, timed out, DNS, HTTP error status
        raise StoreUnavailable(f"the tracking server {uri} does not answer within {timeout:g} s "
                               f"({type(e).__name__}: {e})") from None


@contextmanager
def schema_lock(uri: str) -> Iterator[None]:
    """Exclusive, across processes, while the block opens the store: an ``flock`` on
    ``<file>.lock`` for SQLite, ``pg_advisory_lock`` for PostgreSQL, nothing otherwise."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.parent.is_dir():
            raise StoreUnavailable(f"the MLflow store {uri} cannot be opened: folder {path.parent} does not exist")
        try:
            handle = open(path.with_name(path.name + ".lock"), "a")
        except OSError as e:
            raise StoreUnavailable(f"the MLflow store {uri} cannot be opened ({e.strerror}: {e.filename})") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    if uri.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_ADVISORY_KEY})"))
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({_ADVISORY_KEY})"))
        finally:
            engine.dispose()
        return
    yield


def _leftovers(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' "
                              "ESCAPE '\\' ORDER BY name")
    return [name for (name,) in rows]


def half_migrated(uri: str) -> str:
    """What is wrong with a half-migrated SQLite store (its leftover ``_alembic_tmp_*`` tables),
    or "" when nothing is (or it is not an SQLite file)."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return ""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            leftovers = _leftovers(connection)
    except sqlite3.Error:
        return ""
    return f"leftover migration tables {', '.join(leftovers)}" if leftovers else ""


def repair(uri: str) -> str:
    """Repair a half-migrated store and return what was done, in one line.

    SQLite: for each leftover ``_alembic_tmp_<t>`` table, drop it if ``<t>`` exists (the copy
    was never finished, so ``<t>`` holds the data), else rename it to ``<t>`` (the original was
    already dropped: the copy is the data); then MLflow's migrations run to the head, under the
    lock. Other databases: the migrations under the lock."""
    from mlflow.store.db.utils import _upgrade_db
    import sqlalchemy

    _quiet()
    done = []
    with schema_lock(uri):
        path = sqlite_path(uri)
        if path is not None:
            if not path.is_file():
                raise ValueError(f"no store to repair: {path} does not exist")
            with sqlite3.connect(path) as connection:
                tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                for tmp in _leftovers(connection):
                    original = tmp[len("_alembic_tmp_"):]
                    if original in tables:
                        connection.execute(f'DROP TABLE "{tmp}"')
                        done.append(f"dropped {tmp}")
                    else:
                        connection.execute(f'ALTER TABLE "{tmp}" RENAME TO "{original}"')
                        done.append(f"renamed {tmp} to {original}")
        engine = sqlalchemy.create_engine(uri)
        try:
            _upgrade_db(engine)
        finally:
            engine.dispose()
    return "; ".join([*done, "schema upgraded to MLflow's head revision"])
