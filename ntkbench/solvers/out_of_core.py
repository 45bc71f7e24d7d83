"""Kernel ridge weights by preconditioned CG on a kernel that lives on disk: K is memory-mapped
from a symmetric (n, n) .npy file (``tiled_kernel(..., out=DIR)`` writes DIR/ntk.npy and
DIR/nngp.npy) and is never held whole on the device.

    (K + lam' I) alpha = Y,   lam' = ridge · tr(K)/n

is solved by ``cg_ridge``: the same pivoted-Cholesky preconditioner, settings, stopping rule and
reported residual (``solvers.cg``). Only the product K V differs. K is cut into row blocks of its
upper triangle; block b, rows r0:r1, reads K[r0:r1, r0:] once and contributes

    (K V)[r0:r1] += K[r0:r1, r0:] V[r0:]          (its diagonal block and the rows to its right)
    (K V)[r1:]   += K[r0:r1, r1:]^T V[r0:r1]      (the mirrored block below it: K is symmetric)

so one product reads the upper triangle and the diagonal blocks, n(n+1)/2 + Σ_b (r1-r0)(r1-r0-1)/2
entries, as contiguous row ranges of the file, and the device holds one block (at most
``block_bytes`` of K) besides CG's (n, c) vectors and the preconditioner's (n, k). A block takes
as many rows as fit the budget. The preconditioner reads diag(K) and k whole rows (k = ``preconditioner_rank``).

``executor="ray"``: the blocks' products run as Ray tasks, each on a GPU (or CPUs) of the
cluster, following the partitioned kernel–vector products of Wang et al. 2019 ("Exact Gaussian
Processes on a Million Data Points"): V goes into the object store once per product, each task
maps the file (on a shared filesystem across machines), multiplies its block and returns its
(n - r0, c) partial, and the driver adds the partials in block order. The budget per block is
then also at most 1/slots of the triangle, so every task slot gets a block. The local executor
adds the same partials in the same order: both give the same weights bit for bit (on the same
kind of device, BLAS and thread count).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ntkbench.solvers.cg import CGResult, CGSettings, cg_ridge
from ntkbench.solvers.operator import Index, KernelOperator, MatmulCount

__all__ = ["DEFAULT_BLOCK_BYTES", "kernel_file", "out_of_core_ridge", "row_blocks"]

DEFAULT_BLOCK_BYTES = 1 << 28
"""256 MiB of K per block: large enough that a block's GEMM runs at the device's rate."""
EXECUTORS = ("local", "ray")


def row_blocks(n: int, itemsize: int, block_bytes: int, parts: int = 1) -> list[tuple[int, int]]:
    """Row ranges (r0, r1) covering 0..n, each block K[r0:r1, r0:] holding at most
    ``block_bytes`` and at most about 1/``parts`` of the upper triangle (never less than a row)."""
    if n * itemsize > block_bytes:
        raise ValueError(f"block_bytes={block_bytes} holds less than one row of the kernel ({n} entries of "
                         f"{itemsize} bytes); raise it to at least {n * itemsize}")
    budget = max(n, min(block_bytes // itemsize, math.ceil(n * (n + 1) / 2 / max(1, parts))))
    blocks, r0 = [], 0
    while r0 < n:
        r1 = min(n, r0 + max(1, budget // (n - r0)))
        blocks.append((r0, r1))
        r0 = r1
    return blocks


def _read(kernel: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """K[r0:r1, r0:] read from the file into memory."""
    return np.array(kernel[r0:r1, r0:], order="C")


def _partial(block: Tensor, v: Tensor, r0: int, r1: int) -> Tensor:
    """Block (r0, r1)'s part of K V for rows r0.. (module doc)."""
    return torch.cat([block @ v[r0:], block[:, r1 - r0:].mT @ v[r0:r1]])


class _LocalProduct:
    """K V by streaming the row blocks through ``device``, one at a time."""

    def __init__(self, kernel: np.ndarray, blocks: list[tuple[int, int]], device: torch.device) -> None:
        self.kernel, self.blocks, self.device = kernel, blocks, device

    def __call__(self, v: Tensor) -> Tensor:
        v = v.contiguous()
        out = torch.zeros_like(v)
        for r0, r1 in self.blocks:
            out[r0:] += _partial(torch.from_numpy(_read(self.kernel, r0, r1)).to(self.device), v, r0, r1)
        return out


