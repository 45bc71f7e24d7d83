"""The ntk and nngp methods and the kernel cache (``ntkbench.arch.cache``): one kernel pass
serves both methods, a subset of cached rows is read rather than computed, and a run SIGKILLed
mid-kernel resumes to the kernel and metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkbench import methods, runner, tasks
from ntkbench.arch import Serial, get
from ntkbench.arch.cache import TILE_ENV
from ntkbench.methods.base import RunContext

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"task.n_train": 60, "task.n_test": 40, "arch.depth": 1, "arch.width": 16}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def kernel_calls(monkeypatch):
    """Every Serial.kernel call (one per tile in tiled_kernel), counted."""
    calls = []
    original = Serial.kernel

    def counted(self, x1, x2=None, **options):
        calls.append((len(x1), len(x1) if x2 is None else len(x2)))
        return original(self, x1, x2, **options)

    monkeypatch.setattr(Serial, "kernel", counted)
    return calls


def _figures(record) -> dict[str, float]:
    """The run's metrics and its evaluation (test accuracy and MSE, train accuracy)."""
    return {**record.metrics, **record.evaluation.to_json()}


def _done(cache: Path) -> dict[str, list[int]]:
    """The finished tiles of each entry's manifest."""
    return {p.parts[-3]: json.loads(p.read_text())["done"] for p in cache.glob("*/kernel/manifest.json")}


def test_ntk_and_nngp_compute_each_kernel_tile_once(tmp_path, kernel_calls, monkeypatch):
    monkeypatch.setenv(TILE_ENV, "16")  # 60 training rows: 10 upper tiles; 40 test rows: 3 × 4 tiles
    ntk, nngp = runner.run("digits", "ntk,nngp", "mlp", options=SMALL, track=False, quiet=True,
                           kernel_cache=tmp_path)
    assert ntk.status == nngp.status == "FINISHED"
    assert (ntk.params["kernel_cache"], ntk.params["kernel_cache_test"]) == ("computed", "computed")
    assert (nngp.params["kernel_cache"], nngp.params["kernel_cache_test"]) == ("hit", "hit")
    assert ntk.metrics["kernel_tiles"] == ntk.metrics["kernel_tiles_computed"] == 10 and ntk.metrics["kernel_tile"] == 16
    assert ntk.metrics["time_kernel_s"] > 0 and nngp.metrics["time_kernel_s"] > 0
    done = _done(tmp_path)
    assert sorted(map(len, done.values())) == [10, 12]
    assert all(sorted(d) == sorted(set(d)) for d in done.values())  # each tile recorded once
    assert len(kernel_calls) == 22  # one call per tile, none by the second method or the train predictions
    # The cache changes nothing: the same metrics as kernels computed in memory.
    fresh = runner.run("digits", "ntk,nngp", "mlp", options=SMALL, track=False, quiet=True)
    for cached, memory in zip((ntk, nngp), fresh):
        assert memory.params["kernel_cache"] == "computed"
        for key in ("test_accuracy", "test_mse", "ridge"):
            assert _figures(cached)[key] == pytest.approx(_figures(memory)[key], rel=1e-12, abs=1e-15), key


def test_a_subset_of_cached_rows_is_a_hit(tmp_path, kernel_calls):
    """The task's n_train subsets do not nest (each is standardized with its own statistics),
    so the subset is taken here, as ``max_n_train`` or a user would."""
    data = tasks.get("digits", n_train=200, n_test=30)
    (x, y), (xt, _) = data.train, data.test
    arch = get("mlp", depth=1, width=16)
    ntk = methods.get("ntk", arch, ridge=1e-3)
    big = RunContext(kernel_cache=tmp_path)
    ntk.fit(x, y, 10, big).predict(xt)
    assert (big.params["kernel_cache"], big.params["kernel_cache_test"]) == ("computed", "computed")
    calls = len(kernel_calls)
    subset = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:100]  # any order
    small = RunContext(kernel_cache=tmp_path)
    scores = ntk.fit(x[subset], y[subset], 10, small).predict(xt)
    assert (small.params["kernel_cache"], small.params["kernel_cache_test"]) == ("hit", "hit")
    assert len(kernel_calls) == calls  # nothing computed: the two submatrices were copied into entries
    assert len(list(tmp_path.glob("*/complete"))) == 4 and len(list(tmp_path.glob("*/kernel/manifest.json"))) == 2
    reference = ntk.fit(x[subset], y[subset], 10, RunContext()).predict(xt)
    torch.testing.assert_close(scores, reference, rtol=1e-6, atol=1e-6)  # float32 scores of one kernel


