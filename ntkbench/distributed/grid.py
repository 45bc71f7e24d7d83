"""Grids on Ray (``--executor ray``): each run of a grid, one (n_train, seed, method) of
:func:`ntkbench.runner.run`, is a Ray task, tried again when its worker dies.

What holds, against the local loop (``--executor local``):

- The same records, in grid order, with the same progress lines and summary. A task builds its
  data, method and tracker itself from the plan's names and options and runs the local loop's
  own :func:`~ntkbench.runner._grid_run`, so a run's metrics are the local ones wherever
  floating point takes the same path (the same CPU or GPU model and thread count: one torch
  thread per requested CPU).
- The runs that others linearize (``nn``) return their test outputs; each linearization
  (``taylor``, ``entk``) of the same data set and seed is a task that takes them as an argument,
  so Ray starts it once that run has ended, and the rest of the grid runs meanwhile. A reference
  run that failed, or whose task died for good, gives no outputs and no linearization gap, as
  in the local loop.
- Tracking as the driver's: the tasks log to the same store (``mlflow``; made absolute, so it
  must be reachable from every worker: a server, or an SQLite file on a shared filesystem) or
  outbox (``offline``, or when the store fails at the driver; a relative outbox is made
  absolute too); ``off`` logs nothing and the records come back to the driver all the same.
- A run is never in the store twice: each attempt is tagged with the grid run's key and its
  attempt number, and an attempt after the first removes the earlier ones that did not end, or
  returns the record of one that did (:mod:`ntkbench.tracking.attempts`).
- A task whose worker died more than ``max_retries`` times, or that raised before its run was
  tracked (its data missing on that machine, say), is a FAILED record with Ray's reason.
- Ctrl-C or SIGTERM cancels the tasks still pending or running (running runs end KILLED) and
  raises, as the local loop does.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench import signals
from ntkbench.distributed import connect, require_ray
from ntkbench.record import Environment, RunRecord

if TYPE_CHECKING:
    import torch

    from ntkbench.progress import RunProgress
    from ntkbench.runner import GridPlan

CANCEL_GRACE_S = 10.0
"""How long an interrupted grid waits for its cancelled runs to end KILLED."""


@dataclass(frozen=True)
class RayOptions:
    """What each run's task asks of the cluster: ``gpus_per_run`` GPUs when the runs are on CUDA
    (None: 1; a fraction below 1 shares a GPU, as Ray allows), ``cpus_per_run`` CPUs (also its
    torch threads), ``max_retries`` tries after a worker death, and Ray's ``runtime_env`` for
    the tasks (env vars, packages; None: the job's)."""

    gpus_per_run: float | None = None
    cpus_per_run: float = 1.0
    max_retries: int = 3
    runtime_env: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        gpus = self.gpus_per_run
        if gpus is not None and not (0 < gpus <= 1 or (gpus > 1 and float(gpus).is_integer())):
            raise ValueError(f"--ray-gpus-per-run {gpus:g}: expected a fraction in (0, 1] or a whole number of GPUs")
        if not 0 < self.cpus_per_run < math.inf:
            raise ValueError(f"--ray-cpus-per-run {self.cpus_per_run:g}: expected a number of CPUs > 0")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries {self.max_retries!r}: expected an integer >= 0")

    def resources(self, device: str) -> dict[str, float]:
        """Ray's ``num_cpus`` and ``num_gpus`` for one run on ``device`` (cpu or cuda)."""
        gpus = (1.0 if self.gpus_per_run is None else self.gpus_per_run) if device == "cuda" else 0.0
        return {"num_cpus": self.cpus_per_run, "num_gpus": gpus}


@dataclass(frozen=True)
class Tracking:
    """Where a task logs: ``mode`` mlflow or offline, the store ``uri`` and the ``outbox``."""

    mode: str
    uri: str
    outbox: str


@dataclass(frozen=True)
class RunSpec:
    """Everything a task needs to build and run one run of a grid, as plain values."""

    task: str
    task_options: dict[str, object]
    method: str
    method_options: dict[str, object]
    arch: str
    arch_options: dict[str, object]
    seed: int
    device: str
    threads: int
    key: str
    tags: dict[str, str]
    tracking: Tracking | None
    n_train: int
    reference: str | None
    """The method this run linearizes, whose test outputs come as the task's second argument."""
    data_key: tuple
    returns_outputs: bool
    """Whether the run's test outputs go back (a method that others linearize)."""
    git_commit: str
    """The driver's commit: the workers run the driver's code (:func:`_connect`)."""
    kernel_cache: str | None = None
    """The kernel cache's directory, which every worker must see (a shared filesystem)."""


@dataclass(frozen=True)
class TaskResult:
    record: RunRecord
    outputs: torch.Tensor | None
    seconds: float


def check(device: str, options: RayOptions | None) -> None:
    """Ray is installed, ``device`` is auto, cpu or cuda, and no GPUs are asked for CPU runs; else a
    one-line ValueError."""
    require_ray()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, got {device!r}")
    if options is not None and not isinstance(options, RayOptions):
        raise ValueError(f"ray_options must be a RayOptions, got {type(options).__name__}")
    if device == "cpu" and options is not None and options.gpus_per_run is not None:
        _gpus_for_cpu_runs(options, "--device cpu")


def run_plans(plans: list[GridPlan], device: str = "auto", tracking: str = "mlflow", tracking_uri: str | None = None,
              outbox: str | None = None, address: str | None = None, options: RayOptions | None = None,
              nn_outputs: dict[tuple, Any] | None = None, quiet: bool = False,
              progress: RunProgress | None = None) -> list[RunRecord]:
    """Every run of ``plans`` as a Ray task on the cluster at ``address``; their records in the
    plans' grid order (module docstring). ``device`` ``auto`` is cuda when the cluster has a GPU.
    ``nn_outputs`` (shared across calls, as in :func:`ntkbench.runner.run`) gives the outputs of
    reference runs of earlier calls and receives those of these."""
    from ntkbench.progress import RunProgress

    check(device, options)
    options = options or RayOptions()
    ray = _connect(address)
    device = _cluster_device(ray, device, options, address)
    target = _tracking(tracking, tracking_uri, outbox, {p.datasets[i, s].name for p in plans for i, s, _ in p.runs})
    specs, configs, labels = _specs(plans, device, target, options, uuid.uuid4().hex)
    nn_outputs = {} if nn_outputs is None else nn_outputs
    shown = progress or RunProgress(len(specs), quiet)
    try:
        return _Submitted(ray, specs, options, device, nn_outputs).gather(configs, labels, nn_outputs, shown)
    finally:
        if progress is None:
            shown.close()


def _connect(address: str | None):
    """Ray, connected as :func:`~ntkbench.distributed.connect` does. A connection made here
    ships this process's ntkbench to the workers (Ray's ``py_modules``), so that they run the
    driver's code whatever the cluster has installed; an existing connection is kept as it is.
    Ray's INFO lines are left out. The signal handlers that ``ray.init`` replaces (SIGTERM) are put back: Ctrl-C and SIGTERM
    still stop the grid at a safe point (:mod:`ntkbench.signals`)."""
    import logging
    import signal
    import threading

    import ntkbench

    ray = require_ray()
    if ray.is_initialized():
        return ray
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in signals.SIGNALS} if main else {}
    try:
        return connect(address, runtime_env={"py_modules": [str(Path(ntkbench.__file__).parent)]},
                       logging_level=logging.WARNING)  # not Ray's INFO lines about starting and packaging
    finally:
        for number, handler in handlers.items():
            if signal.getsignal(number) is not handler and handler is not None:
                signal.signal(number, handler)


