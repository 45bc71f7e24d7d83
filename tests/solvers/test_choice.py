"""The automatic solver choice: each solver at the sizes its rule gives it."""

import pytest
import torch

from ntkbench.solvers import SolverPolicy, choose_solver

# eigh_max_n = (1 s · 9e6 flop/s / 9)^(1/3) = 100; cholesky_max_n = floor((3 · 1 s · 333,333,334 flop/s)^(1/3)) = 1000.
POLICY = SolverPolicy(direct_time_s=1.0, eigh_flops=9e6, cholesky_flops=333_333_334)
LARGE = 1e12  # bytes: everything fits


def choose(n, memory=LARGE, ridge_fixed=False, requested="auto", dtype=torch.float64, diagnostics=True):
    return choose_solver(n, 10, dtype, memory, ridge_fixed, requested, POLICY, diagnostics, preconditioner_rank=20)


def test_thresholds_are_the_cube_roots_of_the_time_budget():
    assert (POLICY.eigh_max_n, POLICY.cholesky_max_n) == (100, 1000)


@pytest.mark.parametrize("n, ridge_fixed, solver", [
    (100, False, "eigh"),          # small, ridge to choose: leave-one-out
    (100, True, "cholesky"),       # small, ridge fixed: no eigh needed
    (101, False, "cholesky"),      # above eigh_max_n
    (1000, False, "cholesky"),
    (1001, False, "cg"),           # a Cholesky would take longer than direct_time_s
    (50_000, True, "cg"),
])
def test_auto_picks_by_size(n, ridge_fixed, solver):
    choice = choose(n, ridge_fixed=ridge_fixed)
    assert choice.solver == solver
    assert str(n) in choice.reason


def test_matrix_free_when_the_kernel_does_not_fit():
    n = 1001
    kernel = n * n * 8
    assert choose(n, memory=kernel + n * (12 * 10 + 3 * 20) * 8).solver == "cg"
    choice = choose(n, memory=kernel)
    assert choice.solver == "matrix_free" and "does not fit" in choice.reason
    assert choice.bytes_per_pair == 0 and choice.bytes_per_row == (12 * 10 + 3 * 20) * 8
    # A small n whose kernel does not fit goes matrix-free too, and not to eigh.
    assert choose(50, memory=50 * 50 * 8 - 1).solver == "matrix_free"


def test_eigh_needs_three_kernels_of_memory():
    n = 100
    rows = n * 4 * 10 * 8
    assert choose(n, memory=3 * n * n * 8 + rows).solver == "eigh"
    assert choose(n, memory=3 * n * n * 8 + rows - 1).solver == "cholesky"


def test_memory_per_pair_and_diagnostics():
    assert choose(100).bytes_per_pair == 3 * 8 and choose(100).diagnostics
    assert choose(100, dtype=torch.float32).bytes_per_pair == 3 * 4
    assert choose(100, ridge_fixed=True).bytes_per_pair == 3 * 8  # the diagnostics' eigh is counted
    no_diag = choose(100, ridge_fixed=True, diagnostics=False)
    assert no_diag.bytes_per_pair == 8 and not no_diag.diagnostics
    assert not choose(500).diagnostics and choose(500).bytes_per_pair == 8  # n > eigh_max_n


def test_requested_solver_overrides():
    for solver in ("cholesky", "cg", "matrix_free"):
        choice = choose(100, requested=solver)
        assert choice.solver == solver and choice.reason == "requested"
    assert choose(5000, requested="eigh").solver == "eigh"
    with pytest.raises(ValueError, match="with a fixed ridge use 'cholesky'"):
        choose(100, ridge_fixed=True, requested="eigh")
    with pytest.raises(ValueError, match="solver must be one of auto, eigh, cholesky, cg, matrix_free"):
        choose(100, requested="lu")


def test_device_defaults():
    gpu = SolverPolicy.for_device("cuda")
    # On an H200 the N = 100,000 target is a Cholesky (fp32 40 GB), and eigh reaches its 16,384 ceiling.
    assert gpu.cholesky_max_n >= 100_000 and gpu.eigh_max_n >= 16_384
    cpu = SolverPolicy.for_device("cpu")
    assert cpu.cholesky_max_n < gpu.cholesky_max_n and cpu.tile < gpu.tile
