"""The runner: builds task, architecture and methods from names, then fits and evaluates each
(method, seed) with timing, memory, device placement and MLflow tracking. Methods know none of it."""

from __future__ import annotations

import ctypes
import gc
import inspect
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import torch

from ntkbench import signals
from ntkbench import arch as arch_lib
from ntkbench.distributed import EXECUTORS
from ntkbench import methods as method_lib
from ntkbench import tasks as task_lib
from ntkbench.methods.base import NonFiniteError, centered_one_hot
from ntkbench.progress import RunProgress
from ntkbench.record import FINGERPRINT_TAG, RECORD_ARTIFACT, Config, Environment, Evaluation, RunRecord, canonical_json
from ntkbench.tasks.base import identity_options
from ntkbench.tracking.environment import environment

if TYPE_CHECKING:
    from ntkbench.distributed.grid import RayOptions


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def split_options(options: dict[str, object], method_names: list[str]) -> dict[str, dict[str, object]]:
    """{"task.n_train": 100, "nn.lr": 0.1} → {"task": {"n_train": 100}, "nn": {"lr": 0.1}}; every
    registered method has a group, so that options of methods not run are checked too."""
    groups: dict[str, dict[str, object]] = {"task": {}, "arch": {}, **{m: {} for m in method_names}}
    for key, value in options.items():
        prefix, _, name = key.partition(".")
        if prefix not in groups or not name:
            raise ValueError(f"option {key!r} must be PREFIX.NAME with PREFIX one of {', '.join(groups)}")
        groups[prefix][name] = value
    return groups


def method_names(method: str) -> list[str]:
    """``all`` (every registered method) or a comma-separated list of registered names, each
    once; a repeated or unknown name raises."""
    names = method_lib.METHODS.list() if method == "all" else method.split(",")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--method names {', '.join(repeated)} more than once; expected each method once")
    for name in names:
        method_lib.METHODS.get(name)
    # The methods that others linearize run first, so that the linearizations can be compared with them.
    references = {method_lib.linearizes(name) for name in names}
    return sorted(names, key=lambda name: name not in references)


@dataclass(frozen=True)
class GridPlan:
    """A checked grid of runs on one task and architecture, its data sets built: every
    (n_train, seed, method) of :attr:`runs`, in the order the local loop runs them (the methods
    that others linearize first). ``context`` is what progress calls these runs by instead of
    their method (the study's ``iris taylor@5 p=0.5``); ``tags`` go to every run."""

    task: str
    names: tuple[str, ...]
    seeds: tuple[int, ...]
    groups: dict[str, dict[str, object]]
    arch: str
    arch_options: dict[str, object]
    network: object
    sizes: tuple[dict[str, int], ...]
    datasets: dict[tuple[int, int], object]
    tags: dict[str, str] | None = None
    context: str | None = None
    kernel_cache: Path | None = None

    @property
    def runs(self) -> list[tuple[int, int, str]]:
        """(index into ``sizes``, seed, method) of every run, in grid order."""
        return [(i, seed, name) for i in range(len(self.sizes)) for seed in self.seeds for name in self.names]

    def label(self, i: int, seed: int, name: str, context: str | None = None) -> str:
        """What progress calls a run: ``nn seed 0`` (``… n_train 100`` when n_train is swept),
        with ``context`` or :attr:`context` for the method's name."""
        size = f" n_train {self.sizes[i]['n_train']}" if len(self.sizes) > 1 else ""
        return f"{context or self.context or name} seed {seed}{size}"