def _block_task(path: str, r0: int, r1: int, v: np.ndarray, device_type: str, threads: int) -> np.ndarray:
    """Runs in a Ray worker: block (r0, r1)'s partial product, on its GPU or CPUs."""
    device = torch.device("cuda") if device_type == "cuda" else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(threads)
    block = torch.from_numpy(_read(np.load(path, mmap_mode="r"), r0, r1)).to(device)
    return _partial(block, torch.from_numpy(v.copy()).to(device), r0, r1).cpu().numpy()


class _RayProduct:
    """K V with each row block's product a Ray task; the partials added in block order."""

    def __init__(self, path: Path, n: int, itemsize: int, block_bytes: int, device: torch.device, tasks) -> None:
        from ntkbench.distributed import connect

        self.ray = connect()
        self.blocks = row_blocks(n, itemsize, block_bytes, tasks.slots(self.ray, device.type))
        self.path, self.device_type = str(path), device.type
        self.threads = max(1, math.floor(tasks.cpus))
        self.remote = self.ray.remote(_block_task).options(max_retries=tasks.max_retries,
                                                           **tasks.resources(device.type))

    def __call__(self, v: Tensor) -> Tensor:
        v = v.contiguous()
        ref = self.ray.put(v.cpu().numpy())
        refs = [self.remote.remote(self.path, r0, r1, ref, self.device_type, self.threads) for r0, r1 in self.blocks]
        out = torch.zeros_like(v)
        for (r0, _), partial in zip(self.blocks, self.ray.get(refs), strict=True):
            out[r0:] += torch.from_numpy(partial.copy()).to(v.device)  # the object store's copy is read-only
        return out


def _index(index: Index, n: int) -> np.ndarray | slice:
    return index if isinstance(index, slice) else index.cpu().numpy()


def _length(index: np.ndarray | slice, n: int) -> int:
    return len(range(n)[index]) if isinstance(index, slice) else len(index)


def kernel_file(path: str | Path, *, device: torch.device | str = "cpu", block_bytes: int = DEFAULT_BLOCK_BYTES,
                executor: str = "local", ray_tasks=None) -> KernelOperator:
    """K in the .npy file at ``path`` as a ``KernelOperator`` whose products stream row blocks
    (module doc) on ``device``, locally or as Ray tasks (``ray_tasks``: a
    ``distributed.tiles.RayTasks``, default one GPU per task on CUDA and one CPU otherwise).
    Its entries for the preconditioner are read by whole rows, using K's symmetry."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    path, device = Path(path), torch.device(device)
    try:
        kernel = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot map the kernel file ({e}); expected a .npy file from tiled_kernel's out") from None
    n = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != n or kernel.dtype not in (np.float32, np.float64):
        raise ValueError(f"{path}: expected a square (n, n) float32 or float64 kernel, got shape {kernel.shape} "
                         f"and dtype {kernel.dtype}")
    if executor == "ray":
        from ntkbench.distributed.tiles import RayTasks

        ray_tasks = ray_tasks or RayTasks()
        product = _RayProduct(path, n, kernel.itemsize, block_bytes, device, ray_tasks)
    else:
        product = _LocalProduct(kernel, row_blocks(n, kernel.itemsize, block_bytes), device)

    def block(rows: Index, cols: Index) -> Tensor:
        r, c = _index(rows, n), _index(cols, n)
        b = kernel[r][:, c] if _length(r, n) <= _length(c, n) else kernel[c][:, r].T
        return torch.from_numpy(np.ascontiguousarray(b)).to(device)

    diagonal = torch.from_numpy(np.ascontiguousarray(np.diagonal(kernel))).to(device)
    return KernelOperator(diagonal, block=block, tile=n, count=MatmulCount(), product=product)


def out_of_core_ridge(path: str | Path, y: Tensor, ridge: float, cg: CGSettings = CGSettings(), *,
                      device: torch.device | str = "cpu", block_bytes: int = DEFAULT_BLOCK_BYTES,
                      executor: str = "local", ray_tasks=None) -> CGResult:
    """alpha = (K + ridge·tr(K)/n · I)^{-1} Y by ``cg_ridge`` on K read from ``path`` block by
    block (module doc); ``y`` (n, c) or (n,) goes to ``device`` in K's dtype."""
    return cg_ridge(kernel_file(path, device=device, block_bytes=block_bytes, executor=executor,
                                ray_tasks=ray_tasks), y, ridge, cg)
