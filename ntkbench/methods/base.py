"""What every method shares: the registry, the run context, option checking, targets and the
ridge choice. A method is a dataclass of options with ``fit(x, labels, num_classes, ctx)``
returning a predictor with ``predict(x) -> (n, num_classes)`` scores."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from ntkbench.options import check_range, check_type
from ntkbench.registry import Registry, unknown_message
from ntkbench.solvers import loo_ridge

METHODS: Registry[type] = Registry("method")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
"""The ``dtype`` option of the kernel methods."""
register_method = METHODS.register
AT_EPOCH = "at_epoch"
"""The one option name of every linearization for "linearized (taken) at epoch k" of the
network it linearizes: θ_k after k epochs of that network's training."""


def linearizes(name: str) -> str | None:
    """The method whose trained network method ``name`` linearizes (its class attribute
    ``linearizes``, e.g. ``taylor`` → ``nn``), or None. Such a method has the option
    :data:`AT_EPOCH`; the runner compares its test outputs with that method's run."""
    return getattr(METHODS.get(name), "linearizes", None)


def option_names(name: str) -> list[str]:
    """The options of method ``name`` (its dataclass fields but ``arch`` and ``seed``)."""
    return [f.name for f in dataclasses.fields(METHODS.get(name)) if f.name not in ("arch", "seed")]


class NonFiniteError(ArithmeticError):
    """A fit or its outputs went NaN or infinite (a diverged training, a broken solve): the run
    ends FAILED with this message, never FINISHED."""


class Predictor(Protocol):
    def predict(self, x: Tensor) -> Tensor: ...


class RunContext:
    """Where a method reports its own metrics and choices; the runner forwards them to MLflow.

    ``metrics`` keeps the last value of each metric, ``params`` each reported choice and
    ``artifacts`` each JSON-able artifact by file name. ``kernel_cache`` is the directory of
    the content-addressed kernel cache (None: none), and ``executor`` where kernel tiles run
    (``local`` in this process, ``ray`` as tasks of the connected Ray cluster): the runner's
    choices, which are not part of a run's identity.
    """

    def __init__(self, metric_sink: Callable[[str, float, int | None], None] | None = None,
                 param_sink: Callable[[str, object], None] | None = None,
                 artifact_sink: Callable[[object, str], None] | None = None,
                 kernel_cache: Path | None = None, executor: str = "local") -> None:
        self.kernel_cache, self.executor = kernel_cache, executor
        self.metrics: dict[str, float] = {}
        self.params: dict[str, object] = {}
        self.artifacts: dict[str, object] = {}
        self._metric_sink, self._param_sink, self._artifact_sink = metric_sink, param_sink, artifact_sink

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.metrics[key] = float(value)
        if self._metric_sink:
            self._metric_sink(key, float(value), step)

    def log_param(self, key: str, value: object) -> None:
        self.params[key] = value
        if self._param_sink:
            self._param_sink(key, value)

    def log_dict(self, data: object, file_name: str) -> None:
        self.artifacts[file_name] = data
        if self._artifact_sink:
            self._artifact_sink(data, file_name)


def get(name: str, arch, seed: int = 0, **options):
    """Build method ``name`` with the shared ``arch`` and ``seed``; options are type-checked."""
    cls = METHODS.get(name)
    hints = typing.get_type_hints(cls)
    valid = option_names(name)
    for key, value in options.items():
        if key not in valid:
            raise ValueError(unknown_message(f"unknown option {{}} for method {name!r}", [key], valid, "Valid options"))
        options[key] = check_type(f"{name}.{key}", value, hints[key])
    return cls(arch=arch, seed=check_type("seed", seed, int), **options)


def resolved(method, input_shape: tuple[int, ...]):
    """The method with the options that depend on the inputs resolved, so that the run's config
    records what ran: a method may define ``resolve(input_shape)`` (the kernel methods resolve
    ``kernel_method="auto"``); others are returned as they are."""
    resolve = getattr(method, "resolve", None)
    return resolve(input_shape) if resolve is not None else method


def options_of(method) -> dict[str, object]:
    """The method's options (everything but the architecture), for logging."""
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.name != "arch"}


def check_inputs(x: Tensor, labels: Tensor, num_classes: int) -> None:
    """Raise a one-line ValueError for inputs no method can fit."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if x.dim() < 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x must be (n, ...) and labels (n,), got {tuple(x.shape)} and {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 class indices, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf; inputs must be finite")


def centered_one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Regression targets e_y − 1/C: zero mean over classes, as in Lee et al. 2020."""
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype) - 1.0 / num_classes


def choose_ridge(k_train: Tensor | None, targets: Tensor, ridge: float | None, ctx: RunContext) -> float:
    """The fixed relative ridge, or the exact leave-one-out choice on the default grid (which
    needs the train kernel ``k_train``), extended past an edge choice (``loo_ridge``); the choice
    is logged, with ``ridge_at_grid_edge`` 1 when it still lies on the extended grid's edge."""
    ctx.log_param("ridge_selection", "fixed" if ridge is not None else "loo")
    if ridge is None:
        choice = loo_ridge(k_train, targets, relative=True)
        ridge = choice.ridge
        ctx.log_metric("loo_mse", float(choice.loo_mse.min()))
        ctx.log_metric("ridge_at_grid_edge", float(choice.at_edge))
        if choice.at_edge:
            print(f"ntkbench: warning: the leave-one-out ridge {ridge:g} is on the edge of the searched grid "
                  f"[{float(choice.grid[0]):g}, {float(choice.grid[-1]):g}]; the optimum may lie beyond it", file=sys.stderr)
    ctx.log_metric("ridge", ridge)
    return ridge


