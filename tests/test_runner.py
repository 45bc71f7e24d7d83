"""The runner and CLI against a real MLflow SQLite store in a temporary directory."""

import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from ntkbench import cli, runner
from ntkbench.methods.taylor import Taylor

FAST = {"task.n_train": 60, "task.n_test": 30, "arch.depth": 1, "arch.width": 32,
        "nn.epochs": 2, "taylor.epochs": 2}


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def _runs(uri, experiment="iris"):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="pandas")


def test_a_run_logs_params_metrics_tags_and_config(store):
    results = runner.run(task="iris", method="all", arch="mlp", seeds=(0, 1), options=FAST)
    assert {r.status for r in results} == {"FINISHED"} and len(results) == 10
    runs = _runs(store)
    assert len(runs) == 10 and set(runs.status) == {"FINISHED"}
    for key in ("task", "method", "arch", "seed", "n_train", "task.label_noise", "arch.width", "method.lr"):
        assert f"params.{key}" in runs.columns, key
    for key in ("test_accuracy", "test_mse", "train_accuracy", "time_fit_s", "time_predict_s", "time_total_s",
                "peak_memory_mb", "n_train", "n_params"):
        assert runs[f"metrics.{key}"].notna().all(), key
    for key in ("ntkbench_version", "git_commit", "device_name", "torch_version", "hostname"):
        assert runs[f"tags.{key}"].notna().all(), key
    assert set(runs["params.method"]) == {"nn", "taylor", "entk", "ntk", "nngp"}
    assert (runs["params.n_train"] == "60").all()
    # Kernel methods need no training budget: on iris (chance 1/3) they should be far above chance.
    kernel_runs = runs[runs["params.method"].isin(["ntk", "nngp", "entk"])]
    assert (kernel_runs["metrics.test_accuracy"] > 0.8).all()
    entk = runs[runs["params.method"] == "entk"].iloc[0]
    assert entk["params.entk_solve"] in ("primal", "dual") and entk["metrics.ridge"] > 0
    client = mlflow.MlflowClient(store)
    nn_run = runs[runs["params.method"] == "nn"].run_id.iloc[0]
    assert [m.step for m in client.get_metric_history(nn_run, "train_loss")] == [0, 1]
    config = mlflow.artifacts.load_dict(f"runs:/{nn_run}/config.json")
    assert config["method"] == "nn" and "Dense" in config["arch_layers"]


def test_a_failing_method_is_marked_failed_and_the_grid_goes_on(store):
    results = runner.run(task="iris", method="entk,ntk", seeds=(0,), options={**FAST, "entk.ridge": -1.0})
    assert [r.status for r in results] == ["FAILED", "FINISHED"]
    runs = _runs(store).set_index("params.method")
    assert runs.loc["entk", "status"] == "FAILED"
    assert "ridge must be a finite non-negative number, got -1.0" in runs.loc["entk", "tags.error"]
    assert runs.loc["ntk", "status"] == "FINISHED"


def test_sigterm_ends_the_current_run_as_killed(store, tmp_path):
    """A real process killed with SIGTERM mid-run (a scheduler's limit): the run ends KILLED, exit 143."""
    command = [sys.executable, "-m", "ntkbench.cli", "run", "--task", "digits", "--method", "nn", "--tracking-uri",
               store, "--set", "nn.epochs=100000", "--set", "task.n_train=100"]
    mlflow.MlflowClient(store).create_experiment("digits")  # the schema migration never races with the child's
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if "metrics.train_loss" in _runs(store, "digits"):  # training has started
            break
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated; the current run is marked KILLED" in err
    runs = _runs(store, "digits")
    assert list(runs.status) == ["KILLED"] and runs["tags.error"].iloc[0] == "Terminated: signal 15"


def test_ctrl_c_ends_the_current_run_as_killed(store, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Taylor, "fit", interrupted)
    assert cli.main(["run", "--task", "iris", "--method", "ntk,taylor", *[f"--set={k}={v}" for k, v in FAST.items()]]) == 130
    runs = _runs(store).set_index("params.method")
    assert runs.loc["taylor", "status"] == "KILLED" and runs.loc["ntk", "status"] == "FINISHED"


