"""``--executor ray`` on a real local Ray cluster (conftest.py) against the local loop, with
real MLflow SQLite stores and a worker that really dies.

Determinism: both executors run each run on this machine's CPU with one torch thread (the
driver's set here, the worker's from its one requested CPU), so every figure that is not a time
or a memory reading is expected bitwise equal, the trained ``nn`` and ``taylor`` included; the
assertion allows 1e-12 relative (the exact kernels' solves are the same arithmetic either way).
Across CPU models floating point may take other paths (shared/NOTES.md): there only the exact
methods would be expected to agree to ~1e-12.
"""

import math
import os
import shutil
import sys
import time

import mlflow
import pytest
from mlflow.entities import ViewType

from ntkbench import cli, runner
from ntkbench.distributed import _probe
from ntkbench.distributed.grid import RayOptions
from ntkbench.tracking import sync
from ntkbench.tracking.attempts import ATTEMPT_TAG, GRID_KEY_TAG, SUPERSEDED
from ntkbench.tracking.schema import open_client


TINY = {"task.n_train": 60, "task.n_test": 40, "arch.depth": 1, "arch.width": 16, "nn.epochs": 2, "taylor.epochs": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (its schema takes seconds to create); each test reads
    its own experiment, or the runs it tagged."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    open_client(uri)
    return uri


def _runs(uri: str, experiment: str, view=ViewType.ACTIVE_ONLY, where: str = ""):
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], where, run_view_type=view) if found else []


def _figures(record) -> dict[str, float]:
    """Everything a run computed that is not a time or a memory reading."""
    figures = {**record.evaluation.to_json(), **record.metrics}
    return {k: v for k, v in figures.items() if not (k.startswith("time") or k.endswith("_s") or "memory" in k)}


def test_a_grid_on_ray_equals_the_local_loop(ray_cluster, store, tmp_path):
    grid = dict(task="digits", method="ntk,taylor,nn", seeds=(0, 1), options=TINY, device="cpu", quiet=True,
                tracking_uri=store, outbox=str(tmp_path / "outbox"))
    local = runner.run(**grid, tags={"executor": "local"})
    remote = runner.run(**grid, tags={"executor": "ray"}, executor="ray")
    assert [(r.method, r.seed, r.n_train, r.fingerprint) for r in remote] == \
        [(r.method, r.seed, r.n_train, r.fingerprint) for r in local]
    assert [r.method for r in remote] == ["nn", "ntk", "taylor"] * 2  # grid order: the reference first
    for mine, theirs in zip(remote, local):
        assert mine.status == theirs.status == "FINISHED" and mine.storage == "mlflow"
        assert mine.params == theirs.params
        figures, expected = _figures(mine), _figures(theirs)
        assert figures.keys() == expected.keys()
        for key, value in expected.items():
            assert math.isclose(figures[key], value, rel_tol=1e-12, abs_tol=1e-12), (mine.method, key)
    assert "linearization_gap_rms" in remote[2].metrics  # taylor got nn's outputs from the nn task
    stored = _runs(store, "digits", where="tags.executor = 'ray'")
    assert len(stored) == len(_runs(store, "digits", where="tags.executor = 'local'")) == 6
    assert {r.info.status for r in stored} == {"FINISHED"}
    assert sorted(r.info.run_id for r in stored) == sorted(r.run_id for r in remote)
    assert len({r.data.tags[GRID_KEY_TAG] for r in stored}) == 6 and {r.data.tags[ATTEMPT_TAG] for r in stored} == {"0"}
    assert not list((tmp_path / "outbox").glob("*.jsonl"))  # every journal reached the store


def test_untracked_runs_come_back_to_the_driver(ray_cluster):
    records = runner.run(task="iris", method="ntk", seeds=(0, 1), options={"task.n_train": 40, "task.n_test": 20},
                         device="cpu", tracking="off",
                         executor="ray", quiet=True)
    assert [(r.status, r.seed, r.run_id, r.storage) for r in records] == [("FINISHED", 0, None, ""),
                                                                          ("FINISHED", 1, None, "")]


