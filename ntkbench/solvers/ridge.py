"""Kernel ridge regression and ridge selection by exact leave-one-out.

Prediction (Rasmussen & Williams 2006, "Gaussian Processes for Machine Learning", eq. 2.23;
the NNGP/NTK posterior mean of Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as
Linear Models Under Gradient Descent", at t = infinity):

    f(X_test) = K_te,tr (K + lam' I)^{-1} Y

With ``relative=True`` the ridge follows neural-tangents' ``diag_reg`` convention
(``predict.gradient_descent_mse``, ``diag_reg_absolute_scale=False``):

    lam' = ridge * tr(K) / n,

i.e. the ridge is measured in units of the mean eigenvalue of K, so one grid fits kernels of
any scale. With ``relative=False``, lam' = ridge.

All kernels are expected in float64; the solvers work in the dtype and on the device of
``k_train_train``. Only the lower triangle of K is read (Cholesky and eigh both do so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

__all__ = ["RidgeChoice", "default_ridge_grid", "kernel_ridge", "loo_ridge", "ridge_weights"]

# Losses within this relative distance of the minimum count as tied (float64 eigh round-off).
_TIE_RTOL = 1e-10
# Elements of the (rows, n) slices of U² in ``loo_ridge``: memory stays O(n·c + 2^24), not O(g·n·c + n²).
_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class RidgeChoice:
    """Result of ``loo_ridge``.

    ridge: the chosen grid value (relative to tr(K)/n when ``relative=True``).
    loo_mse: (g,) leave-one-out mean squared error for each grid value.
    grid: (g,) the grid that was searched, in the same units as ``ridge`` (extended, if it was).
    at_edge: the choice is the smallest or largest value of the searched grid, so the optimum
    may lie beyond it (for the default grid: beyond the extension bounds).
    """

    ridge: float
    loo_mse: Tensor
    grid: Tensor
    at_edge: bool = False


def default_ridge_grid() -> Tensor:
    """Relative ridges 10**linspace(-6, 1, 15): half-decade steps from 1e-6 to 10 (float64).

    Relative to the mean eigenvalue tr(K)/n: 1e-6 is near the smallest ridge a float64
    Cholesky of a typical ill-conditioned NTK/NNGP Gram matrix tolerates, and 10 shrinks
    every direction of the spectrum strongly (predictions close to the prior mean 0).
    """
    return torch.logspace(-6.0, 1.0, 15, dtype=torch.float64)


EXTENSION_BOUNDS = (1e-12, 1e4)
"""How far ``loo_ridge`` extends the default grid when its choice lies on an edge (relative
ridges): below 1e-12·tr(K)/n a float64 ridge no longer changes the fit of a well-scaled kernel;
above 1e4·tr(K)/n every prediction is within 1e-4 of the prior mean."""


def _check_kernel(k: Tensor, name: str) -> None:
    if k.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(k.shape)}.")
    if not torch.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or infinite values.")


def _check_train(k_train_train: Tensor, y_train: Tensor) -> tuple[Tensor, bool]:
    """Validate K and Y; return Y as (n, c) in K's dtype/device and whether Y was 1-D."""
    _check_kernel(k_train_train, "k_train_train")
    n = k_train_train.shape[0]
    if k_train_train.shape[1] != n:
        raise ValueError(f"k_train_train must be a square (n, n) matrix, got shape {tuple(k_train_train.shape)}.")
    return _check_targets(y_train, n, k_train_train.dtype, k_train_train.device)


def _check_targets(y_train: Tensor, n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, bool]:
    """Validate Y against n kernel rows; return Y as (n, c) in dtype/device and whether Y was 1-D."""
    if y_train.ndim not in (1, 2) or y_train.shape[0] != n:
        raise ValueError(
            f"y_train must have shape (n,) or (n, c) with n = {n} rows of k_train_train, "
            f"got shape {tuple(y_train.shape)}."
        )
    y = y_train.to(dtype=dtype, device=device)
    if not torch.isfinite(y).all():
        raise ValueError("y_train contains NaN or infinite values.")
    return (y[:, None] if y.ndim == 1 else y), y_train.ndim == 1


