"""``entk``: kernel regression with the finite network's empirical NTK, Θ̂ = J Jᵀ."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from torch import Tensor

from ntkbench.methods import empirical
from ntkbench.methods.base import (
    DTYPES,
    RunContext,
    centered_one_hot,
    check_kernel_budgets,
    check_inputs,
    choose_ridge,
    fit_budget,
    log_kernel_diagnostics,
    memory_budget,
    register_method,
)
from ntkbench.methods.batch_statistics import fix_batch_statistics
from ntkbench.methods.empirical import Linearization, Plan
from ntkbench.methods.training import TrainOptions, batched, init_network, pretrain
from ntkbench.solvers import ridge_weights

# Of the memory budget, Θ̂ and its factors (3 n×n arrays) may take 3/4; the rest is the
# implementation's working memory (J or its blocks, tangents, Φ).
KERNEL_SHARE = 0.75


@dataclass
class LinearizedPredictor:
    """f(x) = f(x; θ) + J(x; θ) w, the linearized network's infinite-time solution (J(x; θ) w
    alone when ``centered``), in batches of ``batch_size`` inputs by ``route``
    (``empirical.predict_route``): jvps of w's columns, J never formed, or J(x) w."""

    lin: Linearization
    weights: Tensor
    batch_size: int
    route: empirical.PredictRoute = "jvp"
    centered: bool = False

    def predict(self, x: Tensor) -> Tensor:
        x = x.to(self.weights.dtype)
        return batched(lambda chunk: self.lin.linear(chunk, self.weights, self.route, self.centered), x,
                       self.batch_size).float()