def _cluster_device(ray, device: str, options: RayOptions, address: str | None) -> str:
    """``device`` with auto resolved, checked against the cluster's largest node: a request no
    node can meet would wait forever."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
    if options.gpus_per_run is not None and device == "auto" and not gpus:
        _gpus_for_cpu_runs(options, f"no node of {where} has a GPU")
    device = ("cuda" if gpus > 0 else "cpu") if device == "auto" else device
    needed = options.resources(device)
    if needed["num_gpus"] > gpus:
        raise ValueError(f"each run asks for {needed['num_gpus']:g} GPU(s) but no node of {where} has that many "
                         f"(at most {gpus:g}); use --device cpu or a smaller --ray-gpus-per-run")
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if needed["num_cpus"] > cpus:
        raise ValueError(f"each run asks for {needed['num_cpus']:g} CPU(s) but no node of {where} has that many "
                         f"(at most {cpus:g}); use a smaller --ray-cpus-per-run")
    return device


def _gpus_for_cpu_runs(options: RayOptions, why: str) -> None:
    raise ValueError(f"--ray-gpus-per-run {options.gpus_per_run:g} is for runs on CUDA, but these run on the CPU "
                     f"({why}); leave it out, or use --device cuda on a cluster with GPUs")


def _tracking(mode: str, uri: str | None, outbox: str | None, experiments: set[str]) -> Tracking | None:
    """Where the tasks log. The driver opens the store first (its schema is made once, and its
    experiments are created before the tasks race to), as the local loop's Tracker would, with
    the same warning and fallback to the outbox when it fails."""
    if mode == "off":
        return None
    from ntkbench.tracking import Tracker, store

    tracker = Tracker(uri, mode, outbox)
    if tracker.client is not None:
        for name in sorted(experiments):
            store._experiment_id(tracker.client, name)
    path = _absolute_sqlite(tracker.uri)
    return Tracking("mlflow" if tracker.client is not None else "offline", path, str(tracker.outbox.resolve()))


def _absolute_sqlite(uri: str) -> str:
    """An ``sqlite:///relative/path`` made absolute (workers may start elsewhere); else ``uri``."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):].startswith(("/", ":memory:")) or uri == prefix:
        return uri
    path, sep, query = uri[len(prefix):].partition("?")
    return f"{prefix}{Path(path).resolve()}{sep}{query}"


