"""Leaderboard entries: export from a real MLflow store, validation of bad files, loading."""

from __future__ import annotations

import json
import shlex
import shutil
from datetime import datetime
from pathlib import Path

import pytest

import ntkbench
from ntkbench.cli import build_parser, parse_ints, parse_settings
from ntkbench.leaderboard.entries import (Entry, Problem, compute_checksum, export, load_entries,
                                          records_from_mlflow, validate)
from ntkbench.leaderboard.record import Record

OPTIONS = {"arch.depth": 1, "arch.width": 16, "nn.epochs": 2, "task.n_train": 60}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with nn and ntk on iris (seeds 0, 1) and one ntk run with another ridge."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow puts artifacts under ./mlruns
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after; MLflow sets it
        results = ntkbench.run(task="iris", method="nn,ntk", seeds=(0, 1), options=OPTIONS, device="cpu",
                               tracking_uri=uri)
        other = ntkbench.run(task="iris", method="ntk", seeds=(2,), options={**OPTIONS, "ntk.ridge": 0.1},
                             device="cpu", tracking_uri=uri)
    assert all(r.status == "FINISHED" for r in results + other)
    return {"uri": uri, "results": results, "other": other[0], "root": root}


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("entries")
    paths = export([r.run_id for r in store["results"]], out, store["uri"])
    return out, paths


def test_export_writes_complete_deterministic_files(store, exported, tmp_path):
    out, paths = exported
    assert [p.name for p in paths] == ["iris__nn__mlp.json", "iris__ntk__mlp.json"]
    by_id = {r.run_id: r for r in store["results"]}
    for path in paths:
        text = path.read_text()
        assert text.endswith("}\n") and text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
        data = json.loads(text)
        assert set(data) == set(Entry.model_fields)
        assert data["schema_version"] == 1 and data["task"] == "iris" and data["arch"] == "mlp"
        assert data["verified"] is False and data["verified_by"] is None
        assert data["checksum"] == compute_checksum(data)
        assert [(r["n_train"], r["seed"]) for r in data["results"]] == [(60, 0), (60, 1)]
        for result in data["results"]:
            run = by_id[result["run_id"]]
            assert result["test_accuracy"] == run.metrics["test_accuracy"]
            assert result["n_params"] == int(run.metrics["n_params"]) and result["n_train"] == 60
        assert not {"seed", "task.seed", "method.seed"} & set(data["config"])
        assert data["config"]["arch.width"] == "16" and data["config"]["n_train"] == "60"
        assert set(data["environment"]) == {"device", "device_name", "torch_version", "ntkbench_version", "hostname"}
        assert data["environment"]["device"] == "cpu" and data["environment"]["ntkbench_version"] == ntkbench.__version__
        assert data["commit"]
        assert datetime.fromisoformat(data["date"]).utcoffset().total_seconds() == 0
        assert data["command"].startswith(f"ntkbench run --task iris --method {data['method']} --arch mlp --seeds 0,1")
    again = export([r.run_id for r in reversed(store["results"])], tmp_path, store["uri"])
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    assert validate(out) == [] and validate(paths[0]) == []


def test_command_reproduces_the_run(exported):
    """The command parses with the CLI and reruns the same configuration (ntk is deterministic)."""
    data = json.loads((exported[0] / "iris__ntk__mlp.json").read_text())
    tokens = shlex.split(data["command"])
    assert tokens[:2] == ["ntkbench", "run"]
    args = build_parser().parse_args(tokens[1:])
    settings = parse_settings(args.set)
    assert settings["arch.width"] == 16 and settings["task.n_train"] == 60 and settings["ntk.ridge"] is None
    assert not any(key.startswith("task.") and key[5:] in ("source", "split", "seed") for key in settings)
    rerun = ntkbench.run(task=args.task, method=args.method, arch=args.arch, seeds=parse_ints("--seeds", args.seeds, 0),
                         options=settings, device=args.device, track=False)
    assert [r.metrics["test_accuracy"] for r in rerun] == [r["test_accuracy"] for r in data["results"]]


