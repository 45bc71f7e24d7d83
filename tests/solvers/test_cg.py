"""Preconditioned CG through linear_operator, on a kernel held in memory and matrix-free."""

import pytest
import torch
from linear_operator import settings
from problems import make_problem, rbf, relative_error

from ntkbench.solvers import (
    CGSettings,
    KernelOperator,
    MatmulCount,
    assemble_kernel,
    block_diagonal,
    cg_context,
    cg_ridge,
    dense_block,
)

# 1e-7: above linear_cg's floor (about 2e-8 on these problems; see ntkbench.solvers.cg).
TIGHT = CGSettings(tolerance=1e-7, max_iterations=500, preconditioner_rank=20)


def dense(k: torch.Tensor) -> KernelOperator:
    return KernelOperator(k.diagonal(), block=dense_block(k), tile=len(k), count=MatmulCount())


def recorded(x: torch.Tensor, sizes: list[tuple[int, int]]):
    """An RBF block function over x that records each block's shape."""
    def block(rows, cols):
        b = rbf(x[rows], x[cols])
        sizes.append(tuple(b.shape))
        return b
    return block


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_lu_reference_within_kappa_times_the_residual(dtype):
    # A residual computed in floating point is only good to about eps·kappa (||A|| ||x|| / ||b||
    # <= kappa): float32 gets ridge 0.1 (kappa ~ 1e3) and tolerance 1e-4, float64 ridge 1e-2 and 1e-7.
    p = make_problem(ridge=1e-2 if dtype == torch.float64 else 1e-1)
    eps = torch.finfo(dtype).eps
    tol = 1e-7 if dtype == torch.float64 else 1e-4
    result = cg_ridge(dense(p.k.to(dtype)), p.y, p.ridge, CGSettings(tol, 500, 20))
    assert result.converged and result.residual <= tol and 0 < result.iterations < 500
    assert result.alpha.dtype == dtype and result.alpha.shape == p.y.shape
    # ||x - x*|| / ||x*|| <= kappa · ||b - A x|| / ||b|| per column, the residual itself good to ~10 eps·kappa.
    bound = p.kappa * (result.residual_max + 10 * eps * p.kappa)
    assert relative_error(result.alpha, p.reference).max() <= bound


def test_non_convergence_is_reported_with_the_residual():
    p = make_problem()
    cg = CGSettings(tolerance=1e-7, max_iterations=2, preconditioner_rank=0)
    with pytest.warns(UserWarning, match=r"CG stopped after 2 iterations at relative residual .* > tolerance 1e-07"):
        result = cg_ridge(dense(p.k), p.y, p.ridge, cg)
    assert not result.converged and result.iterations == 2 and result.residual > 1e-7
    metrics = result.metrics()
    assert metrics["solver_converged"] == 0.0 and metrics["solver_iterations"] == 2.0
    assert metrics["solver_residual"] == result.residual and metrics["solver_residual_max"] >= result.residual
    # The residual is the true one: recompute it independently.
    a = p.k + p.ridge * float(torch.trace(p.k)) / len(p.k) * torch.eye(len(p.k), dtype=p.k.dtype)
    true = ((p.y - a @ result.alpha).norm(dim=0) / p.y.norm(dim=0)).mean()
    assert float(true) == pytest.approx(result.residual, rel=1e-10)


def test_the_preconditioner_cuts_iterations():
    p = make_problem(ridge=1e-3)  # kappa ~ 1e4: plain CG needs many iterations
    plain = cg_ridge(dense(p.k), p.y, p.ridge, CGSettings(1e-4, 1000, 0))  # plain CG's floor is ~1e-5
    pivoted = cg_ridge(dense(p.k), p.y, p.ridge, CGSettings(1e-4, 1000, 50))
    assert plain.converged and pivoted.converged
    # Counts, not exact ones: iterations grow like sqrt(kappa), and the rank-50 preconditioner cuts
    # kappa by orders of magnitude. Measured 22 vs 271-301 across BLAS code paths and threads,
    # so a factor of 2 leaves room for any rounding.
    assert pivoted.iterations < plain.iterations / 2


