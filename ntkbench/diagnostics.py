"""Diagnostics of a training kernel K against its targets Y: alignment, spectrum, LOO error.

These describe *why* a kernel does well or badly on a task, independently of the test set:

* centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, "Algorithms for
  Learning Kernels Based on Centered Alignment", JMLR 13, Def. 1-2);
* the spectrum of K and its entropy effective rank (Roy & Vetterli 2007, "The Effective Rank:
  A Measure of Effective Dimensionality", EUSIPCO);
* the fraction of target energy in the top-k eigenvectors of K (the "task-model alignment"
  of Canatar, Bordelon & Pehlevan 2021, "Spectral Bias and Task-Model Alignment Explain
  Generalization in Kernel Regression and Infinitely Wide Neural Networks");
* the train and exact leave-one-out MSE of kernel ridge regression at a given ridge, with the
  conventions of ``ntkbench.solvers.ridge`` (Allen 1974 PRESS; Rifkin & Lippert 2007).

Everything is pure torch in float64 (inputs are converted); ``kernel_diagnostics`` computes a
single ``eigh`` and reuses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

Tensor = torch.Tensor

__all__ = ["DiagnosticError", "centered_alignment", "effective_rank", "kernel_diagnostics", "spectrum",
           "target_energy"]


class DiagnosticError(ValueError):
    """A diagnostic that is undefined for its input (say which and why), instead of a NaN."""

DEFAULT_KS: tuple[int, ...] = (1, 10, 100, 1000)


def _prepare(k: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Return K as float64 symmetric (n, n) and Y as float64 (n, c); validate shapes."""
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square (n, n) matrix, got shape {tuple(k.shape)}.")
    k = k.to(torch.float64)
    k = 0.5 * (k + k.T)
    if y is None:
        return k, None
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        raise ValueError(f"y must have shape (n,) or (n, c) with n = {k.shape[0]}, got {tuple(y.shape)}.")
    y = y.to(dtype=torch.float64, device=k.device)
    return k, (y[:, None] if y.ndim == 1 else y)


def _center_rows(y: Tensor) -> Tensor:
    """H Y with H = I - 11^T/n: subtract the column means. Targets that are constant up to
    round-off (every label the same class) leave nothing to align with: a DiagnosticError."""
    yc = y - y.mean(dim=0, keepdim=True)
    if float(yc.norm()) <= 1e-12 * float(y.norm()):
        raise DiagnosticError("the centred targets are zero (every training label is the same class), so alignment "
                              "and target energy are undefined; the training subset needs at least two classes")
    return yc