def run(task: str = "digits", method: str = "all", arch: str = "mlp", seeds: tuple[int, ...] = (0,),
        options: dict[str, object] | None = None, device: str = "auto", tracking_uri: str | None = None,
        track: bool = True, n_trains: tuple[int, ...] = (), data_root: str | None = None,
        download: bool = False, tags: dict[str, str] | None = None,
        nn_outputs: dict[tuple, torch.Tensor] | None = None, tracking: str = "mlflow",
        outbox: str | None = None, quiet: bool = False, progress: RunProgress | None = None,
        executor: str = "local", ray_address: str | None = None,
        ray_options: RayOptions | None = None, kernel_cache: str | Path | None = None,
        kernel_cache_max_gb: float | None = None) -> list[RunRecord]:
    """Run every (n_train, seed, method) on ``task`` with one architecture; one record per run.

    ``method`` is a name, a comma-separated list or ``all``. ``options`` are ``task.X``,
    ``arch.X`` or ``<method>.X`` settings. ``n_trains`` sweeps the task's n_train (learning
    curves); ``data_root`` goes to tasks that read files, and ``download`` lets those that can
    fetch missing files. ``tracking`` is ``mlflow`` (live to the store ``tracking_uri``; if the
    store fails, the runs go on into the outbox), ``offline`` (records in ``outbox``, default
    $NTKBENCH_OUTBOX or ./mlruns-outbox, for ``ntkbench sync``; no MLflow needed) or ``off``,
    as is ``track=False``. ``tags`` are added to every MLflow run. ``nn_outputs`` holds the test
    outputs of reference runs (the methods others linearize) by data set; pass the same dict to
    several calls (the study does) so that linearizations of a later call get their
    linearization gap against a reference run of an earlier one.

    ``executor`` ``local`` (the default) runs the grid in this process, one run after another;
    ``ray`` sends each run as a task to the Ray cluster at ``ray_address`` (None: a new local
    one, or ``$RAY_ADDRESS``), with the resources and retries of ``ray_options``
    (:mod:`ntkbench.distributed.grid`): the same records, in the same order.

    ``kernel_cache`` is the directory of the kernel cache (``ntkbench.arch.cache``; None: the
    kernels are computed in memory), where the ntk and nngp runs find or leave their kernels;
    after the grid, least-recently-used complete entries are evicted down to
    ``kernel_cache_max_gb`` (None: no eviction).

    Progress goes to stderr (:mod:`ntkbench.progress`): a bar over the runs with the current
    run's epochs or kernel tiles on a terminal, else one line per finished run; nothing with
    ``quiet``. ``progress`` counts these runs among more (the study passes its own).

    Everything is checked before the first run, and a bad value raises a one-line ValueError
    with nothing written: names, every option's type and range (options of methods that are not
    run too), repeated methods, ``n_trains`` together with ``task.n_train``, and the data. A run
    that raises, or whose loss or outputs are not finite, is recorded FAILED and the grid goes on.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if kernel_cache_max_gb is not None and not kernel_cache_max_gb >= 0:
        raise ValueError(f"kernel_cache_max_gb must be a number of GB >= 0, got {kernel_cache_max_gb!r}")
    kernel_cache = Path(kernel_cache) if kernel_cache is not None else None
    if executor == "ray":
        from ntkbench.distributed import grid as ray_grid

        ray_grid.check(device, ray_options)  # Ray installed, the device and resources valid: before the data
        plan = prepare(task, method, arch, seeds, options, n_trains, data_root, download, tags,
                       kernel_cache=kernel_cache)
        records = ray_grid.run_plans([plan], device, tracking if track else "off", tracking_uri, outbox, ray_address,
                                     ray_options, nn_outputs, quiet, progress)
        evict(kernel_cache, kernel_cache_max_gb)
        return records
    if ray_address is not None or ray_options is not None:
        raise ValueError("ray_address and ray_options are for executor 'ray'; the local executor runs in this process")
    dev = resolve_device(device)
    plan = prepare(task, method, arch, seeds, options, n_trains, data_root, download, tags, kernel_cache=kernel_cache)
    groups, network, datasets, arch_options = plan.groups, plan.network, plan.datasets, plan.arch_options

    tracker = None
    if track and tracking != "off":
        from ntkbench.tracking import Tracker

        tracker = Tracker(tracking_uri, tracking, outbox)
    env = environment(dev)
    records = []
    nn_outputs = {} if nn_outputs is None else nn_outputs
    grid = plan.runs
    shown = progress or RunProgress(len(grid), quiet)
    try:
        for i, seed, name in grid:
            signals.check()
            shown.start(plan.label(i, seed, name, shown.context))
            records.append(_grid_run(datasets[i, seed], name, seed, groups, network, arch, arch_options, env, dev,
                                     tracker, nn_outputs, tags, kernel_cache))
            shown.finish(records[-1])
        evict(kernel_cache, kernel_cache_max_gb)
    finally:
        if progress is None:
            shown.close()
    return records


def evict(kernel_cache: Path | None, max_gb: float | None) -> None:
    """Evict least-recently-used complete kernels of the cache down to ``max_gb`` (None: none)."""
    if kernel_cache is not None and max_gb is not None:
        from ntkbench.arch.cache import KernelCache

        KernelCache(kernel_cache).evict(max_gb * 2**30)


def prepare(task: str = "digits", method: str = "all", arch: str = "mlp", seeds: tuple[int, ...] = (0,),
            options: dict[str, object] | None = None, n_trains: tuple[int, ...] = (), data_root: str | None = None,
            download: bool = False, tags: dict[str, str] | None = None, context: str | None = None,
            kernel_cache: Path | None = None) -> GridPlan:
    """The checked :class:`GridPlan` of :func:`run`'s arguments, every data set built: a bad
    name, option or data set raises a one-line ValueError before anything runs."""
    names = method_names(method)
    groups = split_options(dict(options or {}), method_lib.METHODS.list())
    if n_trains and "n_train" in groups["task"]:
        raise ValueError(f"--n-train {','.join(map(str, n_trains))} and task.n_train={groups['task']['n_train']} "
                         "both set n_train; give one of them")
    arch_options = arch_lib.resolve(arch, **groups["arch"])
    network = arch_lib.get(arch, **arch_options)
    for name in method_lib.METHODS.list():  # the options of every method named, run or not
        if name in names or groups[name]:
            method_lib.get(name, network, 0, **dict(groups[name]))
    accepted = inspect.signature(task_lib.TASKS.get(task)).parameters
    if data_root is not None and "data_root" in accepted:
        groups["task"]["data_root"] = str(data_root)
    if download:
        if "download" not in accepted:
            raise ValueError(f"task {task!r} has nothing to download; --download is for tasks that read files")
        groups["task"]["download"] = True
    sizes = [{"n_train": n} for n in n_trains] or [{}]
    # Build every task before the first run: bad options or missing data fail fast, with no run.
    datasets = {(i, seed): task_lib.get(task, **{"seed": seed, **groups["task"], **size})
                for i, size in enumerate(sizes) for seed in seeds}
    for name in names:  # options that depend on the inputs (a kernel method the network needs)
        method_lib.resolved(method_lib.get(name, network, 0, **dict(groups[name])),
                            next(iter(datasets.values())).input_shape)
    return GridPlan(task, tuple(names), tuple(seeds), groups, arch, arch_options, network, tuple(sizes), datasets,
                    tags, context, kernel_cache)


def _grid_run(data, name: str, seed: int, groups, network, arch: str, arch_options, env: Environment, dev, tracker,
              nn_outputs: dict[tuple, torch.Tensor], tags: dict[str, str] | None,
              kernel_cache: Path | None = None) -> RunRecord:
    """One (data set, method, seed) of the grid; a run that others linearize leaves its test
    outputs in ``nn_outputs``, and one that linearizes is compared with them."""
    model, config = configured(data, name, seed, groups[name], network, arch, arch_options)
    key = data_key(data, arch, arch_options, seed)
    reference = method_lib.linearizes(name)
    result, scores = _run_one(data, model, config, env, network, dev, tracker,
                              nn_outputs.get((reference, *key)) if reference else None, tags, kernel_cache)
    if scores is not None:
        nn_outputs[(name, *key)] = scores.cpu()
    return result


def configured(data, name: str, seed: int, options: dict[str, object], network, arch: str,
               arch_options: dict[str, object]) -> tuple[object, Config]:
    """Method ``name`` built with ``options`` and resolved for ``data``, and the run's :class:`Config`."""
    model = method_lib.resolved(method_lib.get(name, network, seed, **dict(options)), data.input_shape)
    return model, Config(data.name, name, arch, identity_options(data.params), _options(model), arch_options)