def test_a_worker_killed_mid_run_is_retried_and_stored_once(ray_cluster, store, tmp_path, plugin_method):
    plugin_method("crash-once", "ntkbench_crash_once", "CrashOnce")  # plugins/: SIGKILLs itself on its first try
    outbox, marker = tmp_path / "outbox", tmp_path / "marker"
    (record,) = runner.run(task="iris", method="crash-once", options={"crash-once.marker": str(marker)},
                           device="cpu", tracking_uri=store, outbox=str(outbox), executor="ray",
                           ray_options=RayOptions(max_retries=2), quiet=True)
    assert marker.exists()  # the first attempt ran, and died
    assert record.status == "FINISHED" and record.evaluation.test_accuracy > 0.5
    (run,) = _runs(store, "iris")
    assert (run.info.run_id, run.info.status, run.data.tags[ATTEMPT_TAG]) == (record.run_id, "FINISHED", "1")
    # The killed attempt had started its MLflow run; the retry deleted it, and moved its journal aside.
    (killed,) = _runs(store, "iris", ViewType.DELETED_ONLY)
    assert killed.data.tags[GRID_KEY_TAG] == run.data.tags[GRID_KEY_TAG] and killed.data.tags[ATTEMPT_TAG] == "0"
    assert killed.info.status == "RUNNING" and killed.data.params["method"] == "crash-once"
    assert not list(outbox.glob("*.jsonl"))
    (journal,) = (outbox / SUPERSEDED).glob("*.jsonl")
    # Had the killed attempt's journal stayed in an outbox (on another host), sync skips it.
    shutil.copy(journal, outbox / journal.name)
    (result,) = sync(outbox, store)
    assert result.outcome == "skipped" and "superseded" in result.message
    assert [r.info.run_id for r in _runs(store, "iris")] == [record.run_id]


def test_two_runs_asking_one_gpu_each_get_different_gpus(ray_cluster, tmp_path):
    ray = ray_cluster

    @ray.remote(**RayOptions().resources("cuda"))
    def holder(name):
        (tmp_path / name).touch()  # both hold their GPU at once: each waits for the other
        deadline = time.monotonic() + 60
        while not all((tmp_path / n).exists() for n in ("a", "b")) and time.monotonic() < deadline:
            time.sleep(0.01)
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    (ids_a, visible_a), (ids_b, visible_b) = ray.get([holder.remote("a"), holder.remote("b")])
    assert len(ids_a) == len(ids_b) == 1 and ids_a != ids_b
    assert {visible_a, visible_b} == {str(ids_a[0]), str(ids_b[0])}


def test_bad_executor_settings_are_one_line_errors(capsys, unused_port, monkeypatch):
    assert cli.main(["run", "--task", "iris", "--ray-gpus-per-run", "0.5"]) == 2
    assert "--ray-gpus-per-run is for --executor ray" in capsys.readouterr().err
    assert cli.main(["run", "--task", "iris", "--executor", "ray", "--ray-gpus-per-run", "1.5"]) == 2
    assert "expected a fraction in (0, 1] or a whole number" in capsys.readouterr().err
    assert cli.main(["run", "--task", "iris", "--executor", "ray", "--device", "cpu", "--ray-gpus-per-run", "1"]) == 2
    assert "is for runs on CUDA, but these run on the CPU (--device cpu)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"no Ray cluster answers at '127.0.0.1:{unused_port}'"):
        _probe(f"127.0.0.1:{unused_port}")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert cli.main(["run", "--task", "iris", "--executor", "ray"]) == 2
    assert capsys.readouterr().err == ("ntkbench: error: --executor ray needs Ray, which is not installed; "
                                       "pip install 'ntkbench[ray]'\n")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
