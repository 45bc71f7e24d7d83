"""The ntk and nngp methods with each solver: same predictions, logged choices, memory paths."""

import pytest
import torch

from ntkbench import arch, methods, runner, tasks
from ntkbench.methods import RunContext
from ntkbench.solvers import CG_SOLVERS, SOLVERS, kernel_ridge, loo_ridge

TASK = tasks.get("iris", n_train=60, n_test=30)
ARCH = arch.get("mlp", depth=1, width=16)
FAST = {"task.n_train": 60, "task.n_test": 30, "arch.depth": 1, "arch.width": 16}
# 1e-6: above linear_cg's residual floor, ~sqrt(1e-10 · ridge/n) = 1.3e-7 at n = 60, ridge 1e-2.
TIGHT = {"cg_tolerance": 1e-6, "max_cg_iterations": 500, "preconditioner_rank": 20}


def fit(kind="ntk", kernel_cache=None, **options):
    ctx = RunContext(kernel_cache=kernel_cache)
    x, labels = TASK.train
    predictor = methods.get(kind, ARCH, **options).fit(x, labels, TASK.num_classes, ctx)
    return predictor.predict(TASK.test[0]).double(), ctx


def reference(kind: str, ridge: float | None):
    """Kernel ridge predictions from arch.kernel and ridge.py, independent of the new solvers."""
    x, labels = TASK.train
    k = getattr(ARCH.kernel(x), kind)
    k_test = getattr(ARCH.kernel(TASK.test[0], x), kind)
    y = torch.nn.functional.one_hot(labels, 3).double() - 1 / 3
    ridge = loo_ridge(k, y).ridge if ridge is None else ridge
    return kernel_ridge(k, y, k_test, ridge)


def cg_error_bound(kind: str, ridge: float, residual_max: float) -> float:
    """Weights alpha with residual r = Y - (K + lam' I) alpha predict f = f* - K_te (K + lam' I)^{-1} r,
    so every entry of f - f* is at most ||K_te (K + lam' I)^{-1}||_2 · max_c ||y_c|| · residual_max
    (the largest ||r_c|| / ||y_c||, as the solver logs it): what CG's stopping rule bounds, however
    many iterations it took to get there."""
    x, labels = TASK.train
    k = getattr(ARCH.kernel(x), kind)
    k_test = getattr(ARCH.kernel(TASK.test[0], x), kind)
    y = torch.nn.functional.one_hot(labels, 3).double() - 1 / 3
    lam = ridge * float(torch.trace(k)) / len(k)
    gain = torch.linalg.matrix_norm(k_test @ torch.linalg.inv(k + lam * torch.eye(len(k), dtype=k.dtype)), 2)
    return float(gain * y.norm(dim=0).max()) * residual_max


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("solver", SOLVERS[1:])
def test_each_solver_gives_the_reference_predictions(kind, solver, tmp_path):
    ridge = 1e-2
    cache = tmp_path if solver == "out_of_core" else None  # it reads K from the kernel cache's file
    pred, ctx = fit(kind, cache, ridge=ridge, solver=solver, **(TIGHT if solver in CG_SOLVERS else {}))
    expected = reference(kind, ridge)
    # The iris NTK at ridge 1e-2 has kappa(K + lam' I) below 1e4: Cholesky is good to ~1e-12; CG
    # to the bound its residual gives (cg_error_bound; measured 5e-7 against a bound of 4e-6).
    iterative = solver in CG_SOLVERS
    atol = cg_error_bound(kind, ridge, ctx.metrics["solver_residual_max"]) if iterative else 1e-10
    torch.testing.assert_close(pred, expected.float().double(), rtol=0, atol=atol + 1e-6)  # predict returns float32
    assert ctx.params["solver"] == solver and ctx.params["solver_reason"] == "requested"
    if iterative:
        assert ctx.metrics["solver_converged"] == 1.0 and ctx.metrics["solver_residual"] <= 1e-6
        assert ctx.params["max_cholesky_size"] == 0 and ctx.params["max_preconditioner_size"] == 20
    else:
        assert ctx.metrics["cholesky_jitter"] == 0.0


