"""From real runs in a real MLflow SQLite store to entries and the leaderboard: export keeps run
ids and reproduces the config; a run with other options never joins a committed row; an
exported run is counted once."""

from __future__ import annotations

import json
import shlex

import pandas as pd
import pytest

import ntkbench
from ntkbench import cli
from ntkbench.cli import build_parser, parse_ints, parse_settings
from ntkbench.leaderboard import build
from ntkbench.leaderboard.entries import validate
from ntkbench.leaderboard.export import export, records_from_mlflow

OPTIONS = {"task.n_train": 40, "task.n_test": 30, "arch.depth": 2, "arch.width": 32}
NARROW = {**OPTIONS, "arch.depth": 1, "arch.width": 16}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """ntk on iris: 8 seeds of one config, seed 7 run twice, and seed 0 of a narrower network."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow puts artifacts under ./mlruns
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        wide = ntkbench.run(task="iris", method="ntk", seeds=tuple(range(8)), options=OPTIONS, device="cpu",
                            tracking_uri=uri)
        rerun = ntkbench.run(task="iris", method="ntk", seeds=(7,), options=OPTIONS, device="cpu", tracking_uri=uri)
        narrow = ntkbench.run(task="iris", method="ntk", seeds=(0,), options=NARROW, device="cpu", tracking_uri=uri)
    assert all(r.status == "FINISHED" for r in wide + rerun + narrow)
    return {"uri": uri, "wide": wide, "rerun": rerun[0], "narrow": narrow[0], "root": root}


def test_export_writes_a_v2_entry_that_keeps_run_ids(store, tmp_path):
    wide = store["wide"]
    (path,) = export([r.run_id for r in wide[:2]], tmp_path / "a", store["uri"])
    data = json.loads(path.read_text())
    first = wide[0]
    assert path.name.startswith(f"iris__ntk__mlp__{first.fingerprint}__")
    assert data["schema_version"] == 2 and data["fingerprint"] == first.fingerprint
    assert data["config"] == json.loads(json.dumps(first.config.to_json()))
    assert [(r["seed"], r["run_id"]) for r in data["results"]] == [(0, wide[0].run_id), (1, wide[1].run_id)]
    for result, record in zip(data["results"], wide[:2]):
        assert result == {"seed": record.seed, "n_train": record.n_train, "run_id": record.run_id,
                          **record.evaluation.to_json()}
    environment = first.environment.to_json()
    assert data["commit"] == environment.pop("git_commit") and data["environment"] == environment
    assert "verified" not in data and validate(path) == []
    (again,) = export([r.run_id for r in reversed(wide[:2])], tmp_path / "b", store["uri"])
    assert again.read_bytes() == path.read_bytes()


def test_the_command_reproduces_the_config(store, tmp_path):
    (path,) = export([store["wide"][0].run_id], tmp_path, store["uri"])
    data = json.loads(path.read_text())
    tokens = shlex.split(data["command"])
    assert tokens[:2] == ["ntkbench", "run"]
    args = build_parser().parse_args(tokens[1:])
    settings = parse_settings(args.set)
    assert settings["arch.width"] == 32 and settings["task.n_train"] == 40
    (rerun,) = ntkbench.run(task=args.task, method=args.method, arch=args.arch, seeds=parse_ints("--seeds", args.seeds, 0),
                            options=settings, device=args.device, tracking="off")
    assert rerun.fingerprint == data["fingerprint"]
    assert rerun.evaluation.test_accuracy == pytest.approx(data["results"][0]["test_accuracy"], abs=1e-12)


def rows_by_source(frame: pd.DataFrame) -> dict[tuple[str, str], dict]:
    return {(line["label"], line["source"]): line for line in frame.to_dict("records")}


def test_other_options_never_join_a_committed_row_and_exported_runs_count_once(store, tmp_path):
    """The issue's two cases: a width-16 depth-1 run stays out of the committed row, and
    exporting 2 of 8 runs then rendering with the store counts 8 seeds, not 10."""
    entries = tmp_path / "entries"
    export([r.run_id for r in store["wide"][:2]], entries, store["uri"])
    build(None, entries, tmp_path / "committed", entries_only=True)
    build(store["uri"], entries, tmp_path / "local")
    read = lambda folder: pd.read_csv(folder / "leaderboard.csv", dtype={"config": str, "commit": str})  # noqa: E731
    committed, local = read(tmp_path / "committed"), read(tmp_path / "local")
    assert len(committed) == 1 and len(local) == 3
    (entry_row,) = committed.to_dict("records")
    rows = rows_by_source(local)
    figures = [c for c in committed.columns if c not in ("label", "rank", "pareto")]  # those depend on the others
    assert {c: rows[("mlp depth=2 width=32", "self-reported")][c] for c in figures} == {
        c: entry_row[c] for c in figures}  # unchanged by the local runs
    assert entry_row["seeds"] == 2 and entry_row["label"] == "mlp"  # alone, nothing to tell apart
    wide_local = rows[("mlp depth=2 width=32", "local")]
    assert wide_local["seeds"] == 6 and wide_local["config"] == entry_row["config"]  # seeds 2..7, seed 7 once
    narrow = rows[("mlp depth=1 width=16", "local")]
    assert narrow["seeds"] == 1 and narrow["config"] == store["narrow"].fingerprint != entry_row["config"]
    assert local["seeds"].sum() == 2 + 6 + 1
    page = (tmp_path / "local" / "site" / "index.html").read_text()
    assert "seed 7: " in page and "(latest of 2 runs)" in page


def test_export_refuses_in_one_line(store, tmp_path, capsys):
    seven = [store["wide"][7].run_id, store["rerun"].run_id]
    assert cli.main(["export", *seven, "--tracking-uri", store["uri"], "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "are all seed 7; export one run per seed" in line
    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError, match=unknown):
        export([store["wide"][0].run_id, unknown], tmp_path, store["uri"])
    assert list(tmp_path.iterdir()) == []


def test_store_records_are_typed_and_a_missing_store_is_not_created(store, tmp_path):
    records, problems = records_from_mlflow(store["uri"])
    assert problems == [] and len(records) == 10
    assert {r.run_id for r in records} == {r.run_id for r in [*store["wide"], store["rerun"], store["narrow"]]}
    missing = tmp_path / "missing.db"
    assert records_from_mlflow(f"sqlite:///{missing}") == ([], []) and not missing.exists()