def check_kernel_budgets(method: str, ridge: float | None, max_n_train: int | None, memory_budget_gb: float,
                         time_budget_s: float | None) -> None:
    """The ranges of the options every kernel-regression method shares (one-line errors)."""
    check_range(f"{method}.ridge", ridge, 0)
    check_range(f"{method}.max_n_train", max_n_train, 1)
    check_range(f"{method}.memory_budget_gb", memory_budget_gb, 0, low_open=True)
    check_range(f"{method}.time_budget_s", time_budget_s, 0, low_open=True)


def fit_budget(x: Tensor, labels: Tensor, max_n_train: int | None, memory_budget_gb: float, time_budget_s: float | None,
               bytes_per_row: float, bytes_per_pair: float, probe: Callable[[Tensor], object], seed: int,
               ctx: RunContext) -> tuple[Tensor, Tensor]:
    """The largest stratified subset of (x, labels) that fits the budgets, and ``n_train_used``.

    Memory: n·bytes_per_row + n²·bytes_per_pair <= ``memory_budget`` (min(memory_budget_gb,
    80% of the memory free now on the inputs' device)), so the 64 GB default never overcommits a
    smaller machine; the bytes used are logged as ``memory_budget_gb_used``. Time, only when
    ``time_budget_s`` is set: ``probe`` is timed on up to 32 rows (after one warm-up call) and
    the cost extrapolated with the pair count, n²/32². A time budget makes n_train depend on the
    machine and its load, so it is off by default. ``max_n_train`` caps the result. A subsample
    is drawn per class with ``seed`` and logged, never silent.
    """
    n = len(x)
    budget = memory_budget(memory_budget_gb, x.device)
    ctx.log_metric("memory_budget_gb_used", budget / 2**30)
    if bytes_per_pair > 0:
        n_memory = (-bytes_per_row + math.sqrt(bytes_per_row**2 + 4 * bytes_per_pair * budget)) / (2 * bytes_per_pair)
    else:  # no n×n term (a matrix-free solve): rows only
        n_memory = budget / bytes_per_row if bytes_per_row > 0 else math.inf
    n_time = math.inf
    if time_budget_s is not None:
        rows = x[: min(n, 32)]
        probe(rows)
        start = time.perf_counter()
        probe(rows)
        per_pair = max(time.perf_counter() - start, 1e-9) / len(rows) ** 2
        n_time = math.sqrt(time_budget_s / per_pair)
    n_used = int(min(n, n_memory, n_time, max_n_train or n))
    ctx.log_metric("n_train_used", n_used)
    ctx.log_metric("n_train_budget_memory", min(n_memory, 1e12))
    if time_budget_s is not None:
        ctx.log_metric("n_train_budget_time", min(n_time, 1e12))
    if n_used >= n:
        return x, labels
    if n_used < 1:
        raise ValueError(f"no training row fits memory_budget_gb={memory_budget_gb} and time_budget_s={time_budget_s}")
    from ntkbench.tasks.base import random_stream, stratified_indices

    index = stratified_indices(labels.cpu().numpy(), n_used, random_stream(seed, 3))
    index = torch.from_numpy(index).to(x.device)
    return x[index], labels[index]


def memory_budget(memory_budget_gb: float, device: torch.device) -> float:
    """Bytes a method may use: min(memory_budget_gb, 80% of the memory free now on ``device``,
    as ``ntkbench.arch.tiled.free_memory`` counts it)."""
    from ntkbench.arch.tiled import free_memory

    return min(memory_budget_gb * 2**30, 0.8 * free_memory(device))


def log_kernel_diagnostics(k_train: Tensor, targets: Tensor, ridge: float, ctx: RunContext) -> None:
    """Centred alignment, effective rank, target energy in the top eigenmodes and the train and
    leave-one-out errors at the chosen ridge, as ``kernel_*`` metrics, and the spectrum as the
    artifact ``spectrum.json`` (see ``ntkbench.diagnostics``). Costs two n×n eigh. A diagnostic
    that is undefined for this kernel or subset (a single class, a constant kernel) is reported
    as the param ``kernel_diagnostics_error`` and on stderr; the fit goes on."""
    from ntkbench.diagnostics import DiagnosticError, kernel_diagnostics, spectrum

    ctx.log_dict({"eigenvalues": spectrum(k_train).tolist()}, "spectrum.json")
    try:
        values = kernel_diagnostics(k_train, targets, ridge)
    except DiagnosticError as e:
        ctx.log_param("kernel_diagnostics_error", str(e))
        print(f"ntkbench: kernel diagnostics skipped: {e}", file=sys.stderr)
        return
    for key, value in values.items():
        ctx.log_metric(f"kernel_{key}", value)
