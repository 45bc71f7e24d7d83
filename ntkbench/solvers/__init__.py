"""Kernel regression solvers: the linear algebra, kept apart from the kernels.

* ``ridge``: kernel ridge prediction and the exact leave-one-out ridge (one eigh).
* ``cholesky``: the weights by a Cholesky in place, with jitter escalation.
* ``cg``: pivoted-Cholesky-preconditioned CG through linear_operator.
* ``operator``: K as a linear_operator ``LinearOperator`` from blocks (held or recomputed).
* ``out_of_core``: CG on K memory-mapped from its .npy file, row blocks streamed (or Ray tasks).
* ``choice``: which solver for which n, as explicit thresholds (``SolverPolicy``).

>>> from ntkbench.solvers import kernel_ridge, loo_ridge
>>> choice = loo_ridge(k_train_train, y_train)            # relative ridges, tr(K)/n units
>>> y_test = kernel_ridge(k_train_train, y_train, k_test_train, choice.ridge)
>>> alpha = cholesky_ridge_(k_train_train, y_train, choice.ridge).alpha   # consumes k_train_train
"""

import warnings

with warnings.catch_warnings():  # linear_operator's import uses torch.jit.script: 2 lines on stderr of every command
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    import linear_operator  # noqa: F401

from ntkbench.solvers.cg import CGResult, CGSettings, cg_context, cg_ridge
from ntkbench.solvers.cholesky import CholeskyResult, JitterPolicy, cholesky_flops, cholesky_ridge_
from ntkbench.solvers.choice import CG_SOLVERS, SOLVERS, SolverChoice, SolverName, SolverPolicy, choose_solver
from ntkbench.solvers.operator import Block, KernelOperator, MatmulCount, assemble_kernel, block_diagonal, dense_block
from ntkbench.solvers.out_of_core import kernel_file, out_of_core_ridge, row_blocks
from ntkbench.solvers.ridge import (
    RidgeChoice,
    default_ridge_grid,
    kernel_ridge,
    loo_ridge,
    ridge_weights,
)

__all__ = [
    "CG_SOLVERS", "SOLVERS", "Block", "CGResult", "CGSettings", "CholeskyResult", "JitterPolicy", "KernelOperator",
    "MatmulCount", "RidgeChoice", "SolverChoice", "SolverName", "SolverPolicy", "assemble_kernel", "block_diagonal",
    "cg_context", "cg_ridge", "cholesky_flops", "cholesky_ridge_", "choose_solver", "default_ridge_grid", "dense_block",
    "kernel_file", "kernel_ridge", "loo_ridge", "out_of_core_ridge", "ridge_weights", "row_blocks",
]
