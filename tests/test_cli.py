"""What the command line prints: progress (a bar on a terminal, one line per finished run
elsewhere, nothing with --quiet), plain help, and one-line errors. Runs are untracked or go to a
temporary SQLite store."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from ntkbench import cli, study

TINY = ["--task", "iris", "--set", "task.n_train=40", "--set", "task.n_test=20", "--set", "arch.depth=1",
        "--set", "arch.width=16", "--set", "nn.epochs=2"]
LINE = r"run (\d+)/(\d+) (\S+) seed (\d+): FINISHED, \d+\.\d % in [\d.]+ (ms|s|min)"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_without_a_terminal_each_finished_run_is_one_line(capsys):
    """capsys's stderr is not a terminal, as a log file or CI's is not."""
    assert cli.main(["run", *TINY, "--method", "ntk,nn", "--seeds", "0,1", "--tracking", "off"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4, err
    runs = [re.fullmatch(LINE, line).groups()[:4] for line in err]
    assert runs == [("1", "4", "ntk", "0"), ("2", "4", "nn", "0"), ("3", "4", "ntk", "1"), ("4", "4", "nn", "1")]


def test_a_failed_run_is_one_line_with_its_error(capsys):
    assert cli.main(["run", *TINY, "--method", "nn", "--set", "nn.lr=1e30", "--tracking", "off"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"run 1/1 nn seed 0: FAILED: NonFiniteError: .* in [\d.]+ (ms|s)", line), line


def test_quiet_prints_no_progress_but_the_summary_and_errors(capsys):
    assert cli.main(["run", *TINY, "--method", "ntk", "--tracking", "off", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "ntk" in out
    assert cli.main(["run", *TINY, "--method", "nn", "--set", "nn.lr=1e30", "--tracking", "off", "-q"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ntkbench: run 1/1 nn seed 0 failed: NonFiniteError")


def test_a_study_counts_its_runs_across_tasks_and_variants(capsys):
    grid = study.make_grid(epochs=1, at_epochs=(), label_noise=(0.0, 0.5), n_trains=(30, 40), seeds=(0,),
                           teacher=False, task_options=(("n_test", 20),), methods=("nn", "taylor"))
    records = study.run_study("iris", arch_options={"depth": 1, "width": 16}, grid=grid, tracking="off", device="cpu")
    lines = capsys.readouterr().err.splitlines()
    # per variant: 2 sizes at label noise 0, the largest at 0.5
    assert len(records) == len(lines) == 6
    assert [line.split(":")[0] for line in lines] == [
        "run 1/6 iris nn p=0 seed 0 n_train 30", "run 2/6 iris nn p=0 seed 0 n_train 40", "run 3/6 iris nn p=0.5 seed 0",
        "run 4/6 iris taylor@end p=0 seed 0 n_train 30", "run 5/6 iris taylor@end p=0 seed 0 n_train 40",
        "run 6/6 iris taylor@end p=0.5 seed 0"]
    study.run_study("iris", arch_options={"depth": 1, "width": 16}, grid=grid, tracking="off", device="cpu", quiet=True)
    assert capsys.readouterr().err == ""


def _in_a_terminal(argv: list[str], deadline_s: float = 240) -> str:
    """Run ``ntkbench argv`` with stderr on a pseudo-terminal of 120 columns; its stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "ntkbench.cli", *argv], stdout=subprocess.DEVNULL, stderr=slave,
                               env=env)
    os.close(slave)
    chunks, end = [], time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.processes
