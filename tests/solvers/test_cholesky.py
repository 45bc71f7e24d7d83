"""The in-place Cholesky ridge solve: accuracy against an LU reference, storage reuse, jitter."""

import pytest
import torch
from problems import Problem, make_problem, rbf, relative_error

from ntkbench.solvers import JitterPolicy, cholesky_ridge_


@pytest.fixture
def problem() -> Problem:
    return make_problem()


def forward_tolerance(kappa: float, dtype: torch.dtype) -> float:
    """A backward-stable solve has forward error about kappa·u (Higham 2002, sec. 7.1; Cholesky
    is backward stable, Thm. 10.3); 20 covers the constant in front, which grows mildly with n."""
    return 20 * kappa * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_lu_reference(dtype):
    p = make_problem(ridge=1e-2 if dtype == torch.float64 else 1e-1)  # kappa ~ 1e3 / 1e2
    k = p.k.to(dtype).contiguous()
    result = cholesky_ridge_(k, p.y, p.ridge)
    assert result.alpha.dtype == dtype and result.alpha.shape == p.y.shape
    assert result.jitter == 0 and result.attempts == 1
    assert relative_error(result.alpha, p.reference).max() <= forward_tolerance(p.kappa, dtype)


def test_factorizes_in_the_kernels_own_storage(problem):
    k = problem.k.clone()
    ptr, storage = k.data_ptr(), k.untyped_storage().data_ptr()
    lam = problem.ridge * float(torch.trace(problem.k)) / len(k)
    cholesky_ridge_(k, problem.y, problem.ridge)
    assert k.data_ptr() == ptr and k.untyped_storage().data_ptr() == storage
    # k now holds the factor: L^T in its upper triangle (L = k^T), zeros below.
    assert torch.equal(torch.tril(k, -1), torch.zeros_like(k))
    expected = problem.k + lam * torch.eye(len(k), dtype=k.dtype)
    torch.testing.assert_close(k.mT @ k, expected, rtol=0, atol=100 * torch.finfo(k.dtype).eps * float(expected.max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="peak device memory is measured on CUDA")
def test_no_second_matrix_on_cuda():
    n = 4096
    x = torch.randn(n, 3, dtype=torch.float64, device="cuda")
    k = rbf(x, x)
    y = torch.randn(n, 4, dtype=k.dtype, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    cholesky_ridge_(k, y, 1e-2)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < 0.25 * k.numel() * k.element_size()


def test_rank_deficient_kernel_escalates_the_jitter_and_solves():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, 3, generator=g, dtype=torch.float64)
    k = x @ x.T  # rank 3: at ridge 0 the Cholesky meets a non-positive pivot
    y = torch.randn(100, 2, generator=g, dtype=torch.float64)
    refills = []
    jitter = JitterPolicy(initial=1e-6, growth=10, max_jitter=1e-3)
    with pytest.warns(UserWarning, match="jitter of 1e-06"):
        result = cholesky_ridge_(k.clone(), y, 0.0, refill=lambda out: refills.append(out.copy_(k)), jitter=jitter)
    assert result.jitter == 1e-6 and result.attempts == 2 and len(refills) == 1
    assert result.metrics() == {"cholesky_jitter": 1e-6, "cholesky_attempts": 2.0}
    a = k + 1e-6 * float(torch.trace(k)) / 100 * torch.eye(100, dtype=k.dtype)
    kappa = float(torch.linalg.cond(a))  # about 1e8
    assert relative_error(result.alpha, torch.linalg.solve(a, y)).max() <= 20 * kappa * torch.finfo(k.dtype).eps


def test_past_the_jitter_bound_a_one_line_error():
    n = 50
    k = torch.eye(n, dtype=torch.float64)
    k[0, 0] = -1.0  # indefinite: the first pivot is -1 + jitter·tr(K)/n < 0 for every jitter <= 1e-3
    y = torch.ones(n, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not positive definite even with jitter 0.001.*pivot 1 of 50.*larger ridge") as e:
        cholesky_ridge_(k.clone(), y, 0.0, refill=lambda out: out.copy_(k))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no refill was given"):
        cholesky_ridge_(k.clone(), y, 0.0)


def test_jitter_ladder():
    assert JitterPolicy().ladder(torch.float32) == pytest.approx([0.0, 100 * 2**-23, 1e-3])
    assert JitterPolicy(initial=1e-7, growth=10, max_jitter=1e-4).ladder(torch.float64) == pytest.approx(
        [0, 1e-7, 1e-6, 1e-5, 1e-4])
    with pytest.raises(ValueError, match="growth > 1"):
        JitterPolicy(growth=1.0).ladder(torch.float64)


def test_bad_inputs(problem):
    with pytest.raises(ValueError, match="contiguous"):
        cholesky_ridge_(problem.k.clone().mT[::2, ::2], problem.y[::2], 0.1)
    with pytest.raises(ValueError, match="square"):
        cholesky_ridge_(problem.k[:, :-1].contiguous(), problem.y, 0.1)
    k_nan = problem.k.clone()
    k_nan[3, 5] = k_nan[5, 3] = float("nan")  # potrf stops at a NaN pivot, or the weights show it
    with pytest.raises(ValueError, match="not positive definite|not finite"):
        cholesky_ridge_(k_nan, problem.y, 0.1)
    with pytest.raises(ValueError, match="y_train"):
        cholesky_ridge_(problem.k.clone(), problem.y[:-1], 0.1)
    with pytest.raises(ValueError, match="ridge must be a finite non-negative"):
        cholesky_ridge_(problem.k.clone(), problem.y, -1.0)