def data_key(data, arch: str, arch_options: dict[str, object], seed: int) -> tuple:
    """What a linearization and the run it linearizes share (data set, architecture, seed): the
    key of ``nn_outputs`` after the method's name."""
    return (data.name, arch, canonical_json(arch_options), canonical_json(identity_options(data.params)), seed)


def _options(model) -> dict[str, object]:
    """A method's options without the seed (its ``Config.method_options``)."""
    return {k: v for k, v in method_lib.options_of(model).items() if k != "seed"}


def _run_one(data, model, config: Config, env: Environment, network, dev, tracker, reference: torch.Tensor | None,
             tags: dict[str, str] | None, kernel_cache: Path | None = None) -> tuple[RunRecord, torch.Tensor | None]:
    """Fit and evaluate one run inside its tracked scope; returns its record and test outputs
    (None unless it FINISHED). The record goes to MLflow as ``record.json``. The method gets
    the ``kernel_cache`` directory through its ``RunContext``."""
    x, y = (t.to(dev) for t in data.train)
    x_test, y_test = (t.to(dev) for t in data.test)
    seed = model.seed
    params = {"task": config.task, "method": config.method, "arch": config.arch, "seed": seed, "n_train": len(x),
              "device": dev.type, **{f"task.{k}": v for k, v in config.task_options.items()},
              **{f"arch.{k}": v for k, v in config.arch_options.items()},
              **{f"method.{k}": v for k, v in config.method_options.items()}}
    ctx = method_lib.RunContext(kernel_cache=kernel_cache)
    record = RunRecord(config, seed, len(x), "FAILED", env)
    scope, tracked = nullcontext(None), None
    if tracker is not None:
        scope = tracker.run(config.task, f"{config.method}-{config.arch}-s{seed}-n{len(x)}", params,
                            {**env.to_json(), FINGERPRINT_TAG: config.fingerprint, **(tags or {})})
    try:
        with scope as tracked:
            if tracked:
                ctx = method_lib.RunContext(tracked.log_metric, tracked.log_param, tracked.log_dict,
                                            kernel_cache=kernel_cache)
            try:
                evaluation, scores = _fit_and_evaluate(model, ctx, x, y, x_test, y_test, data.num_classes, network, dev)
                gap = linearization_gap(scores, reference.to(scores.device)) if reference is not None else {}
            except Exception as e:
                record = _ended(record, ctx, tracked, error=f"{type(e).__name__}: {e}")
                raise
            n_used = int(ctx.metrics.get("n_train_used", len(x)))
            if tracked:  # the method's own metrics were logged as they came
                tracked.log_metrics({**evaluation.to_json(), "n_train": n_used, **gap})
            record = _ended(replace(record, n_train=n_used, evaluation=evaluation), ctx, tracked, gap)
    except Exception as e:  # recorded, and the grid goes on; the MLflow run is already FAILED
        record = replace(record, status="FAILED", error=record.error or f"{type(e).__name__}: {e}")
        scores = None
    storage = "" if tracked is None else "outbox" if tracked.client is None else "mlflow"
    return replace(record, storage=storage), scores