def _specs(plans: list[GridPlan], device: str, target: Tracking | None, options: RayOptions,
           grid_id: str) -> tuple[list[RunSpec], list, list[str]]:
    """The runs of ``plans`` in grid order: their specs, configs and progress labels."""
    from ntkbench import methods as method_lib
    from ntkbench.runner import configured, data_key
    from ntkbench.tracking.attempts import grid_key
    from ntkbench.tracking.environment import git_commit

    references = {method_lib.linearizes(m) for m in method_lib.METHODS.list()} - {None}
    specs, configs, labels = [], [], []
    for plan in plans:
        for i, seed, name in plan.runs:
            data = plan.datasets[i, seed]
            _, config = configured(data, name, seed, plan.groups[name], plan.network, plan.arch, plan.arch_options)
            n_train = len(data.train[0])
            specs.append(RunSpec(
                task=plan.task, task_options={"seed": seed, **plan.groups["task"], **plan.sizes[i]}, method=name,
                method_options=dict(plan.groups[name]), arch=plan.arch, arch_options=dict(plan.arch_options),
                seed=seed, device=device, threads=max(1, int(options.cpus_per_run)),
                key=grid_key(grid_id, config.fingerprint, seed, n_train), tags=dict(plan.tags or {}),
                tracking=target, n_train=n_train, reference=method_lib.linearizes(name),
                data_key=data_key(data, plan.arch, plan.arch_options, seed), returns_outputs=name in references,
                git_commit=git_commit(), kernel_cache=str(plan.kernel_cache) if plan.kernel_cache else None))
            configs.append(config)
            labels.append(plan.label(i, seed, name))
    return specs, configs, labels


class _Submitted:
    """The grid's tasks on the cluster: submitted in grid order, gathered as they end."""

    def __init__(self, ray, specs: list[RunSpec], options: RayOptions, device: str,
                 nn_outputs: dict[tuple, Any]) -> None:
        """One task per spec; a linearization takes its reference run's task (of this grid) as an
        argument, so that Ray starts it once that one has ended, or the outputs of an earlier call."""
        self.ray, self.specs, self.max_retries = ray, specs, options.max_retries
        env = {"runtime_env": options.runtime_env} if options.runtime_env else {}
        self.task = ray.remote(_run_task).options(max_retries=options.max_retries, **options.resources(device), **env)
        self.refs, self.depends = [], {}
        producers: dict[tuple, int] = {}
        for index, spec in enumerate(specs):
            key = (spec.reference, *spec.data_key)
            reference = None
            if spec.reference and key in producers:
                self.depends[index] = producers[key]
                reference = self.refs[producers[key]]
            elif spec.reference:
                reference = nn_outputs.get(key)
            self.refs.append(self.task.remote(spec, reference))
            if spec.returns_outputs:
                producers[(spec.method, *spec.data_key)] = index

    def gather(self, configs: list, labels: list[str], nn_outputs: dict[tuple, Any],
               shown: RunProgress) -> list[RunRecord]:
        """The records in grid order, each shown as it ends; on an interrupt the tasks left are
        cancelled (their runs end KILLED) before it is raised again."""
        ray = self.ray
        records: list[RunRecord | None] = [None] * len(self.refs)
        waiting = {ref: index for index, ref in enumerate(self.refs)}
        try:
            while waiting:
                signals.check()
                done, _ = ray.wait(list(waiting), num_returns=1, timeout=0.5)
                for ref in done:
                    index = waiting.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        if self._reference_lost(index):  # run it as the local loop would: without the gap
                            del self.depends[index]
                            waiting[self.task.remote(self.specs[index], None)] = index
                            continue
                        result = self._failed(e, index, configs[index])
                    records[index] = result.record
                    if result.outputs is not None:
                        nn_outputs[(self.specs[index].method, *self.specs[index].data_key)] = result.outputs
                    shown.start(labels[index])
                    shown.finish(result.record, result.seconds)
        except KeyboardInterrupt:
            for ref in waiting:
                ray.cancel(ref)
            ray.wait(list(waiting), num_returns=len(waiting), timeout=CANCEL_GRACE_S)
            raise
        return records

    def _reference_lost(self, index: int) -> bool:
        """Whether run ``index`` takes the outputs of a task of this grid that failed for good
        (then Ray failed this one without running it)."""
        if index not in self.depends:
            return False
        try:
            self.ray.get(self.refs[self.depends[index]], timeout=0)
        except self.ray.exceptions.GetTimeoutError:
            return False
        except self.ray.exceptions.RayError:
            return True
        return False

    def _failed(self, error: Exception, index: int, config) -> TaskResult:
        """A FAILED record with Ray's reason, for a task that died on every try or raised."""
        spec, retries = self.specs[index], self.max_retries
        if isinstance(error, self.ray.exceptions.WorkerCrashedError):
            reason = f"its worker died on each of {1 + retries} tries (max_retries {retries})"
        else:
            cause = getattr(error, "cause", None) or error
            reason = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:300]}"
        environment = Environment.from_json({"device": spec.device})
        return TaskResult(RunRecord(config, spec.seed, spec.n_train, "FAILED", environment,
                                    error=f"the run's Ray task failed: {reason}"), None, 0.0)