def _check_ridge(ridge: float, name: str = "ridge") -> float:
    ridge = float(ridge)
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {ridge}.")
    return ridge


def _absolute_scale(k_train_train: Tensor, relative: bool) -> float:
    """The factor turning a ridge into lam': tr(K)/n if relative, else 1."""
    return float(torch.trace(k_train_train)) / k_train_train.shape[0] if relative else 1.0


def kernel_ridge(
    k_train_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    ridge: float,
    relative: bool = True,
) -> Tensor:
    """Kernel ridge predictions K_te,tr (K + lam' I)^{-1} Y, solved by Cholesky.

    Args:
        k_train_train: (n, n) positive semi-definite kernel K on the training inputs.
        y_train: (n,) or (n, c) targets Y.
        k_test_train: (m, n) kernel between test and training inputs.
        ridge: non-negative ridge; lam' = ridge * tr(K)/n if ``relative`` else ridge.
        relative: use the neural-tangents ``diag_reg`` convention (see module docstring).

    Returns:
        (m,) or (m, c) predictions, matching the shape of ``y_train``, in K's dtype/device.

    Raises:
        ValueError: on bad shapes, non-finite inputs, a negative ridge, or when K + lam' I
            is not positive definite (Cholesky fails).
    """
    n = k_train_train.shape[0]
    _check_kernel(k_test_train, "k_test_train")
    if k_test_train.shape[1] != n:
        raise ValueError(
            f"k_test_train must have n = {n} columns (one per training point), got shape {tuple(k_test_train.shape)}."
        )
    alpha = ridge_weights(k_train_train, y_train, ridge, relative)
    return k_test_train.to(dtype=k_train_train.dtype, device=k_train_train.device) @ alpha


def ridge_weights(k_train_train: Tensor, y_train: Tensor, ridge: float, relative: bool = True) -> Tensor:
    """The dual weights alpha = (K + lam' I)^{-1} Y, solved by Cholesky; predictions are
    K(x, X) alpha. Same conventions, shapes and errors as ``kernel_ridge``."""
    y, squeeze = _check_train(k_train_train, y_train)
    n = k_train_train.shape[0]
    ridge = _check_ridge(ridge)
    lam = ridge * _absolute_scale(k_train_train, relative)
    eye = torch.eye(n, dtype=k_train_train.dtype, device=k_train_train.device)
    chol, info = torch.linalg.cholesky_ex(k_train_train + lam * eye)
    if int(info) != 0:
        raise ValueError(
            f"The kernel is not positive definite at ridge {ridge:g} (absolute {lam:g}); "
            "Cholesky failed, try a larger ridge."
        )
    alpha = torch.cholesky_solve(y, chol)
    return alpha[:, 0] if squeeze else alpha


