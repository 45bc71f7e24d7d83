"""Kernel ridge weights by a Cholesky factorization in place, with jitter escalation.

    alpha = (K + lam' I)^{-1} Y,   lam' = ridge · tr(K)/n   (the convention of ``ridge.py``),
    K + lam' I = L L^T  (torch.linalg.cholesky_ex, LAPACK/cuSOLVER potrf),  alpha = L^{-T} L^{-1} Y.

The factor is written over the kernel's own storage (``out=`` on the column-major view K^T,
which equals K): no second n×n matrix, so the largest n is set by one kernel. The factorization
costs n³/3 flops.

If K + lam' I is not numerically positive definite (potrf stops at a non-positive pivot, e.g.
a rank-deficient kernel with a tiny ridge, or float32 round-off), the factorization is retried
with a jitter added to the diagonal: j · tr(K)/n with j = 0, initial, initial·growth, ...,
max_jitter. A failed attempt has already overwritten part of K, so each retry needs K again:
the caller passes ``refill`` (recompute the kernel into the same storage). The jitter in
effect is returned and should be logged; it raises the effective ridge to ridge + j. The
default ladder starts at 100·eps of the dtype and grows 100-fold per attempt: a jitter succeeds
once it covers the negative eigenvalues that round-off gives a semi-definite K, which are of
the order of Cholesky's backward error n·eps·||K|| (Higham 2002, "Accuracy and Stability of
Numerical Algorithms", Thm. 10.3), so few attempts are needed. It stops at 1e-3·tr(K)/n, below
which a jitter changes predictions little next to the ridges that leave-one-out usually picks
(1e-4 to 1e-1 on ``default_ridge_grid``); past it, the ridge itself should be raised.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ntkbench.solvers.ridge import _check_ridge, _check_targets

__all__ = ["CholeskyResult", "JitterPolicy", "cholesky_flops", "cholesky_ridge_"]


@dataclass(frozen=True)
class JitterPolicy:
    """Relative jitters j (units of tr(K)/n) tried after a failed factorization.

    initial: the first jitter; None for 100·eps of the kernel's dtype (2.2e-14 in float64,
        1.2e-5 in float32).
    growth: factor between attempts.
    max_jitter: the last and largest jitter; past it the solve raises.
    """

    initial: float | None = None
    growth: float = 100.0
    max_jitter: float = 1e-3

    def ladder(self, dtype: torch.dtype) -> list[float]:
        """0, then initial·growth^k below max_jitter, then max_jitter."""
        start = 100 * torch.finfo(dtype).eps if self.initial is None else self.initial
        if not (0 < start <= self.max_jitter and self.growth > 1):
            raise ValueError(f"JitterPolicy needs 0 < initial <= max_jitter and growth > 1, got initial={start:g}, "
                             f"max_jitter={self.max_jitter:g}, growth={self.growth:g}")
        steps = [0.0]
        while start < self.max_jitter * (1 - 1e-9):  # 1e-7·10³ rounds to 9.99e-5, the same as 1e-4
            steps.append(start)
            start *= self.growth
        return steps + [self.max_jitter]


@dataclass(frozen=True)
class CholeskyResult:
    """alpha: (n, c) dual weights. jitter: relative jitter added (0 if none), on top of the
    ridge. attempts: factorizations run."""

    alpha: Tensor
    jitter: float
    attempts: int

    def metrics(self) -> dict[str, float]:
        return {"cholesky_jitter": self.jitter, "cholesky_attempts": float(self.attempts)}


def cholesky_ridge_(k: Tensor, y: Tensor, ridge: float, refill: Callable[[Tensor], object] | None = None,
                    jitter: JitterPolicy = JitterPolicy()) -> CholeskyResult:
    """alpha = (K + ridge·tr(K)/n · I)^{-1} Y, factorizing K in place. **Consumes k.**

    On return ``k`` holds the Cholesky factor (its upper triangle is L^T, the rest zero) and no
    longer the kernel; the caller must not use it as K. See the module docstring for the math
    and the jitter ladder.

    Args:
        k: (n, n) contiguous symmetric kernel, float64 or float32; its dtype and device are the
            solve's. Only one triangle is read (potrf's); NaN or inf there shows in the weights,
            which are checked (n·c numbers, where checking K would cost an n² pass).
        y: (n, c) targets (converted to k's dtype and device).
        ridge: relative ridge (>= 0).
        refill: writes K into its argument (k's storage) again, for a retry with jitter; with
            None the first failure raises.
        jitter: the retry ladder.

    Raises:
        ValueError: bad shapes or values, or K + (ridge + j)·tr(K)/n · I not positive definite
            for every j on the ladder (or at j = 0 when ``refill`` is None).
    """
    if k.ndim != 2 or k.shape[0] != k.shape[1] or not k.is_contiguous():
        raise ValueError(f"k must be a contiguous square (n, n) matrix to be factorized in place, got shape "
                         f"{tuple(k.shape)}{'' if k.is_contiguous() else ', not contiguous'}; pass k.contiguous()")
    n = k.shape[0]
    y, _ = _check_targets(y, n, k.dtype, k.device)
    ridge = _check_ridge(ridge)
    scale = float(torch.trace(k)) / n
    if not scale > 0:
        raise ValueError(f"the kernel's mean diagonal tr(K)/n must be positive, got {scale:g}")
    factor = k.mT  # column-major, as potrf wants; equal to K because K is symmetric
    info = torch.zeros((), dtype=torch.int32, device=k.device)
    steps = jitter.ladder(k.dtype) if refill is not None else [0.0]
    for attempt, j in enumerate(steps):
        if attempt:
            refill(k)
        k.diagonal().add_((ridge + j) * scale)
        torch.linalg.cholesky_ex(factor, out=(factor, info))
        if int(info) == 0:
            if j:
                warnings.warn(f"Cholesky needed a jitter of {j:g}·tr(K)/n on top of ridge {ridge:g}", stacklevel=2)
            alpha = torch.cholesky_solve(y, factor)
            if not torch.isfinite(alpha).all():  # n·c numbers to check, not K's n²
                raise ValueError("the weights are not finite: k contains NaN or infinite values")
            return CholeskyResult(alpha, j, attempt + 1)
    what = (f"even with jitter {steps[-1]:g}·tr(K)/n (max_jitter)" if refill is not None
            else "and no refill was given to retry with jitter")
    raise ValueError(f"K + {ridge:g}·tr(K)/n·I is not positive definite {what}: Cholesky stopped at pivot "
                     f"{int(info)} of {n}; use a larger ridge{', float64' if k.dtype != torch.float64 else ''} "
                     "or a larger max_jitter")


def cholesky_flops(n: int) -> float:
    """n³/3: the flops of a Cholesky factorization (Golub & Van Loan 2013, Alg. 4.2.1)."""
    return n**3 / 3