@register_method("entk")
@dataclass
class ENTK(TrainOptions):
    """f(x) = f0(x) + Θ̂(x, X)(Θ̂ + λI)⁻¹(Y − f0(X)): the limit of gradient descent on MSE for
    the network linearized at θ0, or at θ_k after ``at_epoch=k`` epochs of training (Lee et al.
    2019; Fort et al. 2020). Θ̂ = J Jᵀ; λ = ridge·tr(Θ̂)/n (fixed, or by leave-one-out).

    The solve runs in weight space, w = Jᵀ(Θ̂ + λI)⁻¹R ("dual", n×n) or w = (JᵀJ + λI)⁻¹JᵀR
    ("primal", P×P), the same vector by the push-through identity; ``solve="auto"`` takes the
    smaller system. Θ̂ is computed by ``implementation`` (see ``ntkbench.methods.empirical``):
    ``contraction`` (J Jᵀ, in blocks when J does not fit), ``ntvp`` (NTK-vector products, dual
    solve only) or ``sketch`` (Φ = J S/√m with ``sketch_dim`` = m, then the same regression on
    Φ: predictions f0 + J(x) S w/√m). ``auto`` takes the fewest estimated FLOPs that fit the
    memory budget, among the exact two, and the sketch only when ``sketch_dim`` is set; the
    choice and every estimate are logged (``entk_implementation``, ``entk_cost_*``).

    J is that of the network in evaluation mode, BatchNorm's statistics those of the training
    inputs in use at θ0 (or θ_k), held fixed (``batch_statistics``). The training options apply
    to the ``at_epoch`` pretraining. Training uses the largest
    stratified subset within ``memory_budget_gb``, ``time_budget_s`` and ``max_n_train``
    (``fit_budget``): Θ̂ and its factors get 3/4 of the budget, the implementation the rest.
    The time probe runs the chosen implementation; its extrapolation by pair count is
    conservative where the cost grows linearly. ``diagnostics`` logs Θ̂'s alignment with the
    residual targets, its spectrum and the target energy (``ntkbench.diagnostics``).

    ``centered``: f(x) = Θ̂(x, X)(Θ̂ + λI)⁻¹Y, kernel regression with Θ̂ alone, as ``ntk`` does
    with the infinite-width kernel and as Fort et al. 2020 use the kernel of θ_k: f(x; θ) is
    dropped, and with it the random function of a finite network at θ0 and the logit scale a
    network trained with cross-entropy reaches by θ_k.
    """

    linearizes: ClassVar[str] = "nn"

    ridge: float | None = None
    at_epoch: int = 0
    centered: bool = False
    kernel: Literal["sum", "full"] = "sum"
    solve: Literal["auto", "dual", "primal"] = "auto"
    implementation: Literal["auto", "contraction", "ntvp", "sketch"] = "auto"
    sketch_dim: int | None = None
    dtype: Literal["float64", "float32"] = "float64"
    max_n_train: int | None = None
    diagnostics: bool = True
    memory_budget_gb: float = 64.0
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel_budgets("entk", self.ridge, self.max_n_train, self.memory_budget_gb, self.time_budget_s)
        if self.sketch_dim is not None and self.sketch_dim < 1:
            raise ValueError(f"entk.sketch_dim must be a positive int, got {self.sketch_dim}")
        if self.implementation == "sketch" and self.sketch_dim is None:
            raise ValueError("entk.implementation='sketch' needs entk.sketch_dim, the number of random projections m")
        if self.implementation == "ntvp" and self.solve == "primal":
            raise ValueError("entk.implementation='ntvp' never forms J, so it solves in the dual; use solve='dual' or 'auto'")

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> LinearizedPredictor:
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        net, params = init_network(self, x, num_classes)
        params = pretrain(self, net, params, x, labels, num_classes, self.at_epoch, ctx)
        dtype = DTYPES[self.dtype]
        # Evaluation mode for the probes below; BatchNorm's statistics are fixed on the inputs chosen.
        lin = Linearization(net.to(dtype).eval(), {k: v.to(dtype) for k, v in params.items()}, self.kernel, num_classes)
        x = x.to(dtype)
        rows_per_input, itemsize = lin.rows_per_input, dtype.itemsize
        budget = memory_budget(self.memory_budget_gb, x.device)
        sizes = empirical.measure(lin, x[: self.max_n_train or len(x)], self.sketch_dim)
        exclude = ("ntvp",) if self.solve == "primal" else ()
        probe_plan, _ = empirical.choose(sizes, (1 - KERNEL_SHARE) * budget, self.implementation, exclude)

        def probe(rows: Tensor) -> Tensor:
            plan = empirical.estimate(probe_plan.implementation, replace(sizes, n_inputs=len(rows)), (1 - KERNEL_SHARE) * budget)
            return empirical.train_kernel(lin, rows, plan, self.seed)

        x, labels = fit_budget(x, labels, self.max_n_train, self.memory_budget_gb, self.time_budget_s,
                               (x[0].numel() + 4 * rows_per_input) * itemsize,
                               3 * rows_per_input**2 * itemsize / KERNEL_SHARE, probe, self.seed, ctx)
        fix_batch_statistics(lin.net, lin.params, x)
        working = budget - 3 * (len(x) * rows_per_input) ** 2 * itemsize
        plan = self._plan(replace(sizes, n_inputs=len(x)), working, exclude, ctx)
        residual = centered_one_hot(labels, num_classes, dtype)
        if not self.centered:
            residual = residual - batched(lin.forward, x)
        if self.kernel == "full":
            residual = residual.reshape(-1, 1)
        weights = self._weights(lin, x, residual, plan, ctx)
        route, _, per_input = empirical.predict_route(sizes, weights.shape[1])
        ctx.log_param("entk_predict", route)
        return LinearizedPredictor(lin, weights, int(max(1, min(1024, working // per_input))), route, self.centered)

    def _plan(self, sizes: empirical.Sizes, working: float, exclude: tuple[str, ...], ctx: RunContext) -> Plan:
        """The implementation's plan for the n_train in use, logged with every estimate."""
        plan, plans = empirical.choose(sizes, working, self.implementation, exclude)
        ctx.log_param("entk_implementation", plan.implementation)
        ctx.log_param("entk_block", plan.block)
        ctx.log_param("entk_hold_jacobian", plan.hold)
        ctx.log_metric("entk_forward_gflop", sizes.forward_flops / 1e9)
        ctx.log_metric("entk_working_memory_gb", working / 2**30)
        for name, estimate in plans.items():
            ctx.log_metric(f"entk_cost_{name}_gflop", estimate.flops / 1e9)
            ctx.log_metric(f"entk_cost_{name}_memory_gb", estimate.memory_bytes / 2**30)
        return plan

    def _weights(self, lin: Linearization, x: Tensor, residual: Tensor, plan: Plan, ctx: RunContext) -> Tensor:
        """Parameter-space weights w, (P, T), of the ridge regression on the plan's features."""
        rows = len(residual)
        n_features = plan.sketch_dim or lin.n_params
        solve = self.solve if self.solve != "auto" else ("primal" if n_features < rows and plan.implementation != "ntvp" else "dual")
        ctx.log_param("entk_solve", solve)
        ctx.log_metric("entk_n_features", n_features)
        features = empirical.features(lin, x, plan, self.seed)  # J or Φ when held, else None
        k = None
        if solve == "dual" or self.ridge is None:  # the primal solve with a fixed ridge never forms Θ̂
            k = features @ features.T if features is not None else empirical.train_kernel(lin, x, plan, self.seed)
        ridge = choose_ridge(k, residual, self.ridge, ctx)
        if self.diagnostics and k is not None:
            log_kernel_diagnostics(k, residual, ridge, ctx)
        if solve == "dual":
            alpha = ridge_weights(k, residual, ridge)
            weights = features.T @ alpha if features is not None else empirical.transpose_product(lin, x, alpha, plan.block)
        else:
            if features is not None:
                gram, cross, trace = features.T @ features, features.T @ residual, float(features.square().sum())
            else:
                gram, cross, trace = empirical.gram_blocks(lin, x, residual, plan.block)
            weights = ridge_weights(gram, cross, ridge * trace / rows, relative=False)
        if plan.implementation == "sketch":
            weights = empirical.sketch_weights(lin, weights, self.seed, plan.block)
        return weights

