"""Kernel ridge solve time against n for each solver, on the FC-NTK of Gaussian inputs.

Environment:
  NTKBENCH_SOLVER_SIZES   n values, comma-separated (default 1024,2048,4096; on an H200 e.g.
                          16384,32768,65536,98304)
  NTKBENCH_SOLVER_DTYPES  float64,float32 (default both)
  NTKBENCH_SOLVER_CLASSES right-hand sides C (default 10)
  NTKBENCH_SOLVER_DEVICE  cpu or cuda (default cuda when available)
  NTKBENCH_EIGH_MAX_N     the largest n for the eigh benchmark (default 4096)
  NTKBENCH_MATRIX_FREE_MAX_N  the largest n for matrix-free CG (default 4096)
  NTKBENCH_E2E_N          n of the end-to-end fit with 1,000 classes (default 2048; the target
                          is 100000 in under 30 s on an H200)

Each timed call ends with ``torch.cuda.synchronize()`` on CUDA (pytest-benchmark does not
synchronize; NOTES.md). ``extra_info`` holds n, dtype, solver, device and the achieved flop/s:
n³/3 for Cholesky, 9n³ for eigh (as ``SolverPolicy`` counts them), 2n²C per CG iteration. The
Cholesky benchmark also times a bare ``torch.linalg.cholesky_ex`` of the same matrix in the same
run and stores ``ratio_rate_vs_bare`` = bare time / our time (the target: >= 0.8). A Cholesky
consumes its matrix, so ``setup`` writes the kernel again before every round (not timed).
"""

import os
import time

import pytest
import torch

from ntkbench import arch, methods
from ntkbench.methods.kernel import kernel_block
from ntkbench.solvers import (
    CGSettings,
    KernelOperator,
    MatmulCount,
    SolverPolicy,
    assemble_kernel,
    block_diagonal,
    cg_ridge,
    cholesky_flops,
    cholesky_ridge_,
    dense_block,
    loo_ridge,
)
from ntkbench.solvers.choice import EIGH_FLOPS_PER_N3


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",")]


SIZES = _ints("NTKBENCH_SOLVER_SIZES", "1024,2048,4096")
DTYPES = os.environ.get("NTKBENCH_SOLVER_DTYPES", "float64,float32").split(",")
CLASSES = int(os.environ.get("NTKBENCH_SOLVER_CLASSES", "10"))
DEVICE = torch.device(os.environ.get("NTKBENCH_SOLVER_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
EIGH_MAX_N = int(os.environ.get("NTKBENCH_EIGH_MAX_N", "4096"))
MATRIX_FREE_MAX_N = int(os.environ.get("NTKBENCH_MATRIX_FREE_MAX_N", "4096"))
E2E_N = int(os.environ.get("NTKBENCH_E2E_N", "2048"))
ARCH = arch.get("mlp", depth=3)
RIDGE = 1e-2
POLICY = SolverPolicy.for_device(DEVICE)
ROUNDS = 3


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def problem(n: int, dtype: torch.dtype, classes: int = CLASSES):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 64, generator=g).to(DEVICE)
    y = torch.randn(n, classes, generator=g, dtype=dtype).to(DEVICE)
    return kernel_block(ARCH, x, "ntk", dtype), y


def record(benchmark, n: int, dtype: str, solver: str, flops: float) -> None:
    benchmark.extra_info.update(n=n, dtype=dtype, solver=solver, device=DEVICE.type, classes=CLASSES,
                                flops_per_s=flops / benchmark.stats.stats.min)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cholesky(benchmark, n, dtype):
    block, y = problem(n, getattr(torch, dtype))
    k = torch.empty(n, n, dtype=y.dtype, device=DEVICE)

    def setup():
        assemble_kernel(block, k, POLICY.tile)
        sync()

    bare = []
    for _ in range(ROUNDS):
        setup()
        k.diagonal().add_(RIDGE * float(k.diagonal().mean()))
        start = time.perf_counter()
        torch.linalg.cholesky_ex(k)
        sync()
        bare.append(time.perf_counter() - start)

    def solve():
        result = cholesky_ridge_(k, y, RIDGE)
        sync()
        return result

    result = benchmark.pedantic(solve, setup=setup, rounds=ROUNDS)
    record(benchmark, n, dtype, "cholesky", cholesky_flops(n))
    benchmark.extra_info.update(bare_cholesky_s=min(bare), ratio_rate_vs_bare=min(bare) / benchmark.stats.stats.min,
                                jitter=result.jitter)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [n for n in SIZES if n <= EIGH_MAX_N])
def test_eigh_loo(benchmark, n, dtype):
    block, y = problem(n, getattr(torch, dtype))
    k = assemble_kernel(block, torch.empty(n, n, dtype=y.dtype, device=DEVICE), POLICY.tile)

    def solve():
        choice = loo_ridge(k, y)
        sync()
        return choice

    benchmark.pedantic(solve, rounds=ROUNDS)
    record(benchmark, n, dtype, "eigh", EIGH_FLOPS_PER_N3 * n**3)


def _cg(benchmark, n: int, dtype: str, operator: KernelOperator, y: torch.Tensor, solver: str) -> None:
    def solve():
        result = cg_ridge(operator, y, RIDGE, CGSettings())
        sync()
        return result

    result = benchmark.pedantic(solve, rounds=1 if solver == "matrix_free" else ROUNDS)
    record(benchmark, n, dtype, solver, 2.0 * n * n * CLASSES * result.iterations)
    benchmark.extra_info.update(iterations=result.iterations, residual=result.residual, converged=result.converged)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cg(benchmark, n, dtype):
    block, y = problem(n, getattr(torch, dtype))
    k = assemble_kernel(block, torch.empty(n, n, dtype=y.dtype, device=DEVICE), POLICY.tile)
    _cg(benchmark, n, dtype, KernelOperator(k.diagonal(), block=dense_block(k), tile=n, count=MatmulCount()), y, "cg")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [n for n in SIZES if n <= MATRIX_FREE_MAX_N])
def test_matrix_free(benchmark, n, dtype):
    block, y = problem(n, getattr(torch, dtype))
    operator = KernelOperator(block_diagonal(block, n), block=block, tile=POLICY.tile, count=MatmulCount())
    _cg(benchmark, n, dtype, operator, y, "matrix_free")


def test_fc_ntk_regression_end_to_end(benchmark):
    """ntk.fit in float32 with 1,000 classes and the automatic solver (target: n = 100,000 in
    under 30 s on an H200)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(E2E_N, 64, generator=g).to(DEVICE)
    labels = torch.arange(E2E_N, device=DEVICE) % 1000
    method = methods.get("ntk", ARCH, ridge=RIDGE, dtype="float32", diagnostics=False, memory_budget_gb=120.0)
    ctx = methods.RunContext()

    def fit():
        predictor = method.fit(x, labels, 1000, ctx)
        sync()
        return predictor

    benchmark.pedantic(fit, rounds=1)
    benchmark.extra_info.update(n=E2E_N, dtype="float32", classes=1000, device=DEVICE.type,
                                solver=ctx.params["solver"], solver_reason=ctx.params["solver_reason"])
