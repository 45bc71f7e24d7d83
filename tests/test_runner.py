"""The runner and CLI against a real MLflow SQLite store in a temporary directory."""

import signal
import subprocess
import sys
import time

import math
import re

import mlflow
import psutil
import pytest
import torch

from ntkbench import cli, runner
from ntkbench.record import EVALUATION_FIELDS, FINGERPRINT_TAG, RunRecord, from_mlflow_row
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
    for key in (*EVALUATION_FIELDS, "n_train"):
        assert runs[f"metrics.{key}"].notna().all(), key
    # Total time is fit + test prediction; the extra prediction on the training set is apart.
    totals = runs["metrics.time_fit_s"] + runs["metrics.time_predict_s"]
    assert ((runs["metrics.time_total_s"] - totals).abs() <= 1e-9 * totals).all()
    assert (runs["metrics.time_train_eval_s"] > 0).all()
    assert (runs["metrics.peak_memory_mb"] <= runs["metrics.process_peak_memory_mb"]).all()
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
    # The typed record: in record.json, in the run's params and tags, and as the runner returned it.
    stored = RunRecord.from_json(mlflow.artifacts.load_dict(f"runs:/{nn_run}/record.json"))
    returned = next(r for r in results if r.run_id == nn_run)
    assert stored == returned and stored.config.method_options["lr"] == 0.5
    assert from_mlflow_row(runs[runs.run_id == nn_run].iloc[0].to_dict()).config == stored.config
    assert runs.loc[runs.run_id == nn_run, f"tags.{FINGERPRINT_TAG}"].iloc[0] == stored.fingerprint
    # One fingerprint per (method, config): the seed is not part of it.
    assert runs.groupby("params.method")[f"tags.{FINGERPRINT_TAG}"].nunique().eq(1).all()
    assert runs[f"tags.{FINGERPRINT_TAG}"].nunique() == 5


def test_a_diverging_run_is_marked_failed_and_the_grid_goes_on(store):
    """lr 1e30 makes the loss NaN: the run must end FAILED (an argmax over NaN outputs would still
    give an "accuracy"), with the reason in its error tag and record.json, and no accuracy logged."""
    results = runner.run(task="iris", method="nn,ntk", seeds=(0,), options={**FAST, "nn.lr": 1e30})
    assert [r.status for r in results] == ["FAILED", "FINISHED"]
    assert results[0].evaluation is None and "training diverged" in results[0].error
    runs = _runs(store).set_index("params.method")
    assert runs.loc["nn", "status"] == "FAILED"
    assert re.match(r"NonFiniteError: train_loss is (nan|inf) at epoch \d", runs.loc["nn", "tags.error"])
    assert math.isnan(runs.loc["nn", "metrics.test_accuracy"])
    stored = RunRecord.from_json(mlflow.artifacts.load_dict(f"runs:/{results[0].run_id}/record.json"))
    assert stored.status == "FAILED" and stored.error == results[0].error
    assert runs.loc["ntk", "status"] == "FINISHED"


def test_non_finite_outputs_fail_the_run(store, monkeypatch):
    """Outputs are checked after prediction too: a fit whose predictions are NaN ends FAILED."""
    from ntkbench.methods.kernel import KernelPredictor

    monkeypatch.setattr(KernelPredictor, "predict", lambda self, x: torch.full((len(x), 3), math.nan))
    results = runner.run(task="iris", method="ntk", options=FAST)
    assert results[0].status == "FAILED" and "test outputs are NaN or infinite" in results[0].error
    assert list(_runs(store).status) == ["FAILED"]