def loo_ridge(
    k_train_train: Tensor,
    y_train: Tensor,
    grid: Tensor | None = None,
    relative: bool = True,
    extend: tuple[float, float] | None = None,
) -> RidgeChoice:
    """Choose the ridge minimising the exact leave-one-out error, from one eigendecomposition.

    Math (Allen 1974, "The Relationship Between Variable Selection and Data Augmentation and a
    Method for Prediction" (PRESS); Rifkin & Lippert 2007, "Notes on Regularized Least
    Squares", sec. 4): with K = U diag(s) U^T (negative round-off eigenvalues clamped to 0) and
    for each lam' in the grid,

        H = U diag(s / (s + lam')) U^T,    yhat = H y,
        e_i = (y_i - yhat_i) / (1 - H_ii),  LOO MSE = mean over i and outputs of e_i^2,

    where e_i is exactly the error at point i of the ridge fit on the other n - 1 points with
    the same lam'. It is computed as y - yhat = U diag(lam'/(s+lam')) U^T y and
    1 - H_ii = sum_j U_ij^2 lam'/(s_j+lam'), which avoids cancellation for small lam'.
    With ``relative=True`` lam' = ridge * tr(K)/n uses the trace of the full training kernel
    and stays fixed across folds. Costs one eigh plus O(g n^2 c) for g grid values, one grid
    value at a time: memory K, U and O(n c) beyond eigh's workspace.

    Ties (losses within a relative 1e-10 of the minimum) go to the largest ridge.

    When the choice is the smallest or largest grid value, the optimum may lie beyond it: the
    grid is then extended past that edge in steps of the edge's own log spacing, reusing the
    eigendecomposition, until the choice is interior or the ``extend`` bounds are reached
    (``at_edge`` then says so). The default grid extends to :data:`EXTENSION_BOUNDS`; an explicit
    ``grid`` is searched as given unless ``extend`` is given.

    Args:
        k_train_train: (n, n) kernel K.
        y_train: (n,) or (n, c) targets.
        grid: (g,) strictly positive ridges; ``default_ridge_grid()`` if None.
        relative: whether grid values are relative to tr(K)/n.
        extend: (low, high) bounds for extending the grid past an edge choice; default
            :data:`EXTENSION_BOUNDS` for the default grid, no extension for an explicit one.

    Raises:
        ValueError: on bad shapes, non-finite inputs, or grid values that are not positive.
    """
    y, _ = _check_train(k_train_train, y_train)
    dtype, device = k_train_train.dtype, k_train_train.device
    extend = extend or (EXTENSION_BOUNDS if grid is None else None)
    grid = default_ridge_grid() if grid is None else torch.as_tensor(grid)
    grid = grid.to(dtype=dtype, device=device).reshape(-1).sort().values
    if grid.numel() == 0 or not torch.isfinite(grid).all() or (grid <= 0).any():
        raise ValueError("grid must be a non-empty 1-D set of finite, strictly positive ridges.")
    scale = _absolute_scale(k_train_train, relative)
    if not scale > 0:
        raise ValueError(f"Relative ridges need tr(K)/n > 0, got {scale:g}.")
    s, u = torch.linalg.eigh(k_train_train)
    s = s.clamp_min(0.0)
    z = u.T @ y  # (n, c)
    loo_mse = _loo_mse(u, s, z, grid * scale)
    while True:
        index = _choice(loo_mse)
        edge = index in (0, len(grid) - 1) and len(grid) > 1
        step = (grid[1] / grid[0]) if index == 0 else (grid[-1] / grid[-2]) if len(grid) > 1 else None
        more = None
        if edge and extend is not None:
            nxt = grid[0] / step if index == 0 else grid[-1] * step
            if extend[0] * (1 - 1e-9) <= float(nxt) <= extend[1] * (1 + 1e-9):  # the steps' rounding
                more = nxt.reshape(1)
        if more is None:
            return RidgeChoice(ridge=float(grid[index]), loo_mse=loo_mse, grid=grid, at_edge=edge)
        extra = _loo_mse(u, s, z, more * scale)
        grid, loo_mse = ((torch.cat([more, grid]), torch.cat([extra, loo_mse])) if index == 0
                         else (torch.cat([grid, more]), torch.cat([loo_mse, extra])))


def _loo_mse(u: Tensor, s: Tensor, z: Tensor, lam: Tensor) -> Tensor:
    """(g,) exact leave-one-out MSE for each absolute ridge of ``lam``, given K = U diag(s) Uᵀ
    and z = Uᵀ Y (see ``loo_ridge``)."""
    shrink = lam[:, None] / (s[None, :] + lam[:, None])  # (g, n): 1 - s/(s+lam')
    rows = max(1, _CHUNK_ELEMENTS // len(s))
    one_minus_h = torch.cat([u[i:i + rows].square() @ shrink.T for i in range(0, len(s), rows)])  # (n, g): 1 - H_ii
    return torch.stack([
        ((u @ (shrink[g, :, None] * z)) / one_minus_h[:, g, None]).square().mean()  # (y - H y)_i / (1 - H_ii)
        for g in range(len(lam))
    ])


def _choice(loo_mse: Tensor) -> int:
    """The index of the smallest finite loss; ties (within a relative 1e-10) go to the largest."""
    finite = torch.where(torch.isfinite(loo_mse), loo_mse, torch.full_like(loo_mse, math.inf))
    best = finite.min()
    if not torch.isfinite(best):
        raise ValueError("The leave-one-out error is not finite for any grid value; try larger ridges.")
    tied = finite <= best + _TIE_RTOL * best.abs()
    return int(tied.nonzero().max())
