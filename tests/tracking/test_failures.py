"""No run is lost: concurrent first use of a store, hard kills, signals, an interrupted sync, an
unreachable server, a half-migrated store and dead RUNNING runs, each with real ``ntkbench``
processes, real signals and real SQLite stores (no mocks). Random moments come from seeded
generators, so a failing trial reruns with the same choices (where a kill lands still depends on
the machine's speed, so every assertion holds wherever it lands). Timing enters only as generous
deadlines: on events (failure_kit.DEADLINE_S), on stopping after a signal (STOP_S), and the
issue's 60 s bound on falling back from a server that is down."""

import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from failure_kit import (TINY, JournalWatch, finish, journal_metrics, journals, runs, snapshot, start, start_python,
                         wait_for)
from mlflow import MlflowClient

from ntkbench import cli
from ntkbench.tracking.environment import HOST_TAG
from ntkbench.tracking.journal import HEARTBEAT_TAG, now_ms
from ntkbench.tracking.schema import half_migrated

pytestmark = pytest.mark.processes  # CI runs these once, in its 2-thread pass

EPOCHS = 300
GRID = ("run", "--task", "digits", "--method", "nn,ntk", "--seeds", "0,1,2", "--set=task.n_train=200",
        "--set=task.n_test=100", "--set=arch.depth=1", "--set=arch.width=32", f"--set=nn.epochs={EPOCHS}")
"""Six runs of a second or less each: small, but not over before a kill lands."""
KERNELS = ("run", "--task", "digits", "--method", "ntk,nngp", "--seeds", ",".join(map(str, range(10))),
           "--set=task.n_train=200", "--set=task.n_test=100", "--set=arch.depth=1", "--set=arch.width=32")
KILLED = "killed (no heartbeat since "
STOP_S = 60
"""A grid stops at its next safe point (a kernel tile, a run) and exits within this after SIGTERM."""


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """Each test in its own folder (MLflow's artifacts go to ./mlruns), nothing set from outside."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "NTKBENCH_OUTBOX", "NTKBENCH_CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory) -> Path:
    """A store whose schema MLflow created alone (seconds of migrations), once for the module."""
    path = tmp_path_factory.mktemp("clean") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def copy_store(clean_store: Path, path: Path) -> str:
    shutil.copyfile(clean_store, path)
    return f"sqlite:///{path}"


@pytest.mark.parametrize("trial", [1, 2])
def test_six_processes_at_once_on_a_fresh_store_all_finish(workdir, trial):
    uri = f"sqlite:///{workdir}/fresh.db"  # no file yet: the six race to create the schema
    processes = [start(workdir, "run", "--task", "iris", "--method", "ntk,nngp", "--seeds", str(seed), *TINY,
                       "--tracking-uri", uri) for seed in range(6)]
    for process in processes:
        status, out, err = finish(process)
        assert status == 0, err
    found = runs(uri)
    assert sorted(r.info.run_name for r in found) == sorted(f"{m}-mlp-s{s}-n60" for m in ("ntk", "nngp") for s in range(6))
    assert {r.info.status for r in found} == {"FINISHED"} and len(snapshot(uri)) == 12  # no record twice
    assert half_migrated(uri) == ""


def nn_losses(outbox: Path, seed: int) -> int:
    """How many train_loss events the journal of nn's run with ``seed`` has so far (0 before the
    run and once it ended: the store took it all and the journal went)."""
    for path in outbox.glob(f"*-nn-mlp-s{seed}-*.jsonl"):
        try:
            return path.read_text().count('"train_loss"')
        except FileNotFoundError:
            return 0
    return 0


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_moment_of_a_grid_loses_nothing_after_sync(workdir, clean_store, trial):
    """The grid is killed at a seeded random moment: even trials a random delay after a random
    run began, odd ones as nn (a random seed) logs a random epoch's loss. Before sync the store
    has the runs that finished and at most one RUNNING; the outbox, the killed run's journal."""
    rng, uri, outbox = random.Random(trial), copy_store(clean_store, workdir / "mlflow.db"), workdir / "box"
    process, watch = start(workdir, *GRID, "--tracking-uri", uri, "--outbox", str(outbox)), JournalWatch(outbox)
    if trial % 2 == 0:
        run_index = rng.randrange(1, 6)
        wait_for(lambda: watch.count() >= run_index or process.poll() is not None, f"run {run_index} to start")
        time.sleep(rng.uniform(0, 1.0))
    else:
        seed, epoch = rng.randrange(3), rng.randrange(1, EPOCHS)
        wait_for(lambda: nn_losses(outbox, seed) >= epoch or process.poll() is not None, f"nn s{seed} epoch {epoch}")
    process.kill()
    assert finish(process)[0] in (-signal.SIGKILL, 0)  # 0: the grid ended first (a fast machine); all below holds

    before, left = snapshot(uri), journals(outbox)
    assert len(left) <= 2 and sum(events[-1]["event"] != "end" for events in left.values()) <= 1
    assert cli.main(["sync", "--outbox", str(outbox), "--tracking-uri", uri]) == 0
    after = snapshot(uri)
    assert set(after) == {*(k for k, run in before.items() if run["status"] == "FINISHED"), *left}
    assert len({run["name"] for run in after.values()}) == len(after) <= 6
    for record_id, run in before.items():
        if run["status"] == "FINISHED":
            assert after[record_id] == run
    for record_id, events in left.items():
        run = after[record_id]
        assert run["metrics"] == journal_metrics(events)
        assert run["params"] == {k: v for e in events if e["event"] == "params" for k, v in e["params"].items()}
        if events[-1]["event"] == "end":  # killed after its end reached the store, before its journal went
            assert run["status"] == events[-1]["status"]
        else:
            assert run["status"] == "FAILED" and run["tags"]["error"].startswith(KILLED)
            steps = [step for step, _, _ in run["metrics"].get("train_loss", [])]
            assert steps == list(range(len(steps)))  # nn's losses up to the kill, none missing
            if trial % 2 and run["name"] == f"nn-mlp-s{seed}-n200":
                assert len(steps) >= epoch
    assert list(outbox.glob("*.jsonl")) == []