def _ended(record: RunRecord, ctx, tracked, gap: dict[str, float] | None = None, error: str | None = None) -> RunRecord:
    """``record`` completed with the method's reports, its run id and end, FINISHED unless
    ``error``; logged as ``record.json`` to the tracked run, if any."""
    record = replace(record, status="FAILED" if error else "FINISHED", error=error,
                     metrics={**ctx.metrics, **(gap or {})}, params=dict(ctx.params),
                     run_id=tracked.run_id if tracked else None,
                     finished_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    if tracked:
        tracked.log_dict(record.to_json(), RECORD_ARTIFACT)
    return record


def linearization_gap(scores: torch.Tensor, nn_scores: torch.Tensor) -> dict[str, float]:
    """How far a linearization's test outputs are from the trained network's (same task, seed
    and n_train): ``linearization_gap_rms`` = √(mean_{i,c} (f_lin − f_nn)²) and
    ``linearization_label_agreement``, the fraction of test inputs given the same label."""
    return {
        "linearization_gap_rms": float((scores - nn_scores).square().mean().sqrt()),
        "linearization_label_agreement": float((scores.argmax(1) == nn_scores.argmax(1)).float().mean()),
    }


def _fit_and_evaluate(model, ctx, x, y, x_test, y_test, num_classes, network, dev) -> tuple[Evaluation, torch.Tensor]:
    """Fit, predict the test set (together: ``time_total_s``), then the training set apart
    (``time_train_eval_s``). Outputs that are not all finite raise :class:`NonFiniteError`: an
    argmax over NaN would still give an "accuracy"."""
    with PeakMemory(dev) as memory:
        start = _now(dev)
        predictor = model.fit(x, y, num_classes, ctx)
        fitted = _now(dev)
        test_scores = predictor.predict(x_test)
        predicted = _now(dev)
    train_scores = predictor.predict(x)
    train_evaluated = _now(dev)
    for split, scores in (("test", test_scores), ("train", train_scores)):
        if not torch.isfinite(scores).all():
            bad = int((~torch.isfinite(scores)).any(1).sum())
            raise NonFiniteError(f"{bad} of {len(scores)} {split} outputs are NaN or infinite; expected finite "
                                 "outputs (a diverged fit)")
    targets = centered_one_hot(y_test, num_classes, test_scores.dtype)
    n_params = sum(p.numel() for p in network.module(tuple(x.shape[1:]), num_classes).parameters())
    return Evaluation(
        test_accuracy=float((test_scores.argmax(1) == y_test).float().mean()),
        test_mse=float((test_scores - targets).square().sum(1).mean()),
        train_accuracy=float((train_scores.argmax(1) == y).float().mean()),
        time_fit_s=fitted - start, time_predict_s=predicted - fitted, time_total_s=predicted - start,
        time_train_eval_s=train_evaluated - predicted,
        peak_memory_mb=memory.added_mb, process_peak_memory_mb=memory.peak_mb, n_params=n_params,
    ), test_scores.detach()


def _now(dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()


class PeakMemory:
    """Peak memory during a block, absolute (``peak_mb``) and above the level at its start
    (``added_mb``): allocated CUDA memory on a GPU; on the CPU, the process's resident set size,
    sampled every 5 ms by a background thread. On the CPU the absolute peak includes torch
    itself (about 1 GB); ``added_mb`` is what the block added.

    On the CPU the start level is taken after a garbage collection and glibc's ``malloc_trim``,
    which hands the memory that earlier runs freed back to the system, so that a run reusing an
    earlier run's freed heap is not shown as adding nothing. The first run of a process also
    counts what torch allocates lazily on first use (on digits, ~150 MB)."""

    def __init__(self, dev: torch.device) -> None:
        self.dev, self.peak_mb, self.start_mb = dev, 0.0, 0.0
        self._stop = threading.Event()

    @property
    def added_mb(self) -> float:
        return max(self.peak_mb - self.start_mb, 0.0)

    def __enter__(self) -> PeakMemory:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.start_mb = torch.cuda.memory_allocated(self.dev) / 2**20
        else:
            gc.collect()
            _malloc_trim()
            self.start_mb = psutil.Process().memory_info().rss / 2**20
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            if self._stop.wait(0.005):
                return

    def __exit__(self, *exc) -> None:
        if self.dev.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.dev) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing happens)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def summary(records: list[RunRecord]):
    """A pandas table per (method, n_train) of the FINISHED runs: test accuracy mean ± std over
    seeds (std 0 for one seed), mean times, peak added memory, and the count of runs that did not
    finish per method; ``n_train`` and ``seeds`` are integers (missing for a method with no
    finished run). Empty (with those columns) when nothing finished."""
    import pandas as pd

    columns = ["acc_mean", "acc_std", "seeds", "fit_s", "predict_s", "peak_mb", "failed"]
    done = [{"method": r.method, "n_train": r.n_train, **r.evaluation.to_json()} for r in records if r.evaluation]
    failed = pd.Series([r.method for r in records if r.evaluation is None], dtype=object).value_counts()
    if not done:
        table = pd.DataFrame({"method": failed.index, "n_train": pd.NA, "failed": failed.values})
        table = table.reindex(columns=["method", "n_train", *columns]).astype({"n_train": "Int64", "seeds": "Int64"})
        return table.set_index(["method", "n_train"])
    table = pd.DataFrame(done).groupby(["method", "n_train"]).agg(
        acc_mean=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"), seeds=("test_accuracy", "size"),
        fit_s=("time_fit_s", "mean"), predict_s=("time_predict_s", "mean"), peak_mb=("peak_memory_mb", "max"))
    table["acc_std"] = table["acc_std"].mask(table["seeds"] == 1, 0.0)  # one seed: no spread, not NaN
    table = table.reset_index().merge(failed.rename("failed"), left_on="method", right_index=True, how="outer")
    table = table.fillna({"failed": 0}).astype({"failed": int, "n_train": "Int64", "seeds": "Int64"})
    return table.sort_values(["n_train", "acc_mean"], ascending=[True, False]).set_index(["method", "n_train"])