def test_auto_on_a_small_task_is_eigh_with_leave_one_out():
    pred, ctx = fit("ntk")
    assert ctx.params["solver"] == "eigh" and ctx.params["ridge_selection"] == "loo"
    assert "kernel_alignment" in ctx.metrics  # diagnostics fit the eigh rule
    torch.testing.assert_close(pred, reference("ntk", None).float().double(), rtol=0, atol=1e-6)


def test_direct_time_moves_the_thresholds():
    _, ctx = fit("ntk", ridge=1e-2, direct_time_s=1e-9, **TIGHT)  # no factorization fits a nanosecond
    assert ctx.params["solver"] == "cg" and ctx.params["solver_cholesky_max_n"] < 60
    assert ctx.params["solver_direct_time_s"] == 1e-9


def test_without_a_fixed_ridge_iterative_solvers_take_the_logged_default():
    pred, ctx = fit("ntk", solver="cg", **TIGHT)
    assert ctx.params["ridge_selection"] == "default" and "leave-one-out needs eigh" in ctx.params["ridge_default_reason"]
    assert ctx.metrics["ridge"] == 1e-2
    atol = cg_error_bound("ntk", 1e-2, ctx.metrics["solver_residual_max"])
    torch.testing.assert_close(pred, reference("ntk", 1e-2).float().double(), rtol=0, atol=atol + 1e-6)


def test_float32_cholesky():
    pred, ctx = fit("ntk", ridge=1e-1, dtype="float32", solver="cholesky")
    # float32 Cholesky: kappa ~ 1e3 times eps 1.2e-7, on scores of order 1.
    torch.testing.assert_close(pred, reference("ntk", 1e-1).float().double(), rtol=0, atol=1e-3)


def test_matrix_free_lifts_the_n_squared_memory_limit():
    # 2e-5 GiB (21.5 KB) holds no 60×60 float64 kernel (28.8 KB), but does hold CG's vectors:
    # (12 c + 3 rank) · 8 B = 336 B per row at c = 3 and rank 2, 20.2 KB for 60 rows.
    options = {**TIGHT, "preconditioner_rank": 2}
    _, ctx = fit("ntk", ridge=1e-2, memory_budget_gb=2e-5, **options)
    assert ctx.params["solver"] == "matrix_free" and ctx.metrics["n_train_used"] == 60
    assert "does not fit" in ctx.params["solver_reason"] and "diagnostics_skipped" in ctx.params
    assert ctx.metrics["solver_converged"] == 1.0
    # A requested Cholesky under the same budget shrinks the training set instead (logged):
    # 8 n² + 96 n <= 21,475 B gives n = 46.
    _, ctx = fit("ntk", ridge=1e-2, memory_budget_gb=2e-5, solver="cholesky", diagnostics=False)
    assert ctx.metrics["n_train_used"] == 46


def test_non_convergence_marks_the_run():
    with pytest.warns(UserWarning, match="CG stopped after 2 iterations"):
        _, ctx = fit("ntk", ridge=1e-4, solver="cg", cg_tolerance=1e-12, max_cg_iterations=2, preconditioner_rank=0)
    assert ctx.metrics["solver_converged"] == 0.0 and ctx.metrics["solver_residual"] > 1e-12


def test_eigh_with_a_fixed_ridge_is_refused():
    with pytest.raises(ValueError, match="with a fixed ridge use 'cholesky'"):
        fit("ntk", ridge=1e-2, solver="eigh")
    with pytest.raises(ValueError, match="option ntk.solver must be one of"):
        methods.get("ntk", ARCH, solver="lu")


@pytest.mark.parametrize("solver", SOLVERS)
def test_runner_end_to_end(solver, tmp_path):
    options = {**FAST, "ntk.solver": solver, **({} if solver == "eigh" else {"ntk.ridge": 1e-2})}
    (result,) = runner.run(task="iris", method="ntk", options=options, track=False,
                           kernel_cache=tmp_path if solver == "out_of_core" else None)
    assert result.status == "FINISHED", result.error
    assert result.evaluation.test_accuracy > 0.8