@pytest.mark.parametrize("signum, trial", [(signal.SIGTERM, 0), (signal.SIGTERM, 1), (signal.SIGHUP, 2)])
def test_a_signal_at_a_random_moment_of_a_kernel_grid_ends_it_killed_never_running(workdir, clean_store, signum, trial):
    rng, uri, outbox = random.Random(trial), copy_store(clean_store, workdir / "mlflow.db"), workdir / "box"
    process, watch = start(workdir, *KERNELS, "--tracking-uri", uri, "--outbox", str(outbox)), JournalWatch(outbox)
    run_index = rng.randrange(1, 16)
    wait_for(lambda: watch.count() >= run_index or process.poll() is not None, f"run {run_index} to start")
    time.sleep(rng.uniform(0, 0.3))
    process.send_signal(signum)
    out, err = process.communicate(timeout=STOP_S)  # never a hang on a locked store (one took 20 s, then RUNNING)
    status = process.returncode
    if status == 0:  # the grid ended before the signal (a fast machine)
        assert [r.info.status for r in runs(uri)] == ["FINISHED"] * 20
        return
    assert status == 128 + signum, err
    assert "Traceback" not in err and f"stopped by signal {signum} ({signal.Signals(signum).name})" in err
    statuses = [r.info.status for r in sorted(runs(uri), key=lambda r: r.info.start_time)]
    assert run_index <= len(statuses) < 20 and set(statuses[:-1]) <= {"FINISHED"}
    # the run the signal stopped is KILLED; it FINISHED when the signal came after its last safe point
    assert statuses[-1] in ("KILLED", "FINISHED")
    assert list(outbox.glob("*.jsonl")) == []  # every event reached the store