def _bad_copies(source: Path, target: Path) -> dict[str, tuple[str, str]]:
    """Bad variants of a good entry; file name → (expected field, a word of the reason)."""
    text = source.read_text()
    good = json.loads(text)

    def write(name: str, data: dict, rehash: bool = True) -> None:
        if rehash:  # so that the one intended problem is the only one
            data["checksum"] = compute_checksum(data)
        (target / name).write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")

    (target / "truncated.json").write_text(text[: len(text) // 2])
    missing = json.loads(text)
    del missing["commit"]
    write("missing.json", missing)
    accuracy = json.loads(text)
    accuracy["results"][0]["test_accuracy"] = 1.5
    write("accuracy.json", accuracy)
    write("extra.json", {**good, "comment": "hello"})
    tampered = json.loads(text)
    tampered["results"][1]["time_fit_s"] += 1.0
    write("tampered.json", tampered, rehash=False)
    write("version.json", {**good, "schema_version": 2})
    return {"truncated.json": ("<file>", "JSON"), "missing.json": ("commit", "required"),
            "accuracy.json": ("results.0.test_accuracy", "less than or equal to 1"),
            "extra.json": ("comment", "not permitted"), "tampered.json": ("checksum", "mismatch"),
            "version.json": ("schema_version", "1")}


def test_validate_reports_every_bad_file_and_load_keeps_the_good(exported, tmp_path):
    out, paths = exported
    for path in paths:
        shutil.copy(path, tmp_path / path.name)
    expected = _bad_copies(paths[0], tmp_path)
    problems = validate(tmp_path)
    assert sorted(Path(p.file).name for p in problems) == sorted(expected)  # one problem each, every file
    for problem in problems:
        field, word = expected[Path(problem.file).name]
        assert problem.field == field and word in problem.reason, str(problem)
        assert str(problem) == f"{problem.file}: {field}: {problem.reason}"
    assert validate(tmp_path / "tampered.json") == [p for p in problems if p.file.endswith("tampered.json")]

    records, load_problems = load_entries(tmp_path)
    assert load_problems == problems
    assert sorted(r.source for r in records) == sorted(f"entry:{p.name}" for p in paths for _ in range(2))
    good = json.loads(paths[0].read_text())
    first = next(r for r in records if r.source == f"entry:{paths[0].name}" and r.seed == 0)
    result = good["results"][0]
    assert first == Record("iris", good["method"], "mlp", 60, 0, result["test_accuracy"], result["time_fit_s"],
                           result["time_predict_s"], result["time_total_s"], result["peak_memory_mb"],
                           result["n_params"], good["environment"]["device_name"], good["commit"], False,
                           f"entry:{paths[0].name}", good["date"])


def test_load_entries_never_raises(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    records, problems = load_entries(tmp_path)
    assert records == [] and {(Path(p.file).name, p.field) for p in problems} == {
        ("list.json", "<file>"), ("binary.json", "<file>")}
    assert load_entries(tmp_path / "nowhere")[0] == [] and validate(tmp_path / "nowhere") != []
    assert isinstance(problems[0], Problem)


def test_records_from_mlflow(store):
    records = records_from_mlflow(store["uri"])
    runs = {r.run_id: r for r in [*store["results"], store["other"]]}
    assert sorted(r.source for r in records) == sorted(f"mlflow:{i}" for i in runs)
    for record in records:
        run = runs[record.source.removeprefix("mlflow:")]
        assert (record.task, record.method, record.arch, record.seed, record.n_train) == (
            "iris", run.method, "mlp", run.seed, 60)
        assert record.test_accuracy == run.metrics["test_accuracy"]
        assert record.time_total_s == run.metrics["time_total_s"] and record.n_params == int(run.metrics["n_params"])
        assert record.verified is False and record.commit and record.device
        assert datetime.fromisoformat(record.finished_at).utcoffset().total_seconds() == 0


def test_empty_or_missing_store_gives_no_records(tmp_path):
    missing = tmp_path / "missing.db"
    assert records_from_mlflow(f"sqlite:///{missing}") == []
    assert not missing.exists()  # reading does not create a store
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert records_from_mlflow(f"sqlite:///{empty}") == []


def test_export_refuses_unknown_runs_and_mixed_configs(store, tmp_path):
    known = store["results"][0].run_id
    with pytest.raises(ValueError, match="0123456789abcdef0123456789abcdef"):
        export([known, "0123456789abcdef0123456789abcdef"], tmp_path, store["uri"])
    ntk = next(r.run_id for r in store["results"] if r.method == "ntk")
    with pytest.raises(ValueError, match=r"differ in more than the seed: method\.ridge"):
        export([ntk, store["other"].run_id], tmp_path, store["uri"])
    assert list(tmp_path.iterdir()) == []