def test_a_kernel_too_large_for_memory_is_solved_out_of_core_from_its_cache_file(tmp_path):
    data = tasks.get("iris", n_train=60, n_test=30)
    (x, y), (xt, _) = data.train, data.test
    options = {"ridge": 1e-2, "memory_budget_gb": 2e-5, "cg_tolerance": 1e-6, "preconditioner_rank": 2}
    ntk = methods.get("ntk", get("mlp", depth=1, width=16), **options)
    ctx = RunContext(kernel_cache=tmp_path)  # 2e-5 GiB holds CG's vectors, not the 60×60 kernel
    scores = ntk.fit(x, y, 3, ctx).predict(xt)
    assert ctx.params["solver"] == "out_of_core" and "is on disk" in ctx.params["solver_reason"]
    assert ctx.metrics["solver_converged"] == 1.0 and ctx.metrics["n_train_used"] == 60
    direct = methods.get("ntk", get("mlp", depth=1, width=16), ridge=1e-2, solver="cholesky")
    # CG's relative residual 1e-6 bounds the error: 4e-6 on this problem (cg_error_bound in
    # tests/solvers/test_kernel_solvers.py)
    torch.testing.assert_close(scores, direct.fit(x, y, 3).predict(xt), rtol=0, atol=1e-5)


CHILD_ENV = {TILE_ENV: "4", "OMP_NUM_THREADS": "1"}
RUN = ["--task", "digits", "--method", "nngp", "--arch", "cnn", "--set", "arch.depth=1", "--set", "arch.channels=4",
       "--set", "task.n_train=32", "--set", "task.n_test=20", "--no-track", "-q"]
OPTIONS = {"arch.depth": 1, "arch.channels": 4, "task.n_train": 32, "task.n_test": 20}
TRAIN_TILES = 8 * 9 // 2


@pytest.mark.processes
def test_a_run_killed_mid_kernel_resumes_to_the_same_kernel_and_metrics(tmp_path, monkeypatch):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    child = subprocess.Popen([sys.executable, "-m", "ntkbench.cli", "run", *RUN, "--kernel-cache", str(killed)],
                             cwd=ROOT, env={**os.environ, **CHILD_ENV}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(_done(killed).values()) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (key, finished), = _done(killed).items()
    assert 1 <= len(finished) < TRAIN_TILES
    from ntkbench import cli

    assert cli.main(["cache", "list", "--kernel-cache", str(killed)]) == 0

    monkeypatch.setenv(TILE_ENV, "4")
    (resumed,) = runner.run("digits", "nngp", "cnn", options=OPTIONS, track=False, quiet=True, kernel_cache=killed)
    (uninterrupted,) = runner.run("digits", "nngp", "cnn", options=OPTIONS, track=False, quiet=True, kernel_cache=whole)
    assert resumed.params["kernel_cache"] == "resumed" and uninterrupted.params["kernel_cache"] == "computed"
    assert resumed.metrics["kernel_tiles"] == uninterrupted.metrics["kernel_tiles"] == TRAIN_TILES
    assert resumed.metrics["kernel_tiles_computed"] == TRAIN_TILES - len(finished)
    for name in ("nngp", "ntk", "cov1"):
        assert np.array_equal(np.load(killed / key / "kernel" / f"{name}.npy"),
                              np.load(whole / key / "kernel" / f"{name}.npy")), name
    for metric in ("test_accuracy", "test_mse", "train_accuracy", "ridge", "loo_mse"):
        assert _figures(resumed)[metric] == _figures(uninterrupted)[metric], metric