def test_the_summary_of_a_grid_where_nothing_finished(store, capsys):
    assert cli.main(["run", "--task", "iris", "--method", "nn,taylor", "--set", "nn.lr=1e30", "--set", "taylor.lr=1e30",
                     *[f"--set={k}={v}" for k, v in FAST.items()]]) == 1
    out = capsys.readouterr().out
    assert "nn" in out and "taylor" in out and "failed" in out


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
    assert "stopped by signal 15 (SIGTERM); the current run is marked KILLED" in err
    runs = _runs(store, "digits")
    assert list(runs.status) == ["KILLED"] and runs["tags.error"].iloc[0] == "Interrupted: signal 15 (SIGTERM)"


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
    (["--arch", "vit"], r"unknown architecture 'vit'.* Known architectures: cnn, mlp"),
    (["--task", "nope"], r"unknown task 'nope'\. Known tasks: breast-cancer, "),
    (["--set", "nn.lrr=0.1"], r"unknown option 'lrr' for method 'nn'; did you mean 'lr'\? Valid options: epochs, batch_size"),
    (["--set", "nn.epoch=3"], r"unknown option 'epoch' for method 'nn'; did you mean 'epochs'\? Valid options: epochs, "),
    (["--set", "nn.zzzz=3"], r"unknown option 'zzzz' for method 'nn'\. Valid options: epochs, "),
    (["--set", "task.n_trian=3"], r"unknown option\(s\) 'n_trian' for task 'iris'; did you mean 'n_train'\? Valid options: "),
    (["--set", "arch.widht=3"], r"unknown option\(s\) 'widht' for architecture 'mlp'; did you mean 'width'\? Valid "),
    (["--set", "nn.epochs=ten"], r"option nn.epochs must be int, got 'ten'"),
    (["--set", "nn.optimizer=rmsprop"], r"option nn.optimizer must be one of 'sgd', 'adam'"),
    (["--set", "task.n_train=100000"], r"n_train=100000 is more than task 'iris' has: 120"),
    (["--set", "bogus.x=1"], r"option 'bogus.x' must be PREFIX.NAME with PREFIX one of task, arch"),
    (["--seeds", "a,b"], r"--seeds expects comma-separated integers"),
    (["--set", "arch.depth=0"], r"option arch.depth must be a finite number >= 1, got 0"),
    (["--set", "arch.depth=-1"], r"option arch.depth must be a finite number >= 1, got -1"),
    (["--set", "nn.epochs=0"], r"option nn.epochs must be a finite number >= 1, got 0"),
    (["--set", "nn.epochs=-1"], r"option nn.epochs must be a finite number >= 1, got -1"),
    (["--set", "nn.batch_size=0"], r"option nn.batch_size must be a finite number >= 1, got 0"),
    (["--set", "nn.lr=-1"], r"option nn.lr must be a finite number > 0, got -1.0"),
    (["--set", "nn.lr=NaN"], r"option nn.lr must be a finite number > 0, got nan"),
    (["--set", "ntk.ridge=-1"], r"option ntk.ridge must be a finite number >= 0, got -1.0"),
    (["--method", "ntk", "--set", "nn.lrr=1"], r"unknown option 'lrr' for method 'nn'"),
    (["--method", "ntk", "--set", "taylor.at_epoch=-2"], r"option taylor.at_epoch must be a finite number >= 0"),
    (["--method", "nn,nn"], r"--method names nn more than once; expected each method once"),
    (["--n-train", "50,60", "--set", "task.n_train=40"], r"--n-train 50,60 and task.n_train=40 both set n_train"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(store, tmp_path, capsys, argv, message):
    assert cli.main(["run", "--task", "iris", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns-outbox").exists()


def test_list_shows_the_registries(capsys):
    assert cli.main(["list", "methods"]) == 0
    assert capsys.readouterr().out.split() == ["entk", "nn", "nngp", "ntk", "taylor"]
    assert cli.main(["list", "archs", "myrtle*"]) == 0
    assert capsys.readouterr().out.split() == ["myrtle10", "myrtle5", "myrtle7"]


def test_n_train_sweep_and_kernel_budgets_log_the_n_train_used(store):
    options = {**{k: v for k, v in FAST.items() if k != "task.n_train"}, "ntk.max_n_train": 40, "entk.max_n_train": 30}
    results = runner.run(task="iris", method="ntk,nngp,entk", seeds=(0,), options=options, n_trains=(45, 90))
    used = {(r.method, r.n_train) for r in results}
    assert used == {("ntk", 40), ("nngp", 45), ("nngp", 90), ("entk", 30)}
    runs = _runs(store)
    assert sorted(runs["metrics.n_train_used"].dropna()) == [30, 30, 40, 40, 45, 90]
    assert sorted(runs["params.n_train"]) == ["45", "45", "45", "90", "90", "90"]
    table = runner.summary(results)
    assert table.loc[("nngp", 90), "seeds"] == 1


def test_a_memory_budget_shrinks_the_kernel_training_set(store):
    # With the eigh solver, 1e-4 GiB = 107,374 B holds the float64 kernel, its eigenvectors and
    # Cholesky factor (24 n²) plus Y, α and the leave-one-out temporaries (96 n): n = 64.
    options = {**FAST, "task.n_train": 120, "ntk.memory_budget_gb": 1e-4, "ntk.solver": "eigh"}
    results = runner.run(task="iris", method="ntk", options=options)
    assert results[0].n_train == 64
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
    assert results[0].n_train == 60 and results[0].metrics["n_train_budget_time"] > 60


def test_linearizations_report_their_gap_to_the_trained_network(store):
    results = runner.run(task="iris", method="taylor,entk,nn,ntk", options=FAST)
    assert [r.method for r in results] == ["nn", "taylor", "entk", "ntk"]  # nn runs first
    by = {r.method: r.metrics for r in results}
    for name in ("taylor", "entk"):
        assert by[name]["linearization_gap_rms"] >= 0 and 0 <= by[name]["linearization_label_agreement"] <= 1
    assert "linearization_gap_rms" not in by["ntk"] and "linearization_gap_rms" not in by["nn"]


def test_a_tiny_step_leaves_almost_no_linearization_gap(store):
    """nn and taylor start at the same outputs f(x; θ0); one epoch at lr 1e-7 moves each by
    O(lr·‖∇‖²) ~ 1e-6, so their gap must be far below the outputs' scale (~1): < 1e-4."""
    options = {**FAST, "nn.epochs": 1, "taylor.epochs": 1, "nn.lr": 1e-7, "taylor.lr": 1e-7}
    results = runner.run(task="iris", method="nn,taylor", options=options, track=False)
    assert 0 <= results[1].metrics["linearization_gap_rms"] < 1e-4


def test_the_linearization_gap_grows_with_the_learning_rate(store):
    """A smaller step keeps nn closer to its linearization (Lee et al. 2019): same seed, data and
    epochs, the gap at lr 0.5 exceeds the gap at lr 0.05, which exceeds 0."""
    gaps = []
    for lr in (0.05, 0.5):
        options = {**FAST, "nn.epochs": 5, "taylor.epochs": 5, "nn.lr": lr, "taylor.lr": lr}
        gaps.append(runner.run(task="iris", method="nn,taylor", options=options, track=False)[1].metrics["linearization_gap_rms"])
    assert 0 < gaps[0] < gaps[1]
