"""Offline run records, the outbox fallback of a failing store, and ``ntkbench sync``, against
real MLflow SQLite stores in temporary directories."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from ntkbench import cli, runner, study
from ntkbench.methods.nn import NN
from ntkbench.tracking import RECORD_ID_TAG

TINY = {"task.n_train": 60, "task.n_test": 30, "arch.depth": 1, "arch.width": 16, "nn.epochs": 2}
# No kernel cache: a second run would log kernel_cache=hit where the first logged computed.
ARGS = ["--task", "iris", "--method", "nn,ntk", "--kernel-cache", "off", *[f"--set={k}={v}" for k, v in TINY.items()]]
EXACT = ("test_accuracy", "test_mse", "train_accuracy", "train_loss", "n_params")
"""Metrics that a rerun of the same config reproduces exactly (times and memory vary)."""
NO_MLFLOW = "import sys; sys.modules['mlflow'] = None; from ntkbench.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """Each test in its own folder, with no store or outbox set from outside."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NTKBENCH_OUTBOX", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A new MLflow SQLite store, created (schema migrations: seconds) once for the module."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}")
    return path


@pytest.fixture
def new_store(empty_store, workdir):
    """``new_store(name)``: the URI of a fresh store ``name``.db in the test's folder."""
    def make(name: str = "mlflow") -> str:
        shutil.copyfile(empty_store, workdir / f"{name}.db")
        return f"sqlite:///{workdir}/{name}.db"
    return make


def _records(outbox: str | Path) -> list[Path]:
    return sorted(Path(outbox).glob("*.jsonl"))


