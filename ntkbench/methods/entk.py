"""``entk``: kernel regression with the finite network's empirical NTK, Θ̂ = J Jᵀ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor
from torch.func import functional_call

from ntkbench.arch import Network
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
from ntkbench.methods.training import Params, TrainOptions, batched, init_network, jacobian, pretrain
from ntkbench.solvers import ridge_weights

@dataclass
class LinearizedPredictor:
    """f(x) = f(x; θ) + J(x; θ) w, the linearized network's infinite-time solution."""

    net: Network
    params: Params
    weights: Tensor
    kernel: str
    num_classes: int

    def predict(self, x: Tensor) -> Tensor:
        x = x.to(self.weights.dtype)
        f0 = batched(lambda chunk: functional_call(self.net, self.params, (chunk,)), x)
        j = jacobian(self.net, self.params, x, self.kernel, self.num_classes)
        return (f0 + (j @ self.weights).reshape(f0.shape)).float()


@register_method("entk")
@dataclass
class ENTK(TrainOptions):
    """f(x) = f0(x) + Θ̂(x, X)(Θ̂ + λI)⁻¹(Y − f0(X)): the limit of gradient descent on MSE for
    the network linearized at θ0, or at θ_k after ``at_epoch=k`` epochs of training (Lee et al.
    2019; Fort et al. 2020). Θ̂ = J Jᵀ; λ = ridge·tr(Θ̂)/n (fixed, or by leave-one-out).

    The solve runs in weight space, w = Jᵀ(Θ̂ + λI)⁻¹R ("dual", n×n) or w = (JᵀJ + λI)⁻¹JᵀR
    ("primal", P×P), the same vector by the push-through identity; ``solve="auto"`` takes the
    smaller system. The training options apply to the ``at_epoch`` pretraining. Training uses
    the largest stratified subset within ``memory_budget_gb``, ``time_budget_s`` and
    ``max_n_train`` (``fit_budget``; the time extrapolation by pair count is conservative for
    the Jacobian, whose cost grows linearly). ``diagnostics`` logs Θ̂'s alignment with the
    residual targets, its spectrum and the target energy (``ntkbench.diagnostics``).
    """

    ridge: float | None = None
    at_epoch: int = 0
    kernel: Literal["sum", "full"] = "sum"
    solve: Literal["auto", "dual", "primal"] = "auto"
    dtype: Literal["float64", "float32"] = "float64"
    max_n_train: int | None = None
    diagnostics: bool = True
    memory_budget_gb: float = 64.0
    time_budget_s: float | None = None

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> LinearizedPredictor:
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        net, params = init_network(self, x, num_classes)
        params = pretrain(self, net, params, x, labels, num_classes, self.at_epoch, ctx)
        dtype = DTYPES[self.dtype]
        net, params = net.to(dtype), {k: v.to(dtype) for k, v in params.items()}
        x = x.to(dtype)
        rows_per_input = num_classes if self.kernel == "full" else 1
        n_params = sum(v.numel() for v in params.values())
        # J holds rows_per_input·P numbers per input; Θ̂ and its factors about 3 (rows_per_input·n)².
        x, labels = fit_budget(x, labels, self.max_n_train, self.memory_budget_gb, self.time_budget_s,
                               rows_per_input * n_params * dtype.itemsize, 3 * rows_per_input**2 * dtype.itemsize,
                               lambda rows: jacobian(net, params, rows, self.kernel, num_classes), self.seed, ctx)
        j = jacobian(net, params, x, self.kernel, num_classes)
        f0 = batched(lambda chunk: functional_call(net, params, (chunk,)), x)
        residual = centered_one_hot(labels, num_classes, dtype) - f0
        if self.kernel == "full":
            residual = residual.reshape(-1, 1)
        rows = j.shape[0]
        solve = self.solve if self.solve != "auto" else ("primal" if n_params < rows else "dual")
        ctx.log_param("entk_solve", solve)
        ctx.log_metric("entk_n_features", n_params)
        k = j @ j.T if solve == "dual" or self.ridge is None else None
        ridge = choose_ridge(k, residual, self.ridge, ctx)
        if self.diagnostics and k is not None:  # the primal solve with a fixed ridge never forms Θ̂
            log_kernel_diagnostics(k, residual, ridge, ctx)
        scale = j.square().sum() / rows  # tr(Θ̂)/n
        if solve == "dual":
            weights = j.T @ ridge_weights(k, residual, ridge)
        else:
            weights = ridge_weights(j.T @ j, j.T @ residual, ridge * float(scale), relative=False)
        return LinearizedPredictor(net, params, weights, self.kernel, num_classes)
