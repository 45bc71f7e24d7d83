"""A symmetric kernel matrix K given by blocks, as a linear_operator ``LinearOperator``.

``block(rows, cols)`` returns K[rows][:, cols] for a slice or a 1-D index tensor on each side.
For a kernel held in memory it slices the tensor (``dense_block``); for the matrix-free mode it
recomputes the kernel between the inputs, e.g. ``arch.kernel(x[rows], x[cols]).ntk`` (see
``ntkbench.methods.kernel``), so that K is never held.

``KernelOperator`` applies K tile by tile over the upper triangle and uses each off-diagonal
tile twice (K_ij v_j and K_ij^T v_i), so one product K V evaluates n(n+1)/2 kernel entries with
a (tile × tile) block in memory at a time. A kernel in memory is one tile, i.e. one GEMM. The
products are counted in ``MatmulCount`` so that CG can report its iterations; a ``product``
function replaces the tiled loop (``solvers.out_of_core`` streams row blocks from a file). Its diagonal is
given up front (``block_diagonal`` computes it blockwise) for the pivoted-Cholesky
preconditioner, which reads K only through the diagonal and whole rows (``_get_indices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from linear_operator.operators import LinearOperator
from torch import Tensor

Index = slice | Tensor
Block = Callable[[Index, Index], Tensor]
"""block(rows, cols) -> K[rows][:, cols]."""

__all__ = ["Block", "KernelOperator", "MatmulCount", "assemble_kernel", "block_diagonal", "dense_block"]

# Rows per diagonal block in ``block_diagonal``: costs n·256 kernel entries, about 256/n of one product.
DIAGONAL_ROWS = 256


@dataclass
class MatmulCount:
    """How many products K V a ``KernelOperator`` has computed; shared by the copies that
    linear_operator rebuilds from the operator's representation."""

    calls: int = 0


def dense_block(k: Tensor) -> Block:
    """Blocks of a kernel held in memory: K[rows][:, cols] (views for slices)."""
    return lambda rows, cols: k[rows][:, cols]


def _tiles(n: int, tile: int) -> list[slice]:
    return [slice(i, min(i + tile, n)) for i in range(0, n, tile)]


def assemble_kernel(block: Block, out: Tensor, tile: int) -> Tensor:
    """Write the symmetric K into ``out`` (n, n) tile by tile: upper tiles from ``block``,
    mirrored below; diagonal tiles symmetrized as (B + B^T)/2. Only one n×n matrix is held
    (``arch.kernel(x)`` would hold nngp and ntk both). Returns ``out``."""
    tiles = _tiles(out.shape[0], tile)
    for a, rows in enumerate(tiles):
        for cols in tiles[a:]:
            b = block(rows, cols)
            if cols == rows:
                b = (b + b.mT) / 2
            out[rows, cols] = b
            if cols != rows:
                out[cols, rows] = b.mT
    return out


def block_diagonal(block: Block, n: int, rows: int = DIAGONAL_ROWS) -> Tensor:
    """diag(K) from diagonal blocks of ``rows`` rows: n·rows kernel entries."""
    return torch.cat([block(r, r).diagonal() for r in _tiles(n, rows)])


class KernelOperator(LinearOperator):
    """The symmetric n×n kernel K, applied block by block (see the module docstring).

    Args:
        diagonal: (n,) diag(K); sets n, the dtype and the device.
        block: K[rows][:, cols] for slices or index tensors.
        tile: rows and columns per block in a product; n for a kernel held in memory.
        count: incremented by each product K V.
        product: V (n, c) -> K V, used instead of the tiles when given.
    """

    def __init__(self, diagonal: Tensor, *, block: Block, tile: int, count: MatmulCount,
                 product: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__(diagonal, block=block, tile=tile, count=count, product=product)
        self.kernel_diagonal = diagonal
        self.block, self.tile, self.count, self.product = block, tile, count, product

    def _size(self) -> torch.Size:
        n = self.kernel_diagonal.shape[-1]
        return torch.Size((n, n))

    def _transpose_nonbatch(self) -> KernelOperator:
        return self

    def _diagonal(self) -> Tensor:
        return self.kernel_diagonal

    def _matmul(self, rhs: Tensor) -> Tensor:
        """K V = Σ over tiles i <= j of K_ij V_j (and K_ij^T V_i for i < j)."""
        self.count.calls += 1
        v = rhs[:, None] if rhs.ndim == 1 else rhs
        if self.product is not None:
            out = self.product(v)
            return out[:, 0] if rhs.ndim == 1 else out
        out = torch.zeros_like(v)
        tiles = _tiles(v.shape[0], self.tile)
        for a, rows in enumerate(tiles):
            for cols in tiles[a:]:
                b = self.block(rows, cols)
                out[rows] += b @ v[cols]
                if cols != rows:
                    out[cols] += b.mT @ v[rows]
        return out[:, 0] if rhs.ndim == 1 else out

    def _get_indices(self, row_index: Tensor, col_index: Tensor, *batch_indices: Tensor) -> Tensor:
        """K[row_index, col_index] elementwise, from one block over the distinct rows and
        columns; pivoted Cholesky asks for one whole row at a time, i.e. n kernel entries."""
        rows, row_pos = torch.unique(row_index, return_inverse=True)
        cols, col_pos = torch.unique(col_index, return_inverse=True)
        n = self.kernel_diagonal.shape[-1]
        if len(rows) * len(cols) > self.tile * n:
            raise ValueError(f"KernelOperator computes at most tile·n = {self.tile * n} entries at once, "
                             f"asked for {len(rows)}×{len(cols)}; index whole rows or fewer of them")
        b = self.block(slice(0, n) if len(rows) == n else rows, slice(0, n) if len(cols) == n else cols)
        return b[row_pos, col_pos]
