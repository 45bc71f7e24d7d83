"""``ntk`` and ``nngp``: kernel ridge regression with the infinite-width kernels of ``arch``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ntkbench.arch import Serial
from ntkbench.methods.base import (
    DTYPES,
    RunContext,
    centered_one_hot,
    check_inputs,
    choose_ridge,
    fit_budget,
    log_kernel_diagnostics,
    register_method,
)
from ntkbench.solvers import ridge_weights

@dataclass
class KernelPredictor:
    """f(x) = K(x, X) α with α = (K + λ tr(K)/n · I)⁻¹ Y."""

    arch: Serial
    kind: str
    x_train: Tensor
    alpha: Tensor

    def predict(self, x: Tensor) -> Tensor:
        k = getattr(self.arch.kernel(x, self.x_train, dtype=self.alpha.dtype), self.kind)
        return (k @ self.alpha).float()


@dataclass
class _KernelRegression:
    """Infinite-width kernel regression on centered one-hot targets; the ridge is relative
    (λ·tr(K)/n), fixed by ``ridge`` or chosen by exact leave-one-out on a log grid.

    Training uses the largest stratified subset that fits ``memory_budget_gb`` and
    ``time_budget_s`` (off by default: it makes n_train machine-dependent) and ``max_n_train``;
    see ``fit_budget``. The memory default suits one large GPU.
    ``diagnostics`` logs the train kernel's alignment, spectrum and target energy.
    """

    arch: Serial
    seed: int = 0
    ridge: float | None = None
    dtype: Literal["float64", "float32"] = "float64"
    max_n_train: int | None = None
    diagnostics: bool = True
    memory_budget_gb: float = 64.0
    time_budget_s: float | None = None
    kind = "ntk"

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> KernelPredictor:
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        dtype = DTYPES[self.dtype]
        # The train kernel, its eigenvectors (LOO) and the Cholesky factor: about 3 n² numbers.
        x, labels = fit_budget(x, labels, self.max_n_train, self.memory_budget_gb, self.time_budget_s, 0.0,
                               3 * dtype.itemsize, lambda rows: self.arch.kernel(rows, dtype=dtype), self.seed, ctx)
        k = getattr(self.arch.kernel(x, dtype=dtype), self.kind)
        y = centered_one_hot(labels, num_classes, k.dtype)
        ridge = choose_ridge(k, y, self.ridge, ctx)
        if self.diagnostics:
            log_kernel_diagnostics(k, y, ridge, ctx)
        return KernelPredictor(self.arch, self.kind, x, ridge_weights(k, y, ridge))


@register_method("ntk")
@dataclass
class NTK(_KernelRegression):
    """The mean of an infinitely wide network trained to convergence by gradient descent on MSE
    (Jacot et al. 2018; Lee et al. 2019)."""

    kind = "ntk"


@register_method("nngp")
@dataclass
class NNGP(_KernelRegression):
    """The Bayesian posterior mean of the infinitely wide network's Gaussian process (Lee et al. 2018)."""

    kind = "nngp"
