"""``ntk`` and ``nngp``: kernel ridge regression with the infinite-width kernels of ``arch``,
computed in closed form, by quadrature, or by Monte Carlo over finite networks
(``kernel_method``; see ``Serial.kernel``).

Closed-form and quadrature kernels are computed by ``arch.tiled.tiled_kernel`` through
``arch.cache``: with the runner's kernel cache (``RunContext.kernel_cache``) one pass gives the
NNGP and the NTK of train×train and test×train, which the other method, a later run on a subset
of the rows, or a rerun after a kill then reads or continues; without one, in memory. Each run
logs ``kernel_cache`` (computed, resumed, hit) and ``time_kernel_s`` for K(X, X) (with
``kernel_pairs_per_s``, the n(n+1)/2 pairs computed per second, when computed here), and
``kernel_cache_test`` and ``time_kernel_test_s`` for the first prediction's K(x, X)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from ntkbench.arch import Serial
from ntkbench.arch import cache as kernel_cache
from ntkbench.arch.cache import KernelCache
from ntkbench.arch.spec import from_spec, to_spec
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
from ntkbench.options import check_range
from ntkbench.solvers import (
    CG_SOLVERS,
    Block,
    CGSettings,
    JitterPolicy,
    KernelOperator,
    MatmulCount,
    SolverChoice,
    SolverName,
    SolverPolicy,
    assemble_kernel,
    block_diagonal,
    cg_ridge,
    cholesky_ridge_,
    choose_solver,
    dense_block,
    out_of_core_ridge,
)

# Kernel entries per test chunk in ``predict``: the chunk's nngp and ntk take 1 GB in float64.
PREDICT_ELEMENTS = 1 << 26
KernelMethod = Literal["auto", "exact", "quadrature", "monte_carlo"]
# Each kernel method covers the networks of the ones before it.
KERNEL_METHODS: tuple[KernelMethod, ...] = ("exact", "quadrature", "monte_carlo")
# Training inputs on which a quadrature kernel is compared with one at twice the degree.
QUADRATURE_CHECK_INPUTS = 16


def kernel_block(arch: Serial, x: Tensor, kind: str, dtype: torch.dtype) -> Block:
    """K[rows][:, cols] = the ``kind`` kernel of ``arch`` between x[rows] and x[cols] by
    ``tiled_kernel`` in memory, recomputed on each call (the matrix-free solve without a cache)."""
    return lambda rows, cols: getattr(kernel_cache.kernel(arch, x[rows], x[cols], dtype=dtype).kernel,
                                      kind).to(x.device)


@dataclass(frozen=True)
class KernelSource:
    """Where the ``kind`` kernel of a run comes from. Exact and quadrature kernels go through
    ``arch.cache.kernel``: ``tiled_kernel`` with the content-addressed cache ``cache`` (memory
    maps; computed once, resumable), or in memory when it is None. ``monte_carlo`` ({n_samples,
    width, seed}) keeps ``Serial.kernel(method="monte_carlo")``, in memory and not cached: its
    estimate depends on the seed and the sample sizes, and on the batch whose BatchNorm
    statistics it uses."""

    arch: Serial
    kind: str
    dtype: torch.dtype
    cache: KernelCache | None = None
    executor: str = "local"
    monte_carlo: dict[str, int] | None = None

    def get(self, x1: Tensor, x2: Tensor | None = None) -> kernel_cache.CachedKernel:
        if self.monte_carlo is not None:
            start = time.perf_counter()
            k = self.arch.kernel(x1, x2, dtype=self.dtype, method="monte_carlo", **self.monte_carlo)
            return kernel_cache.CachedKernel(k, "computed", time.perf_counter() - start, None, 0, 0, None)
        return kernel_cache.kernel(self.arch, x1, x2, dtype=self.dtype, cache=self.cache, executor=self.executor)

    def blocks(self, x: Tensor, x_train: Tensor) -> Iterator[tuple[Tensor, kernel_cache.CachedKernel]]:
        """K(x, X_train) of ``kind`` by row blocks: from one cached (memory-mapped) test×train
        kernel, else computed chunk by chunk (``PREDICT_ELEMENTS`` entries each), with how each
        was obtained."""
        rows = max(1, PREDICT_ELEMENTS // len(x_train))
        if self.cache is not None and self.monte_carlo is None:
            got = self.get(x, x_train)
            k = getattr(got.kernel, self.kind)
            for i in range(0, len(x), rows):
                yield k[i:i + rows], got
            return
        for i in range(0, max(len(x), 1), rows):  # an empty x still reaches arch.kernel's error
            got = self.get(x[i:i + rows], x_train)
            yield getattr(got.kernel, self.kind), got


@dataclass
class KernelPredictor:
    """f(x) = K(x, X) α with α = (K + λ tr(K)/n · I)⁻¹ Y, by blocks of test rows. The first
    ``predict`` (the runner's test set) logs ``kernel_cache_test`` (computed, resumed, hit)
    and ``time_kernel_test_s`` to ``ctx``."""

    source: KernelSource
    x_train: Tensor
    alpha: Tensor
    ctx: RunContext | None = None

    def predict(self, x: Tensor) -> Tensor:
        start, statuses, scores = time.perf_counter(), [], []
        for k, got in self.source.blocks(x, self.x_train):
            scores.append((k.to(self.alpha.device) @ self.alpha).float())
            statuses.append(got.status)
        if self.ctx is not None:
            self.ctx.log_param("kernel_cache_test", _status(statuses))
            self.ctx.log_metric("time_kernel_test_s", time.perf_counter() - start)
            self.ctx = None
        return torch.cat(scores)


def _status(statuses: list[str]) -> str:
    """One status for several blocks: ``hit`` only if all hit, ``resumed`` if any resumed."""
    return next((s for s in ("resumed", "computed") if s in statuses), "hit")


@dataclass
class _KernelRegression:
    """Infinite-width kernel regression on centered one-hot targets; the ridge is relative
    (λ·tr(K)/n), fixed by ``ridge``, chosen by exact leave-one-out on a log grid (solver
    ``eigh``), or ``SolverPolicy.default_ridge`` where leave-one-out is not run (logged).

    ``solver`` (``auto``, ``eigh``, ``cholesky``, ``cg``, ``matrix_free``; see
    ``ntkbench.solvers.choice`` for the rule and its thresholds) is logged with its reason;
    ``direct_time_s`` is the estimated time an eigh or Cholesky may take under ``auto``
    (``SolverPolicy``; the device's flop rates turn it into eigh_max_n and cholesky_max_n).
    ``cg_tolerance``, ``max_cg_iterations`` and ``preconditioner_rank`` set CG
    (``CGSettings``); ``max_jitter`` bounds the Cholesky's jitter (``JitterPolicy``).

    Training uses the largest stratified subset that fits ``memory_budget_gb`` (with the memory
    of the chosen solver: 3n² numbers for eigh, n² for Cholesky and CG, none for matrix-free),
    ``time_budget_s`` (off by default: it makes n_train machine-dependent) and ``max_n_train``;
    see ``fit_budget``. The memory default suits one large GPU. ``diagnostics`` logs the train
    kernel's alignment, spectrum and target energy where their two eigh fit the solver's rule.
    """

    arch: Serial
    seed: int = 0
    ridge: float | None = None
    dtype: Literal["float64", "float32"] = "float64"
    max_n_train: int | None = None
    diagnostics: bool = True
    memory_budget_gb: float = 64.0
    time_budget_s: float | None = None
    solver: SolverName = "auto"
    direct_time_s: float = 20.0
    cg_tolerance: float = 1e-4
    max_cg_iterations: int = 1000
    preconditioner_rank: int = 100
    max_jitter: float = 1e-3
    kernel_method: KernelMethod = "auto"
    mc_samples: int = 64
    mc_width: int = 512
    kind = "ntk"

    def __post_init__(self) -> None:
        check_kernel_budgets(self.kind, self.ridge, self.max_n_train, self.memory_budget_gb, self.time_budget_s)
        check_range(f"{self.kind}.direct_time_s", self.direct_time_s, 0, low_open=True)
        check_range(f"{self.kind}.cg_tolerance", self.cg_tolerance, 0, 1, low_open=True)
        check_range(f"{self.kind}.max_cg_iterations", self.max_cg_iterations, 1)
        check_range(f"{self.kind}.preconditioner_rank", self.preconditioner_rank, 0)
        check_range(f"{self.kind}.max_jitter", self.max_jitter, 0)
        check_range(f"{self.kind}.mc_samples", self.mc_samples, 2)
        check_range(f"{self.kind}.mc_width", self.mc_width, 1)

    def resolve(self, input_shape: tuple[int, ...]) -> _KernelRegression:
        """This method with ``kernel_method`` resolved for inputs of ``input_shape``: ``auto``
        becomes what the architecture needs; a method that cannot cover it raises one line."""
        needed = self.arch.kernel_method(input_shape)
        if self.kernel_method == "auto":
            return replace(self, kernel_method=needed)
        if KERNEL_METHODS.index(self.kernel_method) < KERNEL_METHODS.index(needed):
            why = self.arch.no_kernel(input_shape) or "an Elementwise layer has no closed form"
            raise ValueError(f"{self.kind}.kernel_method={self.kernel_method} cannot compute this architecture's kernel "
                             f"({why}); use {needed} or auto")
        if self.kernel_method == "quadrature" and needed == "exact":
            raise ValueError(f"{self.kind}.kernel_method=quadrature: no layer of this architecture integrates "
                             "numerically; use exact or auto")
        return self

    def _source(self, dtype: torch.dtype, ctx: RunContext) -> KernelSource:
        """This run's kernels: Monte Carlo in memory, else tiled, through ``ctx.kernel_cache`` if set."""
        mc = (dict(n_samples=self.mc_samples, width=self.mc_width, seed=self.seed)
              if self.kernel_method == "monte_carlo" else None)
        cache = KernelCache(ctx.kernel_cache) if ctx.kernel_cache is not None and mc is None else None
        return KernelSource(self.arch, self.kind, dtype, cache, ctx.executor, mc)

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> KernelPredictor:
        """Fit on (x, labels), logging how K(X, X) was obtained (``kernel_cache``) and the time
        it took (``time_kernel_s``). With a cache, K is one memory-mapped entry (computed,
        resumed or hit) whose blocks the solver reads: a direct solve assembles its own copy (the
        Cholesky factorizes that copy, never the cache), out-of-core CG streams row blocks of its
        file (``solvers.out_of_core``; ``auto`` picks it when K does not fit the memory budget),
        matrix-free CG reads the blocks in each product. Without one, ``tiled_kernel`` computes K's blocks in memory where the solver
        needs them (status computed): one n×n copy for a direct solve, none for matrix-free CG,
        which recomputes them in each product (no ``time_kernel_s`` then)."""
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        if self.kernel_method == "auto":
            return self.resolve(tuple(x.shape[1:])).fit(x, labels, num_classes, ctx)
        dtype = DTYPES[self.dtype]
        source = self._source(dtype, ctx)
        ctx.log_param("kernel_method", self.kernel_method)
        policy = replace(SolverPolicy.for_device(x.device), direct_time_s=self.direct_time_s)
        cg = CGSettings(self.cg_tolerance, self.max_cg_iterations, self.preconditioner_rank)
        choice = choose_solver(len(x), num_classes, dtype, memory_budget(self.memory_budget_gb, x.device),
                               self.ridge is not None, self.solver, policy, self.diagnostics, cg.preconditioner_rank,
                               kernel_on_disk=source.cache is not None)
        _log_choice(choice, policy, cg, self.max_jitter, self.diagnostics, ctx)
        x, labels = fit_budget(x, labels, self.max_n_train, self.memory_budget_gb, self.time_budget_s,
                               choice.bytes_per_row, choice.bytes_per_pair,
                               lambda rows: replace(source, cache=None).get(rows), self.seed, ctx)
        y = centered_one_hot(labels, num_classes, dtype)
        n = len(x)
        if self.kernel_method == "quadrature":
            self._log_quadrature_error(x[:QUADRATURE_CHECK_INPUTS], dtype, ctx)
        in_memory = source.cache is None and source.monte_carlo is None
        if in_memory:  # only one n×n matrix is held (the solver's), as the memory budget counts
            ctx.log_param("kernel_cache", "computed")
            block = kernel_block(self.arch, x, self.kind, dtype)
        else:  # a memory map of the cache, or the Monte Carlo estimate: the solver reads its blocks
            got = self._train_kernel(source, x, ctx)
            k_train = getattr(got.kernel, self.kind)
            block = lambda rows, cols: k_train[rows][:, cols].to(x.device)  # noqa: E731
        if choice.solver == "out_of_core":  # CG streaming row blocks of the cached file
            ridge = self._ridge(None, y, choice, policy, ctx)
            result = out_of_core_ridge(got.path / "kernel" / f"{self.kind}.npy", y, ridge, cg, device=x.device,
                                       executor=ctx.executor)
        elif choice.solver == "matrix_free":
            ridge = self._ridge(None, y, choice, policy, ctx)
            k = KernelOperator(block_diagonal(block, n), block=block, tile=policy.tile, count=MatmulCount())
            result = cg_ridge(k, y, ridge, cg)
        else:
            start = time.perf_counter()
            k = assemble_kernel(block, x.new_empty(n, n, dtype=dtype), policy.tile)  # the solver's own copy
            if in_memory:
                ctx.log_metric("time_kernel_s", time.perf_counter() - start)
            ridge = self._ridge(k, y, choice, policy, ctx)
            if choice.diagnostics:
                log_kernel_diagnostics(k, y, ridge, ctx)
            if choice.solver == "cg":
                result = cg_ridge(KernelOperator(k.diagonal(), block=dense_block(k), tile=n, count=MatmulCount()),
                                  y, ridge, cg)
            else:  # eigh (the ridge is chosen) and cholesky: k is consumed by the factorization
                result = cholesky_ridge_(k, y, ridge, lambda out: assemble_kernel(block, out, policy.tile),
                                         JitterPolicy(max_jitter=self.max_jitter))
        for key, value in result.metrics().items():
            ctx.log_metric(key, value)
        return KernelPredictor(source, x, result.alpha, ctx)

    def _train_kernel(self, source: KernelSource, x: Tensor, ctx: RunContext) -> kernel_cache.CachedKernel:
        """K(X, X), logging how it was obtained and how long it took."""
        got = source.get(x)
        ctx.log_param("kernel_cache", got.status)
        ctx.log_metric("time_kernel_s", got.seconds)
        if got.status == "computed" and got.seconds > 0:  # the measured throughput: upper-triangle pairs per second
            ctx.log_metric("kernel_pairs_per_s", len(x) * (len(x) + 1) / 2 / got.seconds)
        if got.tiles:  # computed or resumed: the tiles, how many this run computed, their side
            ctx.log_metric("kernel_tiles", got.tiles)
            ctx.log_metric("kernel_tiles_computed", got.computed)
            ctx.log_metric("kernel_tile", got.tile)
        if source.monte_carlo is not None:
            # One estimate of the whole train kernel: its networks (and any BatchNorm's statistics
            # of the training inputs) are the same for every entry.
            se = getattr(got.kernel, f"{self.kind}_se")
            ctx.log_metric("kernel_mc_relative_se", float(se.mean() / getattr(got.kernel, self.kind).abs().mean()))
        return got

    def _log_quadrature_error(self, x: Tensor, dtype: torch.dtype, ctx: RunContext) -> None:
        """Log max |K − K₂| / max |K₂|, K₂ the kernel at twice every Elementwise layer's degree."""
        try:
            finer = from_spec(_double_degrees(to_spec(self.arch)))
        except ValueError as e:  # a layer without an exchange-format entry, e.g. an unnamed callable
            ctx.log_param("kernel_quadrature_error_skipped", str(e))
            return
        k, k2 = getattr(self.arch.kernel(x, dtype=dtype), self.kind), getattr(finer.kernel(x, dtype=dtype), self.kind)
        ctx.log_metric("kernel_quadrature_error", float((k - k2).abs().max() / k2.abs().max()))

    def _ridge(self, k: Tensor | None, y: Tensor, choice: SolverChoice, policy: SolverPolicy, ctx: RunContext) -> float:
        """The fixed ridge, leave-one-out (eigh), or the policy's default, logged."""
        if choice.solver == "eigh" or self.ridge is not None:
            return choose_ridge(k, y, self.ridge, ctx)
        ctx.log_param("ridge_selection", "default")
        ctx.log_param("ridge_default_reason", f"leave-one-out needs eigh; solver {choice.solver} takes "
                                              f"SolverPolicy.default_ridge = {policy.default_ridge:g} (set ridge to override)")
        ctx.log_metric("ridge", policy.default_ridge)
        return policy.default_ridge


def _double_degrees(spec: list) -> list:
    """The layer list with every quadrature entry at twice its degree (``["tanh"]`` is degree
    ``activations.DEFAULT_DEG``), residual branches included."""
    from ntkbench.arch.activations import DEFAULT_DEG

    out = []
    for entry in spec:
        if entry[0] == "tanh":
            out.append(["elementwise", "tanh", 2 * DEFAULT_DEG])
        elif entry[0] == "elementwise":
            out.append(["elementwise", entry[1], 2 * entry[2]])
        elif entry[0] == "residual":
            out.append(["residual", _double_degrees(entry[1]), _double_degrees(entry[2])])
        else:
            out.append(entry)
    return out


def _log_choice(choice: SolverChoice, policy: SolverPolicy, cg: CGSettings, max_jitter: float,
                wanted_diagnostics: bool, ctx: RunContext) -> None:
    """The solver, its reason, the thresholds behind it and the chosen solver's settings."""
    ctx.log_param("solver", choice.solver)
    ctx.log_param("solver_reason", choice.reason)
    for key in ("eigh_max_n", "cholesky_max_n", "direct_time_s", "tile"):
        ctx.log_param(f"solver_{key}", getattr(policy, key))
    if choice.solver in CG_SOLVERS:
        for key, value in cg.params().items():
            ctx.log_param(key, value)
    else:
        ctx.log_param("cholesky_max_jitter", max_jitter)
    if wanted_diagnostics and not choice.diagnostics:
        ctx.log_param("diagnostics_skipped", f"solver {choice.solver}: the eigh diagnostics need K in memory, "
                                             f"n <= eigh_max_n = {policy.eigh_max_n} and 3n² numbers in the budget")


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
