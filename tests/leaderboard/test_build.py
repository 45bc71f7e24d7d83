"""`ntkbench leaderboard` and `validate` on the repository: the committed leaderboard is what
its entries render to, byte for byte; local output goes to a git-ignored folder."""

import shutil
import subprocess
from pathlib import Path

import pytest
from board_records import make_record

from ntkbench import cli
from ntkbench.leaderboard.export import make_entry
from ntkbench.leaderboard.render import RENDERED

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "leaderboard"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_the_committed_leaderboard_is_up_to_date(capsys):
    """What `make check-leaderboard` runs: on failure, render with
    `ntkbench leaderboard --entries-only --out leaderboard` and commit the result."""
    assert cli.main(["leaderboard", "--check", "--entries", str(BOARD / "entries"), "--out", str(BOARD)]) == 0, \
        capsys.readouterr().err


def copy_board(target: Path) -> Path:
    shutil.copytree(BOARD / "entries", target / "entries")
    shutil.copy(BOARD / "verified.json", target / "verified.json")
    for name in RENDERED:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BOARD / name, target / name)
    return target


def test_check_names_each_stale_file_in_one_line(workdir, capsys):
    board = copy_board(workdir / "board")
    page = board / "site" / "index.html"
    page.write_bytes(page.read_bytes() + b" ")
    args = ["leaderboard", "--check", "--entries", str(board / "entries"), "--out", str(board)]
    assert cli.main(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ntkbench: error: {page} is stale") and "--entries-only" in line
    (board / "leaderboard.csv").unlink()
    assert cli.main(args) == 1
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_an_export_without_a_render_is_caught_and_entries_only_fixes_it(workdir, capsys):
    board = copy_board(workdir / "board")
    entry = make_entry([make_record("iris", "ntk", seed=s) for s in (0, 1)])
    (board / "entries" / entry.file_name).write_text(entry.to_text())
    args = ["leaderboard", "--check", "--entries", str(board / "entries"), "--out", str(board)]
    assert cli.main(args) == 1
    assert len(capsys.readouterr().err.splitlines()) == len(RENDERED)
    assert cli.main(["leaderboard", "--entries-only", "--entries", str(board / "entries"), "--out", str(board)]) == 0
    assert cli.main(args) == 0
    assert "iris" in (board / "README.md").read_text() and "self-reported" in (board / "leaderboard.csv").read_text()


def test_local_output_goes_to_a_git_ignored_folder(workdir, capsys):
    assert cli.main(["leaderboard", "--entries", str(BOARD / "entries")]) == 0
    out = capsys.readouterr().out
    for name in RENDERED:
        assert (workdir / "leaderboard" / "local" / name).is_file() and f"leaderboard/local/{name}" in out
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", f"leaderboard/local/{RENDERED[1]}"])
    assert ignored.returncode == 0, "leaderboard/local/ is not git-ignored"
    assert not (workdir / "mlflow.db").exists()  # reading an absent store does not create it


def test_an_empty_store_and_no_entries_give_a_no_runs_page(workdir):
    assert cli.main(["leaderboard", "--entries", str(workdir / "none"), "--out", str(workdir / "board")]) == 0
    assert "No runs yet" in (workdir / "board" / "site" / "index.html").read_text()
    assert (workdir / "board" / "leaderboard.csv").read_text().startswith("task,method,arch,config,")


def test_the_committed_entries_are_valid(capsys):
    assert cli.main(["validate", str(BOARD / "entries")]) == 0, capsys.readouterr().err


def test_validate_reports_a_missing_path(capsys):
    assert cli.main(["validate", "no/such/dir"]) == 2
    assert "no/such/dir does not exist" in capsys.readouterr().err