_trackers: dict[Tracking, Any] = {}
"""The worker process's trackers, one per store (a worker runs many tasks)."""


def _run_task(spec: RunSpec, reference: TaskResult | torch.Tensor | None) -> TaskResult:
    """One run, in a Ray worker: data, method and tracker built here, then the local loop's
    :func:`~ntkbench.runner._grid_run` under the attempt's tags. ``reference`` is the result of
    the run it linearizes (or its test outputs, or None)."""
    import torch

    from ntkbench import arch as arch_lib
    from ntkbench import tasks as task_lib
    from ntkbench.runner import _grid_run, resolve_device
    from ntkbench.tracking.attempts import ATTEMPT_TAG, GRID_KEY_TAG, settle
    from ntkbench.tracking.environment import environment

    started = time.perf_counter()
    reference = reference.outputs if isinstance(reference, TaskResult) else reference
    torch.set_num_threads(spec.threads)
    dev = resolve_device(spec.device)
    network = arch_lib.get(spec.arch, **spec.arch_options)
    data = task_lib.get(spec.task, **spec.task_options)
    tracker = _tracker(spec.tracking)
    attempt = _attempt_number()
    if tracker is not None and attempt != 0:  # a retry (or unknown): earlier attempts first
        try:
            earlier, found = settle(tracker, data.name, spec.key)
        except Exception as e:  # whatever the store raised: the run goes on into the outbox, as in the local loop
            tracker.store_failed(e)
            earlier, found = settle(tracker, data.name, spec.key)
        if earlier is not None:
            return TaskResult(earlier, None, time.perf_counter() - started)
        attempt = found if attempt is None else attempt
    tags = {**spec.tags, GRID_KEY_TAG: spec.key, ATTEMPT_TAG: str(attempt or 0)}
    outputs = {} if reference is None else {(spec.reference, *spec.data_key): reference}
    record = _grid_run(data, spec.method, spec.seed, {spec.method: spec.method_options}, network, spec.arch,
                       spec.arch_options, replace(environment(dev), git_commit=spec.git_commit), dev, tracker,
                       outputs, tags, Path(spec.kernel_cache) if spec.kernel_cache else None)
    mine = outputs.get((spec.method, *spec.data_key)) if spec.returns_outputs else None
    return TaskResult(record, mine, time.perf_counter() - started)


def _tracker(tracking: Tracking | None):
    if tracking is None:
        return None
    if tracking not in _trackers:
        from ntkbench.tracking import Tracker

        _trackers[tracking] = Tracker(tracking.uri, tracking.mode, tracking.outbox)
    return _trackers[tracking]


def _attempt_number() -> int | None:
    """Which try of its task this is (0 the first), from Ray's worker; None where this Ray
    does not tell (then every task looks for earlier attempts)."""
    ray = require_ray()
    try:
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # a private API: a Ray without it
        return None