def summary_text(records: list[RunRecord]) -> str:
    """:func:`summary` as the CLI prints it, in the units of :mod:`ntkbench.format`: accuracy in
    percent (± std only for several seeds), times in ms/s/min/h, memory in MB/GB, counts as
    integers; a method with no finished run shows ``—`` for its figures."""
    import pandas as pd

    from ntkbench import format as fmt

    def value(v):  # type: ignore[no-untyped-def]
        return None if pd.isna(v) else v

    lines = [{"method": method, "n_train": fmt.integer(value(n_train)),
              "test accuracy, %": fmt.accuracy(value(r.acc_mean), value(r.acc_std), value(r.seeds) or 0),
              "seeds": fmt.integer(value(r.seeds)), "fit time": fmt.seconds(value(r.fit_s)),
              "predict time": fmt.seconds(value(r.predict_s)), "peak memory": fmt.megabytes(value(r.peak_mb)),
              "failed": fmt.integer(r.failed)}
             for (method, n_train), r in summary(records).iterrows()]
    if not lines:
        return "no runs"
    columns = list(lines[0])
    widths = [max(len(c), *(len(line[c]) for line in lines)) for c in columns]

    def join(cells: list[str]) -> str:  # the method left-aligned, the figures right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([join(columns), *(join([line[c] for c in columns]) for line in lines)])