def centered_alignment(k: Tensor, y: Tensor) -> float:
    """Centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, Def. 1-2).

    With H = I - 11^T/n, Kc = H K H and Yc = H Y (Y of shape (n, c), or (n,) as one column),

        A = <Kc, Yc Yc^T>_F / (||Kc||_F ||Yc Yc^T||_F)  in [-1, 1]  (in [0, 1] for PSD K).

    A is invariant to K -> a K (a > 0) and K -> K + b 11^T. Computed without forming
    Yc Yc^T: <Kc, Yc Yc^T>_F = tr(Yc^T K Yc) (H is idempotent) and ||Yc Yc^T||_F = ||Yc^T Yc||_F.
    A zero Kc (K constant) or Yc (one class) raises a DiagnosticError.
    """
    k, y = _prepare(k, y)
    kc = k - k.mean(dim=0, keepdim=True)
    kc = kc - kc.mean(dim=1, keepdim=True)
    yc = _center_rows(y)
    if float(torch.linalg.matrix_norm(kc)) <= 1e-12 * float(torch.linalg.matrix_norm(k)):
        raise DiagnosticError("the centred kernel is zero (K is a constant matrix), so its alignment is undefined")
    num = torch.trace(yc.T @ kc @ yc)
    den = torch.linalg.matrix_norm(kc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(num / den)


def _eigh_desc(k: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs of symmetric K, eigenvalues descending and clamped at 0 (PSD round-off)."""
    s, u = torch.linalg.eigh(k)
    return s.flip(0).clamp_min(0.0), u.flip(1)


def spectrum(k: Tensor) -> Tensor:
    """Eigenvalues of the symmetric PSD kernel K, descending, negative round-off clamped to 0."""
    k, _ = _prepare(k)
    return torch.linalg.eigvalsh(k).flip(0).clamp_min(0.0)


def effective_rank(eigenvalues: Tensor) -> float:
    """Entropy effective rank (Roy & Vetterli 2007): erank = exp(-sum_i p_i log p_i), p = lam / sum(lam).

    Negative eigenvalues are clamped to 0 and 0 log 0 = 0. It lies in [1, n]: n for a flat
    spectrum (K = c I), 1 for rank one. A zero kernel raises a DiagnosticError.
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1).clamp_min(0.0)
    total = lam.sum()
    if not float(total) > 0:
        raise DiagnosticError("every eigenvalue of the kernel is 0, so its effective rank is undefined")
    p = lam / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _energy_from_eig(u: Tensor, yc: Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Cumulative fraction ||U_k^T Yc||_F^2 / ||Yc||_F^2 for each k <= n (U columns descending)."""
    n = u.shape[0]
    total = float((yc**2).sum())
    cum = ((u.T @ yc) ** 2).sum(dim=1).cumsum(0)  # (n,)
    out: dict[int, float] = {}
    for kk in ks:
        kk = int(kk)
        if 1 <= kk <= n:
            out[kk] = float(cum[kk - 1]) / total
    return out


def target_energy(k: Tensor, y: Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """Fraction of the centred targets' energy in the top-k eigenvectors of K.

    With K = U diag(lam) U^T (lam descending), Yc = H Y and U_k the first k columns of U,

        E(k) = ||U_k^T Yc||_F^2 / ||Yc||_F^2,

    which is nondecreasing in k with E(n) = 1 (Canatar et al. 2021's cumulative task-model
    alignment). Values of k > n are skipped. Yc = 0 (one class) raises a DiagnosticError.
    """
    k, y = _prepare(k, y)
    _, u = _eigh_desc(k)
    return _energy_from_eig(u, _center_rows(y), ks)


def kernel_diagnostics(
    k: Tensor, y: Tensor, ridge: float, relative: bool = True, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """All diagnostics of K against Y from a single eigendecomposition K = U diag(s) U^T.

    Keys: ``alignment`` (``centered_alignment``), ``effective_rank`` (of the clamped
    spectrum), ``energy_top{k}`` for each k <= n (``target_energy``), and the kernel ridge
    errors at ridge lam' = ridge * tr(K)/n if ``relative`` else ridge (the
    ``ntkbench.solvers.ridge`` convention), on the raw (uncentred) Y:

        H = K (K + lam' I)^{-1} = U diag(s/(s+lam')) U^T,   Y - H Y = U diag(lam'/(s+lam')) U^T Y,
        train_mse_at_ridge = mean_{i,c} (Y - H Y)_{ic}^2,
        loo_mse_at_ridge   = mean_{i,c} ((Y - H Y)_{ic} / (1 - H_ii))^2,
        1 - H_ii = sum_j U_ij^2 lam'/(s_j+lam'),

    the second being exactly the error of the fit on the other n - 1 points at the same lam'
    (Allen 1974; Rifkin & Lippert 2007, sec. 4). lam' must be positive. A rank-deficient K is
    fine (its null space is shrunk fully); an undefined diagnostic raises a DiagnosticError.
    """
    ridge = float(ridge)
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a finite non-negative number, got {ridge}.")
    k, y = _prepare(k, y)
    n = k.shape[0]
    s, u = _eigh_desc(k)
    yc = _center_rows(y)

    out: dict[str, float] = {
        "alignment": centered_alignment(k, y),
        "effective_rank": effective_rank(s),
    }
    for kk, e in _energy_from_eig(u, yc, ks).items():
        out[f"energy_top{kk}"] = e

    lam = ridge * (float(torch.trace(k)) / n if relative else 1.0)
    if not lam > 0:
        raise DiagnosticError(f"the leave-one-out error needs a positive ridge (got an effective ridge of {lam:g}): "
                              "at ridge 0 the fit interpolates and 1 − H_ii vanishes")
    shrink = lam / (s + lam)  # 1 - s/(s+lam')
    resid = u @ (shrink[:, None] * (u.T @ y))  # (n, c): Y - H Y
    one_minus_h = (u * u) @ shrink  # (n,)
    out["train_mse_at_ridge"] = float((resid**2).mean())
    out["loo_mse_at_ridge"] = float(((resid / one_minus_h[:, None]) ** 2).mean())
    return out