def test_a_sync_killed_mid_import_then_rerun_equals_one_clean_import(workdir, clean_store, capsys):
    box, copy = workdir / "box", workdir / "copy"
    assert cli.main(["run", "--task", "iris", "--method", "ntk,nngp", "--seeds", ",".join(map(str, range(10))), *TINY,
                     "--tracking", "offline", "--outbox", str(box)]) == 0
    shutil.copytree(box, copy)  # the same 20 journals, times included
    uri, clean = copy_store(clean_store, workdir / "mlflow.db"), copy_store(clean_store, workdir / "clean.db")
    rng = random.Random(4)
    process = start(workdir, "sync", "--outbox", str(box), "--tracking-uri", uri)
    imported = rng.randrange(1, 16)
    wait_for(lambda: len(list(box.glob("synced/*.jsonl"))) >= imported or process.poll() is not None,
             f"{imported} journals to be imported")
    time.sleep(rng.uniform(0, 0.1))
    process.kill()
    assert finish(process)[0] in (-signal.SIGKILL, 0)  # 0: the sync ended first (a fast machine)

    assert cli.main(["sync", "--outbox", str(box), "--tracking-uri", uri]) == 0
    assert cli.main(["sync", "--outbox", str(copy), "--tracking-uri", clean]) == 0
    expected = snapshot(clean)
    assert len(expected) == 20 and {run["status"] for run in expected.values()} == {"FINISHED"}
    assert snapshot(uri) == expected
    assert list(box.glob("*.jsonl")) == [] and len(list(box.glob("synced/*.jsonl"))) == 20


def test_an_unreachable_server_falls_back_in_seconds_then_sync_restores_every_run(workdir, clean_store, capsys):
    began = time.monotonic()
    process = start(workdir, "run", "--task", "iris", "--method", "ntk,nngp", *TINY, "--tracking-uri",
                    "http://127.0.0.1:9", "--outbox", "box", "--quiet")  # no progress lines: only what went wrong
    status, out, err = finish(process)
    assert time.monotonic() - began < 60  # not minutes of retries; $NTKBENCH_CONNECT_TIMEOUT at its default
    assert status == 3, err
    warning, note = err.splitlines()  # no traceback, no MLflow noise: these two lines only
    assert warning.startswith("ntkbench: warning: the tracking server http://127.0.0.1:9 does not answer")
    assert note == "ntkbench: 2 of 2 runs are in the outbox, not the store; exit status 3"

    uri = copy_store(clean_store, workdir / "mlflow.db")
    assert cli.main(["sync", "--outbox", "box", "--tracking-uri", uri]) == 0
    assert sorted((r.info.run_name, r.info.status) for r in runs(uri)) == [("nngp-mlp-s0-n60", "FINISHED"),
                                                                          ("ntk-mlp-s0-n60", "FINISHED")]


RACE = "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"