def test_matrix_free_equals_dense_cg_and_never_holds_k():
    p = make_problem(n=200)
    sizes: list[tuple[int, int]] = []
    block = recorded(p.x, sizes)
    free = KernelOperator(block_diagonal(block, 200, rows=16), block=block, tile=64, count=MatmulCount())
    torch.testing.assert_close(free.diagonal(), p.k.diagonal(), rtol=0, atol=1e-12)
    a_free = cg_ridge(free, p.y, p.ridge, TIGHT)
    a_dense = cg_ridge(dense(p.k), p.y, p.ridge, TIGHT)
    # What CG guarantees, not how many iterations it takes to get there: the count depends on the
    # rounding of the products (tiled vs one matmul, the BLAS, threads), and it was seen at 49 vs 47.
    # CG stops once the mean over the c columns of ||r_c|| / ||y_c|| is <= tol, so each column's is
    # <= c·tol; and (K + lam' I)(x - x*) = -r gives ||x - x*|| / ||x*|| <= kappa ||r|| / ||y||
    # per column. LU's reference and the recomputed residual are good to ~10 eps·kappa more.
    columns, eps = p.y.shape[1], torch.finfo(p.k.dtype).eps
    for result in (a_free, a_dense):
        assert result.converged and result.residual <= TIGHT.tolerance
        assert 0 < result.iterations <= TIGHT.max_iterations
        assert result.residual_max <= columns * TIGHT.tolerance
        assert relative_error(result.alpha, p.reference).max() <= p.kappa * (result.residual_max + 10 * eps * p.kappa)
    # So the two differ by at most the sum of their bounds (||x*|| and ||x_dense|| agree to that).
    assert relative_error(a_free.alpha, a_dense.alpha).max() <= 2 * p.kappa * max(a_free.residual_max, a_dense.residual_max)
    # Tiles of at most 64×64, and single rows (1×200) for the pivoted Cholesky: never 200×200.
    assert max(r * c for r, c in sizes) <= 64 * 64 and (1, 200) in sizes and (64, 64) in sizes


def test_operator_products_and_assembly_match_the_matrix():
    p = make_problem(n=150)
    block = lambda rows, cols: rbf(p.x[rows], p.x[cols])  # noqa: E731
    free = KernelOperator(block_diagonal(block, 150), block=block, tile=40, count=MatmulCount())
    v = torch.randn(150, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(free.matmul(v), p.k @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(free.matmul(v[:, 0]), p.k @ v[:, 0], rtol=1e-12, atol=1e-12)
    assert free.count.calls == 2
    out = assemble_kernel(block, torch.empty(150, 150, dtype=torch.float64), tile=40)
    torch.testing.assert_close(out, p.k, rtol=0, atol=1e-12)  # cdist on tiles vs on all rows: rounding only
    assert torch.equal(out, out.mT)
    rows = torch.tensor([3, 3, 7])
    torch.testing.assert_close(free[rows, torch.tensor([0, 5, 149])], p.k[rows, torch.tensor([0, 5, 149])])


def test_one_dimensional_targets_and_bad_ridge():
    p = make_problem()
    result = cg_ridge(dense(p.k), p.y[:, 0], p.ridge, TIGHT)
    assert result.alpha.shape == (200,)
    with pytest.raises(ValueError, match="ridge > 0"):
        cg_ridge(dense(p.k), p.y, 0.0)
    with pytest.raises(ValueError, match="y_train"):
        cg_ridge(dense(p.k), p.y[:-1], 0.1)
    with pytest.raises(ValueError, match="tolerance > 0"):
        CGSettings(tolerance=0.0)


def test_settings_are_set_explicitly_and_restored():
    before = (settings.max_cholesky_size.value(), settings.max_preconditioner_size.value(),
              settings.min_preconditioning_size.value(), settings.cg_tolerance.value(), settings.max_cg_iterations.value())
    with cg_context(CGSettings(1e-6, 77, 33)):
        assert settings.max_cholesky_size.value() == 0 and settings.min_preconditioning_size.value() == 0
        assert settings.max_preconditioner_size.value() == 33 and settings.max_cg_iterations.value() == 77
        assert settings.cg_tolerance.value() == 1e-6
    after = (settings.max_cholesky_size.value(), settings.max_preconditioner_size.value(),
             settings.min_preconditioning_size.value(), settings.cg_tolerance.value(), settings.max_cg_iterations.value())
    assert after == before
    assert CGSettings().params()["max_cholesky_size"] == 0
