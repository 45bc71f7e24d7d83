"""Which solver a kernel regression uses, as explicit, logged numbers (``SolverPolicy``).

Solvers, by the size n of the training kernel K:

* ``eigh``: the ridge by exact leave-one-out from one eigendecomposition (``loo_ridge``), then
  the weights by Cholesky in place; ~9n³ flops (tridiagonal reduction and QR with vectors,
  Golub & Van Loan 2013, sec. 8.3), the kernel, its eigenvectors and eigh's workspace in memory.
* ``cholesky``: the weights by Cholesky in place (``cholesky_ridge_``), n³/3 flops, one n×n.
* ``cg``: preconditioned CG on K held in memory (``cg_ridge``), O(n² c) per iteration.
* ``out_of_core``: CG on K memory-mapped from its file on disk (``solvers.out_of_core``), row
  blocks streamed through the device each iteration; K is never held whole.
* ``matrix_free``: CG on K recomputed by blocks each iteration; no n×n matrix at all.

The automatic rule (``choose_solver``), with t = ``direct_time_s`` and the device's rates:

    eigh        if no ridge is fixed, n <= eigh_max_n = (t · eigh_flops / 9)^(1/3) and K, U and
                eigh's workspace (3 n² numbers) fit the memory budget;
    cholesky    else if K (n² numbers) fits and n <= cholesky_max_n = (3 t · cholesky_flops)^(1/3);
    cg          else if K fits;
    out_of_core else if the kernel is on disk (a kernel cache or ``tiled_kernel``'s out): reading
                n²/2 entries per iteration costs less than recomputing them;
    matrix_free otherwise.

CG, out-of-core and matrix-free cannot pick the ridge by leave-one-out cheaply (it needs eigh): with no ridge
fixed they, and a requested ``cholesky``, use ``default_ridge``, and the log says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["CG_SOLVERS", "SOLVERS", "SolverChoice", "SolverName", "SolverPolicy", "choose_solver"]

SolverName = Literal["auto", "eigh", "cholesky", "cg", "matrix_free", "out_of_core"]
SOLVERS: tuple[str, ...] = ("eigh", "cholesky", "cg", "matrix_free", "out_of_core")
CG_SOLVERS: tuple[str, ...] = ("cg", "out_of_core", "matrix_free")
EIGH_FLOPS_PER_N3 = 9.0


@dataclass(frozen=True)
class SolverPolicy:
    """The thresholds of the automatic choice and the settings shared by the solvers.

    direct_time_s: the estimated time a direct factorization (eigh or Cholesky) may take.
    cholesky_flops, eigh_flops: achieved flop/s of ``torch.linalg.cholesky`` (n³/3 flops) and
        ``torch.linalg.eigh`` (counted as 9n³) on the device. The defaults are an H200's, from
        its measured ceilings: Cholesky 2.17 s at n = 65,536 in float64 (4.2e13; 6.6 s at
        98,304 in float32 is the same rate) and eigh 3.1 s at 16,384 (1.3e13).
        ``for_device("cpu")`` has the project's shared 2-core CPU's, measured under load:
        Cholesky 0.30 s at n = 2,048 (1e10), eigh 3.5 s at 1,024 (2.7e9, taken as 3e9).
    default_ridge: the relative ridge when none is fixed and leave-one-out is not run. 1e-2:
        preconditioned CG needs about sqrt(1 + ||K - L_k L_k^T|| / lam') iterations and NTK
        spectra decay slowly, so ridges much below 1e-2·tr(K)/n cost hundreds of iterations.
    tile: rows and columns of the kernel blocks computed at once (assembly, matrix-free
        products): 3·tile² numbers in flight, 0.4 GB in float64 at 4096.
    """

    direct_time_s: float = 20.0
    cholesky_flops: float = 4.2e13
    eigh_flops: float = 1.3e13
    default_ridge: float = 1e-2
    tile: int = 4096

    @classmethod
    def for_device(cls, device: torch.device | str) -> SolverPolicy:
        """The H200 defaults on CUDA; a 2-core CPU's rates and 1024-row tiles otherwise."""
        if torch.device(device).type == "cuda":
            return cls()
        return cls(cholesky_flops=1e10, eigh_flops=3e9, tile=1024)

    @property
    def eigh_max_n(self) -> int:
        """The largest n whose eigh (9n³ flops) takes at most direct_time_s."""
        return _cube_root_floor(self.direct_time_s * self.eigh_flops / EIGH_FLOPS_PER_N3)

    @property
    def cholesky_max_n(self) -> int:
        """The largest n whose Cholesky (n³/3 flops) takes at most direct_time_s."""
        return _cube_root_floor(3 * self.direct_time_s * self.cholesky_flops)


def _cube_root_floor(value: float) -> int:
    """floor(value^(1/3)), exact where value is a perfect cube."""
    root = round(value ** (1 / 3))
    return root if root**3 <= value else root - 1


@dataclass(frozen=True)
class SolverChoice:
    """solver: one of ``SOLVERS``. reason: why, for the log. diagnostics: whether the eigh-based
    kernel diagnostics fit the time and memory rules (K held, n <= eigh_max_n, 3 n² numbers).
    bytes_per_pair, bytes_per_row: the memory of the path, n²·bytes_per_pair +
    n·bytes_per_row, for ``fit_budget``."""

    solver: str
    reason: str
    diagnostics: bool
    bytes_per_pair: float
    bytes_per_row: float


def _row_bytes(solver: str, num_outputs: int, rank: int) -> float:
    """Numbers per training row besides K: Y, alpha and LOO's (n, c) temporaries for the
    direct solvers; for CG 12 (n, c) vectors (linear_cg's seven, the preconditioner's two
    temporaries, the product, Y, alpha) and the rank-k preconditioner's 3 (n, k). (Out-of-core
    CG also holds one row block, ``out_of_core.DEFAULT_BLOCK_BYTES`` at most, not per row.)"""
    return 4.0 * num_outputs if solver in ("eigh", "cholesky") else 12.0 * num_outputs + 3.0 * rank


def choose_solver(n: int, num_outputs: int, dtype: torch.dtype, memory_bytes: float, ridge_fixed: bool,
                  requested: SolverName = "auto", policy: SolverPolicy = SolverPolicy(),
                  diagnostics: bool = True, preconditioner_rank: int = 100,
                  kernel_on_disk: bool = False) -> SolverChoice:
    """The solver for n training rows and ``num_outputs`` targets by the rule of the module
    docstring, or ``requested``. ``diagnostics``: whether the caller wants the eigh-based
    kernel diagnostics (they run only where ``SolverChoice.diagnostics`` says they fit).
    ``kernel_on_disk``: the train kernel is (or will be) in a file that ``out_of_core`` can map."""
    if requested not in ("auto", *SOLVERS):
        raise ValueError(f"solver must be one of auto, {', '.join(SOLVERS)}; got {requested!r}")
    if requested == "eigh" and ridge_fixed:
        raise ValueError("solver 'eigh' chooses the ridge by leave-one-out; with a fixed ridge use 'cholesky'")
    if requested == "out_of_core" and not kernel_on_disk:
        raise ValueError("solver 'out_of_core' reads the train kernel from its file; it needs the kernel on disk "
                         "(a kernel cache), or use 'matrix_free'")
    size = torch.finfo(dtype).bits // 8

    def fits(solver: str, pairs: float) -> bool:
        return pairs * n * n * size + n * _row_bytes(solver, num_outputs, preconditioner_rank) * size <= memory_bytes

    eigh_ok = n <= policy.eigh_max_n and fits("eigh", 3)
    gb = n * n * size / 2**30
    if requested != "auto":
        solver, reason = requested, "requested"
    elif not ridge_fixed and eigh_ok:
        solver, reason = "eigh", f"no ridge fixed and n={n} <= eigh_max_n={policy.eigh_max_n}: leave-one-out by eigh"
    elif fits("cholesky", 1) and n <= policy.cholesky_max_n:
        solver = "cholesky"
        reason = f"the {gb:.3g} GB kernel fits and n={n} <= cholesky_max_n={policy.cholesky_max_n}"
    elif fits("cg", 1):
        solver = "cg"
        reason = (f"the {gb:.3g} GB kernel fits but n={n} > cholesky_max_n={policy.cholesky_max_n} "
                  f"(a Cholesky would take over {policy.direct_time_s:g} s)")
    elif kernel_on_disk:
        solver = "out_of_core"
        reason = (f"the {gb:.3g} GB kernel does not fit the {memory_bytes / 2**30:.3g} GB budget and is on disk: "
                  "CG streams its row blocks from the file")
    else:
        solver, reason = "matrix_free", f"the {gb:.3g} GB kernel does not fit the {memory_bytes / 2**30:.3g} GB budget"
    held = solver not in ("out_of_core", "matrix_free")
    run_diagnostics = diagnostics and held and eigh_ok
    pairs = 3 if solver == "eigh" or run_diagnostics else (1 if held else 0)
    return SolverChoice(solver, reason, run_diagnostics, float(pairs * size),
                        _row_bytes(solver, num_outputs, preconditioner_rank) * size)