def half_migrate(workdir: Path, clean_store: Path, tries: int = 2) -> str:
    """A store that concurrent first use left half-migrated. For real first: six raw MLflow
    clients open one fresh file at once (the old race; on 2 cores it left ``_alembic_tmp_*``
    tables in 3 of 4 tries, at the head revision), up to ``tries`` times. If it never does,
    the state is built from a real store: a clean one plus the ``_alembic_tmp_runs`` copy that a
    batch migration creates first and the race left behind."""
    path = workdir / "raced.db"
    for _ in range(tries):
        path.unlink(missing_ok=True)
        for process in [start_python(workdir, RACE, f"sqlite:///{path}") for _ in range(6)]:
            finish(process)  # most of them fail: duplicate column, table _alembic_tmp_* already exists
        if half_migrated(f"sqlite:///{path}"):
            return f"sqlite:///{path}"
    shutil.copyfile(clean_store, path)
    with sqlite3.connect(path) as connection:
        (sql,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()
        connection.execute(sql.replace('"runs"', "_alembic_tmp_runs", 1))
    return f"sqlite:///{path}"


def schema(path: Path) -> dict[str, tuple]:
    """Each table's columns (name, type, not null, primary key), foreign keys and named indexes
    (SQLite numbers its automatic indexes in creation order, which a race changes)."""
    with sqlite3.connect(path) as connection:
        def pragma(name: str, table: str) -> list:
            return connection.execute(f'PRAGMA {name}("{table}")').fetchall()

        return {t: ([(c[1], c[2], c[3], c[5]) for c in pragma("table_info", t)],
                    sorted(f[2:5] for f in pragma("foreign_key_list", t)),
                    sorted(i[1:3] for i in pragma("index_list", t) if not i[1].startswith("sqlite_autoindex")))
                for (t,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_half_migrated_store_is_named_with_its_repair_which_fixes_it(workdir, clean_store, capsys):
    uri = half_migrate(workdir, clean_store)
    run = ["run", "--task", "iris", "--method", "ntk", *TINY, "--tracking-uri", uri]
    assert cli.main(run) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "half-migrated" in line and line.endswith(f"repair it with `ntkbench store repair --tracking-uri {uri}`")
    board = ["leaderboard", "--tracking-uri", uri, "--entries", str(workdir / "entries"), "--out", "board"]
    assert cli.main(board) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "half-migrated" in line and "`ntkbench store repair --tracking-uri" in line

    status, out, err = finish(start(workdir, "store", "repair", "--tracking-uri", uri))  # a new process: MLflow's
    assert status == 0 and err == ""  # logging as it is at start, so any INFO line of its migrations would show
    (line,) = out.splitlines()
    assert "_alembic_tmp_" in line and half_migrated(uri) == ""
    assert schema(workdir / "raced.db") == schema(clean_store)
    assert cli.main(run) == 0
    assert cli.main(board) == 0 and "leaderboard: 1 rows (1 runs)" in capsys.readouterr().out


def test_a_dead_running_run_is_flagged_then_reaped_by_sync_after_its_lease(workdir, clean_store, capsys):
    """A run SIGKILLed while it trains stays RUNNING; every later run and leaderboard says so in
    one line. Then it plays a run of another host (its journal is there, not here): a sync
    reaps it only once its last sign of life is older than ``--lease``."""
    uri, outbox = copy_store(clean_store, workdir / "mlflow.db"), workdir / "box"
    process = start(workdir, "run", "--task", "digits", "--method", "nn", *TINY, "--set=nn.epochs=1000000",
                    "--tracking-uri", uri, "--outbox", str(outbox))
    wait_for(lambda: any('"train_loss"' in p.read_text() for p in outbox.glob("*.jsonl")), "nn to train")
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL
    (killed,) = runs(uri)
    assert killed.info.status == "RUNNING"

    notice = (f"ntkbench: 1 run(s) in {uri} are still RUNNING but their process is gone; mark them FAILED with "
              f"`ntkbench sync --tracking-uri {uri}`")
    board = ["leaderboard", "--tracking-uri", uri, "--entries", str(workdir / "entries"), "--out", "board"]
    assert cli.main(board) == 0
    assert capsys.readouterr().err.splitlines() == [notice]
    assert cli.main(["run", "--task", "iris", "--method", "ntk", *TINY, "--tracking-uri", uri, "--quiet"]) == 0
    assert capsys.readouterr().err.splitlines() == [notice]

    (journal,) = outbox.glob("*.jsonl")
    journal.rename(workdir / journal.name)  # on the other host
    client = MlflowClient(uri)
    client.set_tag(killed.info.run_id, HOST_TAG, "another-host.example")
    since = int(killed.data.tags.get(HEARTBEAT_TAG, killed.info.start_time))
    assert cli.main(board) == 0 and capsys.readouterr().err == ""  # within the default lease: alive
    sync = ["sync", "--outbox", str(outbox), "--tracking-uri", uri, "--lease"]
    assert cli.main([*sync, "3600"]) == 0
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"
    wait_for(lambda: now_ms() - since > 1000, "the heartbeat to be a second old")
    assert cli.main([*sync, "1"]) == 0
    reaped = client.get_run(killed.info.run_id)
    assert reaped.info.status == "FAILED" and reaped.data.tags["error"].startswith(KILLED)
    assert reaped.info.end_time == since and reaped.data.params["method"] == "nn"

    (workdir / journal.name).rename(journal)  # the other host syncs its journal: all of it goes in, once
    (events,) = journals(outbox).values()
    assert cli.main(sync[:-1]) == 0
    (run,) = [r for r in snapshot(uri).values() if r["name"] == killed.info.run_name]
    assert run["status"] == "FAILED" and run["metrics"] == journal_metrics(events)
    for bad in ("0", "soon"):
        assert cli.main([*sync, bad]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert f"--lease {bad}" in line
