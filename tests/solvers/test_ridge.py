"""Tests for ntkbench.solvers.ridge: kernel ridge prediction and exact leave-one-out selection."""

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from ntkbench.solvers import RidgeChoice, default_ridge_grid, kernel_ridge, loo_ridge, ridge_weights


def rbf(a: torch.Tensor, b: torch.Tensor, lengthscale: float = 1.5) -> torch.Tensor:
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * lengthscale**2))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    x_test = torch.randn(25, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x @ w) + 0.3 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    return rbf(x, x), y, rbf(x_test, x)


def test_matches_sklearn_absolute(data):
    k, y, k_te = data
    for ridge in (1e-3, 0.1, 2.0):
        ours = kernel_ridge(k, y, k_te, ridge, relative=False)
        ref = KernelRidge(alpha=ridge, kernel="precomputed").fit(k.numpy(), y.numpy()).predict(k_te.numpy())
        assert ours.shape == (25, 3) and ours.dtype == torch.float64
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_one_dimensional_targets(data):
    k, y, k_te = data
    pred = kernel_ridge(k, y[:, 0], k_te, 0.1)
    assert pred.shape == (25,)
    torch.testing.assert_close(pred, kernel_ridge(k, y, k_te, 0.1)[:, 0], rtol=1e-12, atol=0)


def test_relative_is_trace_scaled(data):
    k, y, k_te = data
    k = 3.7 * k  # trace/n = 3.7, so the two conventions differ
    ridge = 0.05
    rel = kernel_ridge(k, y, k_te, ridge, relative=True)
    ab = kernel_ridge(k, y, k_te, ridge * float(torch.trace(k)) / k.shape[0], relative=False)
    torch.testing.assert_close(rel, ab, rtol=1e-12, atol=0)
    assert not torch.allclose(rel, kernel_ridge(k, y, k_te, ridge, relative=False))


def brute_force_loo(k, y, grid, relative):
    n = k.shape[0]
    scale = float(torch.trace(k)) / n if relative else 1.0
    losses = []
    for r in grid.tolist():
        sq = 0.0
        for i in range(n):
            keep = torch.arange(n) != i
            k_rest = k[keep][:, keep] + r * scale * torch.eye(n - 1, dtype=k.dtype)
            pred = k[i, keep] @ torch.linalg.solve(k_rest, y[keep])  # plain solve, independent of the code under test
            sq += float(((pred - y[i]) ** 2).sum())
        losses.append(sq / (n * y.shape[1]))
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("relative", [True, False])
def test_loo_matches_brute_force(data, relative):
    k, y, _ = data
    k = 2.5 * k
    grid = default_ridge_grid()[4:]  # 1e-4 .. 10: brute-force refits stay well conditioned
    choice = loo_ridge(k, y, grid, relative=relative)
    brute = brute_force_loo(k, y, grid, relative)
    assert isinstance(choice, RidgeChoice)
    torch.testing.assert_close(choice.grid, grid)
    torch.testing.assert_close(choice.loo_mse, brute, rtol=1e-8, atol=0)
    best = int(torch.argmin(brute))
    assert 0 < best < len(grid) - 1, "the test data should have an interior optimum"
    assert choice.ridge == float(grid[best])


def test_loo_ties_pick_largest_ridge(data):
    k, y, _ = data
    grid = torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64)
    choice = loo_ridge(k, torch.zeros_like(y), grid)  # zero targets: every loss is exactly 0
    assert torch.all(choice.loo_mse == 0)
    assert choice.ridge == 1.0


def test_loo_clamps_negative_eigenvalues(data):
    k, y, _ = data
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    k_low = x @ x.T  # rank 3: eigh returns round-off eigenvalues around 0, some negative
    choice = loo_ridge(k_low, y, default_ridge_grid())
    assert torch.isfinite(choice.loo_mse).all() and (choice.loo_mse > 0).all()


def test_default_grid():
    grid = default_ridge_grid()
    assert grid.dtype == torch.float64 and grid.shape == (15,)
    torch.testing.assert_close(grid[[0, -1]], torch.tensor([1e-6, 10.0], dtype=torch.float64))
    torch.testing.assert_close(torch.diff(torch.log10(grid)), torch.full((14,), 0.5, dtype=torch.float64))


def test_ridge_weights_give_kernel_ridge_predictions(data):
    k, y, k_te = data
    torch.testing.assert_close(k_te @ ridge_weights(k, y, 0.3), kernel_ridge(k, y, k_te, 0.3), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="non-negative"):
        ridge_weights(k, y, -1.0)


def test_bad_inputs(data):
    k, y, k_te = data
    with pytest.raises(ValueError, match="square"):
        kernel_ridge(k[:, :-1], y, k_te, 0.1)
    with pytest.raises(ValueError, match="y_train"):
        kernel_ridge(k, y[:-1], k_te, 0.1)
    with pytest.raises(ValueError, match="k_test_train must have n = 40 columns"):
        kernel_ridge(k, y, k_te[:, :-1], 0.1)
    with pytest.raises(ValueError, match="2-D"):
        kernel_ridge(k, y, k_te[0], 0.1)
    k_nan = k.clone()
    k_nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="k_train_train contains NaN"):
        kernel_ridge(k_nan, y, k_te, 0.1)
    with pytest.raises(ValueError, match="k_train_train contains NaN"):
        loo_ridge(k_nan, y)
    k_te_nan = k_te.clone()
    k_te_nan[0, 0] = float("inf")
    with pytest.raises(ValueError, match="k_test_train contains NaN"):
        kernel_ridge(k, y, k_te_nan, 0.1)
    with pytest.raises(ValueError, match="ridge must be a finite non-negative"):
        kernel_ridge(k, y, k_te, -0.1)
    with pytest.raises(ValueError, match="not positive definite.*larger ridge"):
        kernel_ridge(-k, y, k_te, 1e-3, relative=False)
    with pytest.raises(ValueError, match="strictly positive"):
        loo_ridge(k, y, torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="square"):
        loo_ridge(k[:-1], y)