def _snapshot(uri: str) -> dict[str, dict]:
    """The active runs of experiment iris by run name: status, params, tags (less the record
    id), each metric's steps (and values where reruns agree), and the JSON artifacts (of
    record.json what defines the run)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("iris")
    snapshot = {}
    for run in client.search_runs([experiment.experiment_id]):
        run_id = run.info.run_id
        history = {key: [(m.step, m.value if key in EXACT else None) for m in client.get_metric_history(run_id, key)]
                   for key in run.data.metrics}
        artifacts = {a.path: json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=a.path, tracking_uri=uri)).read_text()) for a in client.list_artifacts(run_id)}
        if "record.json" in artifacts:  # what defines the run; its times, run id and end differ between runs
            artifacts["record.json"] = {k: artifacts["record.json"][k] for k in ("fingerprint", "config", "seed", "status")}
        snapshot[run.info.run_name] = {
            "status": run.info.status, "params": run.data.params, "metrics": history, "artifacts": artifacts,
            "tags": {k: v for k, v in run.data.tags.items() if k != RECORD_ID_TAG}}
    return snapshot


def test_an_offline_run_syncs_into_what_a_direct_run_logs_and_only_once(workdir, new_store, capsys):
    direct, synced = new_store("direct"), new_store("synced")
    assert cli.main(["run", *ARGS, "--tracking-uri", direct]) == 0
    assert cli.main(["run", *ARGS, "--tracking", "offline", "--outbox", "box"]) == 0
    assert "import them into MLflow with `ntkbench sync --outbox box`" in capsys.readouterr().out
    assert len(_records("box")) == 2

    assert cli.main(["sync", "--outbox", "box", "--tracking-uri", synced]) == 0
    out = capsys.readouterr().out
    assert out.count("imported: ") == 2 and "sync: 2 record(s): 2 imported" in out
    assert _records("box") == [] and len(_records("box/synced")) == 2
    expected = _snapshot(direct)
    assert set(expected) == {"nn-mlp-s0-n60", "ntk-mlp-s0-n60"}
    assert [step for step, _ in expected["nn-mlp-s0-n60"]["metrics"]["train_loss"]] == [0, 1]
    assert set(expected["ntk-mlp-s0-n60"]["artifacts"]) == {"record.json", "spectrum.json"}
    assert _snapshot(synced) == expected

    for path in _records("box/synced"):  # the same records again: already in the store
        path.rename(Path("box") / path.name)
    assert cli.main(["sync", "--outbox", "box", "--tracking-uri", synced]) == 0
    assert capsys.readouterr().out.count("skipped: ") == 2
    assert len(MlflowClient(synced).search_runs([MlflowClient(synced).get_experiment_by_name("iris").experiment_id])) == 2


def test_a_store_that_fails_mid_run_loses_nothing(workdir, new_store, monkeypatch, capsys):
    """The SQLite file is overwritten with garbage during nn's fit: MLflow raises, the runs go on
    into the outbox, and once the file is back a sync completes them and drops the partial run."""
    uri, db = new_store(), workdir / "mlflow.db"
    saved = {}
    fit = NN.fit

    def fit_on_a_broken_store(self, *args, **kwargs):
        saved["db"] = db.read_bytes()
        db.write_bytes(b"this is not an SQLite database\n" * 1000)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(NN, "fit", fit_on_a_broken_store)
    results = runner.run(task="iris", method="nn,ntk", options=TINY, tracking_uri=uri, device="cpu")
    assert [r.status for r in results] == ["FINISHED", "FINISHED"]
    err = capsys.readouterr().err
    assert err.count(f"ntkbench: warning: the MLflow store {uri} failed") == 1, err
    assert f"import them with `ntkbench sync --outbox mlruns-outbox --tracking-uri {uri}`" in err
    assert len(_records("mlruns-outbox")) == 2

    db.write_bytes(saved["db"])  # the store is back, with nn's partial run in it
    client = MlflowClient(uri)
    partial = client.search_runs([client.get_experiment_by_name("iris").experiment_id])
    assert [r.info.status for r in partial] == ["RUNNING"] and "train_loss" not in partial[0].data.metrics
    assert cli.main(["sync", "--tracking-uri", uri]) == 0
    assert f"replacing the partial run {partial[0].info.run_id}" in capsys.readouterr().out
    runs = _snapshot(uri)
    assert {name: run["status"] for name, run in runs.items()} == {"nn-mlp-s0-n60": "FINISHED",
                                                                    "ntk-mlp-s0-n60": "FINISHED"}
    nn = runs["nn-mlp-s0-n60"]
    assert [step for step, _ in nn["metrics"]["train_loss"]] == [0, 1]
    assert nn["params"]["method"] == "nn" and "test_accuracy" in nn["metrics"] and "record.json" in nn["artifacts"]
    assert "spectrum.json" in runs["ntk-mlp-s0-n60"]["artifacts"]


def test_offline_runs_need_no_mlflow_and_a_sigkilled_one_syncs_as_failed(workdir, new_store):
    """A fresh interpreter in which ``import mlflow`` fails, as on the GPU machine's image: ntk
    runs to the end, then taylor is killed with SIGKILL while it trains."""
    command = [sys.executable, "-c", NO_MLFLOW, "run", "--task", "iris", "--method", "ntk,taylor", "--tracking",
               "offline", "--outbox", "box", *[f"--set={k}={v}" for k, v in TINY.items()], "--set=taylor.epochs=1000000"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any('"train_loss"' in p.read_text() for p in _records(workdir / "box")):  # taylor is training
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.kill()
    process.wait(timeout=60)
    ntk, taylor = _records(workdir / "box")
    events = [json.loads(line)["event"] for line in ntk.read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end" and {"params", "metrics", "artifact"} <= set(events)

    uri = new_store()
    assert cli.main(["sync", "--outbox", "box", "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("iris").experiment_id])}
    assert runs["ntk-mlp-s0-n60"].info.status == "FINISHED"
    killed = runs["taylor-mlp-s0-n60"]
    assert killed.info.status == "FAILED" and killed.info.end_time >= killed.info.start_time
    assert killed.data.tags["error"].startswith("killed (no heartbeat since ")
    assert killed.data.params["method"] == "taylor" and client.get_metric_history(killed.info.run_id, "train_loss")


def test_without_mlflow_the_default_mode_says_what_to_do_and_off_needs_none(workdir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert cli.main(["run", "--task", "iris", "--method", "ntk"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLflow cannot be imported" in err and "use --tracking offline" in err
    for off in (["--tracking", "off"], ["--no-track"]):
        assert cli.main(["run", "--task", "iris", "--method", "ntk", *off]) == 0
    assert [p.name for p in workdir.iterdir()] == [".ntkbench"]  # the kernel cache, and no tracking files


def test_a_study_records_offline_with_its_study_tags(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    grid = study.StudyGrid((study.Variant("ntk", "ntk"),), label_noise=(0.0,), n_trains=(40,), seeds=(0,),
                           teacher=False, task_options=(("n_test", 30),))
    results = study.run_study("iris", arch_options={"depth": 1, "width": 16}, grid=grid, device="cpu",
                              tracking="offline", outbox="box")
    assert [r.status for r in results] == ["FINISHED"]
    (record,) = _records("box")
    start = json.loads(record.read_text().splitlines()[0])
    assert start["tags"]["ntkbench_study"] == "iris" and start["tags"]["ntkbench_study_id"].startswith("iris-")


def test_sync_names_a_bad_line_and_imports_the_other_records(workdir, new_store, capsys):
    assert cli.main(["run", *ARGS, "--tracking", "offline"]) == 0
    corrupt, cut = _records("mlruns-outbox")
    lines = corrupt.read_text().splitlines(keepends=True)
    corrupt.write_text("".join([*lines[:2], "{not json\n", *lines[3:]]))
    text = cut.read_text()
    cut.write_text(text[:text.rindex('{"event": "end"') + 20])  # killed while writing its end event
    capsys.readouterr()

    uri = new_store()
    assert cli.main(["sync", "--tracking-uri", uri]) == 2
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("ntkbench")] == [
        f"ntkbench: error: {corrupt}:3: not JSON (Expecting property name enclosed in double quotes); "
        "expected one event object a line; left in the outbox"]
    assert "imported: " in captured.out and "(FAILED)" in captured.out
    assert _records("mlruns-outbox") == [corrupt]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("iris").experiment_id])
    assert run.info.run_name == "ntk-mlp-s0-n60" and "killed (no heartbeat since" in run.data.tags["error"]

    assert cli.main(["sync", "--outbox", "missing"]) == 2
    assert "outbox missing does not exist; expected the folder that --tracking offline writes" in capsys.readouterr().err
