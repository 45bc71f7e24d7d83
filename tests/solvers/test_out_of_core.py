"""Out-of-core CG (``solvers.out_of_core``) on a kernel memory-mapped from tiles on disk: equal
to the dense solve within CG's bound, locally and with the row blocks' products as Ray tasks; and
the solver policy's automatic choice of it."""

import numpy as np
import pytest
import torch

from ntkbench.arch import get
from ntkbench.arch.tiled import tiled_kernel
from ntkbench.distributed.tiles import RayTasks
from ntkbench.solvers import CGSettings, choose_solver, kernel_file, out_of_core_ridge, row_blocks

N, RIDGE = 48, 1e-1
# 1e-6: above linear_cg's floor near sqrt(1e-10 · ridge/n) = 5e-7 here (see ntkbench.solvers.cg).
CG = CGSettings(tolerance=1e-6, max_iterations=500, preconditioner_rank=8)
BLOCK_BYTES = 8 * 400  # 400 float64 entries: 4 row blocks of the 48 × 48 kernel


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """The NTK of a 2-layer ReLU network on 48 Gaussian inputs, tiled into .npy files, with
    targets, the dense reference (K + lam' I)^{-1} Y by LU and the condition number."""
    out = tmp_path_factory.mktemp("kernel")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, dtype=torch.float64, generator=g)
    tiled_kernel(get("mlp", depth=2), x, dtype=torch.float64, out=out, tile=16)
    k = torch.from_numpy(np.load(out / "ntk.npy"))
    y = torch.randn(N, 3, dtype=torch.float64, generator=g)
    a = k + RIDGE * float(k.trace()) / N * torch.eye(N, dtype=torch.float64)
    return out / "ntk.npy", y, torch.linalg.solve(a, y), float(torch.linalg.cond(a))


def _check_against_dense(result, reference, kappa):
    assert result.converged and 0 < result.iterations < CG.max_iterations
    # CG stops at mean_c ||r_c||/||y_c|| <= tolerance; per column ||x - x*|| / ||x*|| <= kappa ·
    # ||r_c||/||y_c|| (kappa = cond(K + lam' I), here ~ 1e2), and the residual itself is good to
    # about 10·eps·kappa in float64.
    bound = kappa * (result.residual_max + 10 * torch.finfo(torch.float64).eps * kappa)
    error = (result.alpha - reference).norm(dim=0) / reference.norm(dim=0)
    assert float(error.max()) <= bound


def test_out_of_core_cg_equals_the_dense_solve(problem):
    path, y, reference, kappa = problem
    blocks = row_blocks(N, 8, BLOCK_BYTES)
    # The device never holds K: each block's part of the upper triangle fits BLOCK_BYTES.
    assert len(blocks) > 1 and blocks[0][0] == 0 and blocks[-1][1] == N
    assert all(r1 - r0 >= 1 and (r1 - r0) * (N - r0) * 8 <= BLOCK_BYTES for r0, r1 in blocks)
    result = out_of_core_ridge(path, y, RIDGE, CG, block_bytes=BLOCK_BYTES)
    _check_against_dense(result, reference, kappa)


def test_the_product_streams_the_upper_triangle_exactly(problem):
    path, y, _, _ = problem
    k = kernel_file(path, block_bytes=BLOCK_BYTES)
    dense = torch.from_numpy(np.load(path))
    torch.testing.assert_close(k.matmul(y), dense @ y, rtol=1e-13, atol=0)
    assert torch.equal(k.diagonal(), dense.diagonal()) and k.count.calls == 1
    rows, every = torch.tensor([3, 40]), slice(0, N)  # the preconditioner's whole rows, read as rows either way
    assert torch.equal(k.block(rows, every), dense[rows]) and torch.equal(k.block(every, rows), dense[:, rows])


def test_ray_row_blocks_give_the_local_weights_bit_for_bit(ray_tiles_cluster, problem):
    path, y, reference, kappa = problem
    local = out_of_core_ridge(path, y, RIDGE, CG, block_bytes=BLOCK_BYTES)
    distributed = out_of_core_ridge(path, y, RIDGE, CG, block_bytes=BLOCK_BYTES, executor="ray",
                                    ray_tasks=RayTasks(gpus=1))  # one worker pool with tests/distributed
    assert torch.equal(distributed.alpha, local.alpha) and distributed.iterations == local.iterations
    _check_against_dense(distributed, reference, kappa)


def test_the_policy_picks_out_of_core_when_the_kernel_is_on_disk_and_too_large():
    n, size = 10_000, 8
    small = n * n * size / 2  # bytes: half the kernel
    choice = choose_solver(n, 10, torch.float64, small, ridge_fixed=True, kernel_on_disk=True)
    assert choice.solver == "out_of_core" and choice.bytes_per_pair == 0
    assert "does not fit" in choice.reason and "on disk" in choice.reason
    assert choose_solver(n, 10, torch.float64, small, ridge_fixed=True).solver == "matrix_free"
    # A kernel that fits is held in memory, on disk or not (n is below cholesky_max_n here).
    fits = choose_solver(n, 10, torch.float64, 4 * n * n * size, ridge_fixed=True, kernel_on_disk=True)
    assert fits.solver == "cholesky"
    with pytest.raises(ValueError, match="solver 'out_of_core' reads the train kernel from its file"):
        choose_solver(n, 10, torch.float64, small, ridge_fixed=True, requested="out_of_core")


def test_bad_files_and_budgets_are_one_line(tmp_path, problem):
    path = tmp_path / "rect.npy"
    np.save(path, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"rect.npy: expected a square \(n, n\) float32 or float64 kernel"):
        kernel_file(path)
    with pytest.raises(ValueError, match="cannot map the kernel file"):
        kernel_file(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=rf"block_bytes=100 holds less than one row of the kernel \({N} entries of 8 "
                                         rf"bytes\); raise it to at least {N * 8}"):
        kernel_file(problem[0], block_bytes=100)
