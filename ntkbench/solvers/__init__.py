"""Kernel regression solvers: kernel ridge prediction and leave-one-out ridge selection.

>>> from ntkbench.solvers import kernel_ridge, loo_ridge
>>> choice = loo_ridge(k_train_train, y_train)            # relative ridges, tr(K)/n units
>>> y_test = kernel_ridge(k_train_train, y_train, k_test_train, choice.ridge)
"""

from ntkbench.solvers.ridge import (
    RidgeChoice,
    default_ridge_grid,
    kernel_ridge,
    loo_ridge,
    ridge_weights,
)

__all__ = ["RidgeChoice", "default_ridge_grid", "kernel_ridge", "loo_ridge", "ridge_weights"]
