"""Kernel ridge weights by preconditioned conjugate gradients through linear_operator.

    (K + lam' I) alpha = Y,   lam' = ridge · tr(K)/n   (the convention of ``ridge.py``),

all C columns of Y at once (a block of independent CG recurrences, one product K V per
iteration; Gardner et al. 2018, "GPyTorch: Blackbox Matrix-Matrix Gaussian Process Inference
with GPU Acceleration", sec. 4). The preconditioner is P = L_k L_k^T + lam' I with L_k the
rank-k pivoted Cholesky factor of K (Harbrecht, Peters & Schneider 2012, "On the low-rank
approximation by the pivoted Cholesky decomposition"; Gardner et al. 2018, sec. 5), applied
by Woodbury in O(n k) per iteration. The pivoted Cholesky reads diag(K) and k rows of K. CG's
error after m iterations shrinks at least like 2 ((√κ - 1)/(√κ + 1))^m with κ the condition
number of P^{-1}(K + lam' I) (Golub & Van Loan 2013, Thm. 11.3.3), and
κ <= 1 + ||K - L_k L_k^T|| / lam': a small ridge needs a larger rank or more iterations.

linear_operator decides its algorithm from global settings (NOTES.md); ``cg_context`` sets each
one explicitly for the duration of the solve: ``max_cholesky_size(0)`` (always CG),
``max_preconditioner_size(rank)``, ``min_preconditioning_size(0)`` (the default 2000 would drop
the preconditioner below n = 2000), ``preconditioner_tolerance``, ``cg_tolerance``,
``max_cg_iterations`` and ``fast_computations(solves=True)``.

linear_cg normalizes Y to unit columns and treats inner products r^T P^{-1} r and p^T A p below
1e-10 as zero (beta = 0, a restart; alpha = 0, no step). Late in a solve these scale like
||r||^2 over the eigenvalues of the system, so the system is solved as (K/tr(K) + (ridge/n) I) alpha' = Y, alpha = alpha'/tr(K):
its eigenvalues lie in (0, 1 + ridge/n] whatever the kernel's scale, and the floor this puts on
the relative residual sits near sqrt(1e-10 · ridge/n) with a preconditioner (measured: 2e-8 at
n = 200, ridge 1e-2). Without one (rank 0) it is about 1e-5 whatever the scaling.

The residual reported is recomputed after the solve, r = Y - (K + lam' I) alpha, as the mean
over columns of ||r_c|| / ||y_c||, the quantity ``cg_tolerance`` bounds; the solve converged
when it is <= the tolerance. Otherwise a warning is raised and the last iterate is returned,
which is CG's best in the (K + lam' I)-norm of the error.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from linear_operator import settings
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor

from ntkbench.solvers.operator import KernelOperator
from ntkbench.solvers.ridge import _check_ridge, _check_targets

__all__ = ["CGResult", "CGSettings", "cg_context", "cg_ridge"]


@dataclass(frozen=True)
class CGSettings:
    """tolerance: mean relative residual mean_c ||r_c||/||y_c|| to stop at (linear_operator's
    ``cg_tolerance``; its defaults are 1 in training and 0.01 in evaluation, too loose for a
    regression's weights). max_iterations: CG iterations at most (1000 as linear_operator).
    preconditioner_rank: rank k of the pivoted Cholesky (linear_operator's 15 is small for the
    slowly decaying spectra of NTK/NNGP matrices). preconditioner_tolerance: the pivoted
    Cholesky stops early once sum(diag(K - L L^T)) / max(diag K) falls below it (1e-3 as
    linear_operator)."""

    tolerance: float = 1e-4
    max_iterations: int = 1000
    preconditioner_rank: int = 100
    preconditioner_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if not (self.tolerance > 0 and self.max_iterations >= 1 and self.preconditioner_rank >= 0
                and self.preconditioner_tolerance >= 0):
            raise ValueError(f"CGSettings need tolerance > 0, max_iterations >= 1, preconditioner_rank >= 0 and "
                             f"preconditioner_tolerance >= 0, got {self}")

    def params(self) -> dict[str, object]:
        """The settings as logged, under linear_operator's names."""
        return {"cg_tolerance": self.tolerance, "max_cg_iterations": self.max_iterations,
                "max_preconditioner_size": self.preconditioner_rank,
                "preconditioner_tolerance": self.preconditioner_tolerance,
                "max_cholesky_size": 0, "min_preconditioning_size": 0}


@contextlib.contextmanager
def cg_context(cg: CGSettings) -> Iterator[None]:
    """Every linear_operator setting the solve depends on, set from ``cg`` (see module docs)."""
    with contextlib.ExitStack() as stack:
        for manager in (settings.max_cholesky_size(0), settings.fast_computations(solves=True),
                        settings.max_preconditioner_size(cg.preconditioner_rank),
                        settings.min_preconditioning_size(0),
                        settings.preconditioner_tolerance(cg.preconditioner_tolerance),
                        settings.cg_tolerance(cg.tolerance), settings.max_cg_iterations(cg.max_iterations),
                        # Unused by a solve (no Lanczos tridiagonalization), but linear_cg refuses a
                        # value above max_cg_iterations (default 20).
                        settings.max_lanczos_quadrature_iterations(min(20, cg.max_iterations))):
            stack.enter_context(manager)
        yield


@dataclass(frozen=True)
class CGResult:
    """alpha: (n, c) weights ((n,) for 1-D targets). iterations: CG iterations run. residual, residual_max: mean and
    largest over columns of ||y_c - (K + lam' I) alpha_c|| / ||y_c||. converged: residual <=
    tolerance."""

    alpha: Tensor
    iterations: int
    residual: float
    residual_max: float
    converged: bool

    def metrics(self) -> dict[str, float]:
        out = asdict(self)
        del out["alpha"]
        return {f"solver_{key}": float(value) for key, value in out.items()}


def cg_ridge(k: KernelOperator, y: Tensor, ridge: float, cg: CGSettings = CGSettings()) -> CGResult:
    """alpha = (K + ridge·tr(K)/n · I)^{-1} Y by pivoted-Cholesky-preconditioned CG.

    Args:
        k: the kernel as a ``KernelOperator`` (held in memory or recomputed by blocks).
        y: (n, c) or (n,) targets, converted to K's dtype and device.
        ridge: relative ridge, > 0 (CG on a singular K does not converge).
        cg: tolerance, iterations and preconditioner rank.

    Returns the weights with the iterations and the residual reached; warns when it is above
    the tolerance.
    """
    ridge = _check_ridge(ridge)
    if ridge == 0:
        raise ValueError("cg_ridge needs ridge > 0: K alone may be singular; use the cholesky solver for ridge 0")
    diagonal = k.diagonal()
    n = len(diagonal)
    y, squeeze = _check_targets(y, n, k.dtype, k.device)
    trace = float(diagonal.sum())
    if not trace > 0:
        raise ValueError(f"the kernel's trace must be positive, got {trace:g}")
    # The system scaled by 1/tr(K): K/tr(K) + (ridge/n) I, same residuals, alpha = alpha'/tr(K).
    system = (k * (1 / trace)).add_diagonal(torch.tensor(ridge / n, dtype=k.dtype, device=k.device))
    start = k.count.calls
    with torch.no_grad(), cg_context(cg), warnings.catch_warnings():
        # linear_operator's own note reports the recursive residual; the warning below gives the true one.
        warnings.filterwarnings("ignore", message="CG terminated", category=NumericalWarning)
        scaled = system.solve(y)
    iterations = k.count.calls - start - 1  # one product for the initial residual
    with torch.no_grad():
        rel = (y - system.matmul(scaled)).norm(dim=0) / y.norm(dim=0).clamp_min(torch.finfo(k.dtype).tiny)
    alpha = scaled / trace
    residual = float(rel.mean())
    result = CGResult(alpha[:, 0] if squeeze else alpha, iterations, residual, float(rel.max()), residual <= cg.tolerance)
    if not result.converged:
        warnings.warn(f"CG stopped after {iterations} iterations at relative residual {result.residual:.3g} "
                      f"> tolerance {cg.tolerance:g}; raise max_cg_iterations, preconditioner_rank or the ridge",
                      stacklevel=2)
    return result
