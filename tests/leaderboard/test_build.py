"""`ntkbench leaderboard` end to end: a real MLflow store plus committed entries, a bad entry
among them, and an empty store."""

import json
import shutil
from pathlib import Path

import pytest

import ntkbench
from ntkbench import cli

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"task.n_train": 40, "task.n_test": 30, "arch.depth": 1, "arch.width": 16}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_runs_and_entries_render_together_and_a_bad_entry_is_skipped(workdir, capsys):
    ntkbench.run(task="iris", method="ntk", seeds=(0, 1), options=OPTIONS)  # default store: ./mlflow.db
    entries = workdir / "entries"
    shutil.copytree(ROOT / "leaderboard" / "entries", entries)
    (entries / "broken.json").write_text('{"schema_version": 1, "task": "dig')
    assert cli.main(["leaderboard", "--entries", str(entries), "--out", str(workdir / "board")]) == 0
    err = capsys.readouterr().err
    assert "skipped bad entry: " in err and "broken.json: <file>: not valid JSON" in err
    readme = (workdir / "board" / "README.md").read_text()
    html = (workdir / "board" / "site" / "index.html").read_text()
    for text in (readme, html):
        assert "iris" in text and "digits" in text and "wine" in text  # the local runs and every good entry
        assert "broken.json" in text
    assert "local" in readme and "self-reported" in readme
    first = (workdir / "board" / "README.md").read_bytes()
    cli.main(["leaderboard", "--entries", str(entries), "--out", str(workdir / "board")])
    assert (workdir / "board" / "README.md").read_bytes() == first


def test_an_empty_store_and_no_entries_give_a_no_runs_page(workdir):
    assert cli.main(["leaderboard", "--entries", str(workdir / "none"), "--out", str(workdir / "board")]) == 0
    assert "No runs yet" in (workdir / "board" / "site" / "index.html").read_text()
    assert not (workdir / "mlflow.db").exists()


def test_committed_entries_are_valid(capsys):
    assert cli.main(["validate", str(ROOT / "leaderboard" / "entries")]) == 0
    names = {json.loads(p.read_text())["method"] for p in (ROOT / "leaderboard" / "entries").glob("*.json")}
    assert names == {"nn", "taylor", "entk", "ntk", "nngp"}


def test_validate_reports_a_missing_path(capsys):
    assert cli.main(["validate", "no/such/dir"]) == 2
    assert "no/such/dir does not exist" in capsys.readouterr().err