@pytest.mark.parametrize("argv, message", [
    (["--task", "digitz"], r"unknown task 'digitz'; did you mean 'digits'\? Known tasks: .*iris"),
    (["--method", "ntkk"], r"unknown method 'ntkk'; did you mean 'ntk'\? Known methods: entk, nn, nngp, ntk, taylor"),
    (["--arch", "resnet"], r"unknown architecture 'resnet'.* Known architectures: cnn, mlp"),
    (["--set", "nn.lrr=0.1"], r"unknown option 'lrr' for method 'nn'; valid options: epochs, batch_size"),
    (["--set", "nn.epochs=ten"], r"option nn.epochs must be int, got 'ten'"),
    (["--set", "nn.optimizer=rmsprop"], r"option nn.optimizer must be one of 'sgd', 'adam'"),
    (["--set", "task.n_train=100000"], r"n_train=100000 is more than task 'iris' has: 120"),
    (["--set", "bogus.x=1"], r"option 'bogus.x' must be PREFIX.NAME with PREFIX one of task, arch"),
    (["--seeds", "a,b"], r"--seeds expects comma-separated integers"),
])
def test_bad_input_exits_2_with_one_line(store, capsys, argv, message):
    import re

    assert cli.main(["run", "--task", "iris", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_list_shows_the_registries(capsys):
    assert cli.main(["list", "methods"]) == 0
    assert capsys.readouterr().out.split() == ["entk", "nn", "nngp", "ntk", "taylor"]
    assert cli.main(["list", "archs", "myrtle*"]) == 0
    assert capsys.readouterr().out.split() == ["myrtle10", "myrtle5", "myrtle7"]


def test_n_train_sweep_and_kernel_budgets_log_the_n_train_used(store):
    options = {**FAST, "ntk.max_n_train": 40, "entk.max_n_train": 30}
    results = runner.run(task="iris", method="ntk,nngp,entk", seeds=(0,), options=options, n_trains=(45, 90))
    used = {(r.method, r.metrics["n_train"]) for r in results}
    assert used == {("ntk", 40), ("nngp", 45), ("nngp", 90), ("entk", 30)}
    runs = _runs(store)
    assert sorted(runs["metrics.n_train_used"].dropna()) == [30, 30, 40, 40, 45, 90]
    assert sorted(runs["params.n_train"]) == ["45", "45", "45", "90", "90", "90"]
    table = runner.summary(results)
    assert table.loc[("nngp", 90.0), "seeds"] == 1


def test_a_memory_budget_shrinks_the_kernel_training_set(store):
    # With the eigh solver, 1e-4 GiB = 107,374 B holds the float64 kernel, its eigenvectors and
    # Cholesky factor (24 n²) plus Y, α and the leave-one-out temporaries (96 n): n = 64.
    options = {**FAST, "task.n_train": 120, "ntk.memory_budget_gb": 1e-4, "ntk.solver": "eigh"}
    results = runner.run(task="iris", method="ntk", options=options)
    assert results[0].metrics["n_train"] == 64
    # The 64 GB default is capped at 80% of the RAM available, so a small machine is never overcommitted.
    results = runner.run(task="iris", method="ntk", options={**FAST, "ntk.memory_budget_gb": 1e6})
    assert 0 < results[0].metrics["memory_budget_gb_used"] <= 0.8 * psutil.virtual_memory().total / 2**30


def test_download_is_refused_for_tasks_that_ship_their_data(store, capsys):
    assert cli.main(["run", "--task", "iris", "--download"]) == 2
    assert "task 'iris' has nothing to download" in capsys.readouterr().err


def test_kernel_methods_log_diagnostics_and_the_spectrum(store):
    results = runner.run(task="iris", method="ntk,entk", options=FAST)
    for result in results:
        assert 0 < result.metrics["kernel_alignment"] <= 1
        assert 1 <= result.metrics["kernel_effective_rank"] <= 60
        assert 0 <= result.metrics["kernel_energy_top1"] <= result.metrics["kernel_energy_top10"] <= 1
        assert result.metrics["kernel_loo_mse_at_ridge"] >= result.metrics["kernel_train_mse_at_ridge"]
        spectrum = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/spectrum.json")["eigenvalues"]
        assert len(spectrum) == 60 and spectrum == sorted(spectrum, reverse=True)


def test_a_generous_time_budget_keeps_every_row_and_is_logged(store):
    results = runner.run(task="iris", method="ntk", options={**FAST, "ntk.time_budget_s": 1e6})
    assert results[0].metrics["n_train"] == 60 and results[0].metrics["n_train_budget_time"] > 60


def test_linearizations_report_their_gap_to_the_trained_network(store):
    results = runner.run(task="iris", method="taylor,entk,nn,ntk", options=FAST)
    assert [r.method for r in results] == ["nn", "taylor", "entk", "ntk"]  # nn runs first
    by = {r.method: r.metrics for r in results}
    for name in ("taylor", "entk"):
        assert by[name]["linearization_gap_rms"] >= 0 and 0 <= by[name]["linearization_label_agreement"] <= 1
    assert "linearization_gap_rms" not in by["ntk"] and "linearization_gap_rms" not in by["nn"]


def test_taylor_at_step_zero_has_no_linearization_gap(store):
    results = runner.run(task="iris", method="nn,taylor", options={**FAST, "nn.epochs": 0, "taylor.epochs": 0})
    taylor = results[1].metrics
    assert taylor["linearization_gap_rms"] == 0 and taylor["linearization_label_agreement"] == 1


def test_the_linearization_gap_grows_with_the_learning_rate(store):
    """A smaller step keeps nn closer to its linearization (Lee et al. 2019): same seed, data and
    epochs, the gap at lr 0.5 exceeds the gap at lr 0.05, which exceeds 0."""
    gaps = []
    for lr in (0.05, 0.5):
        options = {**FAST, "nn.epochs": 5, "taylor.epochs": 5, "nn.lr": lr, "taylor.lr": lr}
        gaps.append(runner.run(task="iris", method="nn,taylor", options=options, track=False)[1].metrics["linearization_gap_rms"])
    assert 0 < gaps[0] < gaps[1]