def test_on_a_terminal_a_bar_shows_the_run_its_epochs_and_an_eta():
    text = _in_a_terminal(["run", *TINY, "--method", "nn,ntk", "--seeds", "0,1", "--set", "nn.epochs=30",
                           "--tracking", "off"])
    assert re.search(r"run 1/4 nn seed 0: +\d+%\|.*\| 0/4", text)  # which run of how many
    assert re.search(r"run 4/4 ntk seed 1: +\d+%\|.*\| 3/4 \[[\d:]+<[\d:?]+", text)  # done, elapsed<ETA
    assert re.search(r"epochs: +\d+%\|.*\| \d+/30", text)  # inside the run
    assert not re.search(LINE, text)  # no per-run lines: the bar says it
    assert _in_a_terminal(["run", *TINY, "--method", "ntk", "--tracking", "off", "--quiet"]) == ""


@pytest.mark.processes
def test_on_a_terminal_sync_shows_a_bar_over_the_records(capsys, workdir):
    assert cli.main(["run", *TINY, "--method", "ntk", "--seeds", "0,1", "--tracking", "offline", "-q"]) == 0
    text = _in_a_terminal(["sync", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"])
    assert re.search(r"records: 100%\|.*\| 2/2 \[", text), text


def test_sync_quiet_keeps_the_summary(capsys, workdir):
    assert cli.main(["run", *TINY, "--method", "ntk", "--tracking", "offline"]) == 0
    capsys.readouterr()
    assert cli.main(["sync", "--quiet", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["sync: 1 record(s): 1 imported"] and err == ""


@pytest.mark.parametrize("command", [[], *([c] for c in cli.build_parser()._subparsers._group_actions[0].choices)])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: ntkbench" in text
    assert not re.search(r"`|:(func|mod|class|data):|\*\*", text), text


@pytest.mark.parametrize("argv, message", [
    (["study", "--task", "nope"], r"unknown task 'nope'\. Known tasks: breast-cancer, .*, wine"),
    (["study", "--task", "iris", "--set", "arch.widht=3"], r"'widht' for architecture 'mlp'; did you mean 'width'\?"),
    (["study", "--task", "iris", "--set", "nn.epochs=3"], r"study --set takes arch.NAME, task.NAME or grid.NAME=VALUE, got nn.epochs"),
    (["study", "--task", "iris", "--set", "grid.epoch=3"], r"unknown study setting .grid.epoch.; expected task.NAME or grid.NAME with NAME one of n_trains"),
    (["study", "--task", "iris", "--set", "grid.size=14"], r"grid.size sets the input side of downsampled architectures; this grid has none"),
    (["study", "--task", "mnist5k", "--set", "grid.n_trains=abc"], r"grid.n_trains takes a list of integers, got 'abc'"),
    (["study", "--task", "mnist5k", "--set", "arch.readout=gap"], r"arch.readout defines the study's architectures \(cnn-flatten, "),
    (["study", "--task", "mnist5k", "--arch", "cnn"], r"the mnist5k study declares its architectures \(cnn-flatten, "),
    (["study", "--task", "mnist5k", "--set", "arch.widht=3"], r"arch.widht is an option of none of the study's architectures \(cnn, wrn\)"),
    (["study", "--task", "mnist5k", "--set", "task.size=5"], r"size must be one of 28, 14, 7, 4"),
    (["run", "--task", "iris", "--method", "nn", "--set", "nn.epoch=3"], r"did you mean 'epochs'\? Valid options: "),
    (["sync", "--outbox", "missing"], r"outbox .*missing does not exist"),
    (["validate", "missing.json"], r"missing.json does not exist"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ntkbench: error: ") and re.search(message, err), err


@pytest.mark.processes
def test_a_grid_of_every_method_prints_nothing_else_on_stderr(workdir):
    """A real process, stderr a pipe: one progress line per run and no third-party warning (torch's
    first jvp, in taylor and entk, warned about torch.jit.script in 2 lines)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-m", "ntkbench.cli", "run", *TINY, "--method", "all", "--set", "taylor.epochs=2",
                           "--set", "ntk.ridge=0.1", "--set", "nngp.ridge=0.1", "--set", "entk.ridge=0.1",
                           "--tracking", "off"], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 5 and all(re.fullmatch(LINE, line) for line in lines), done.stderr
