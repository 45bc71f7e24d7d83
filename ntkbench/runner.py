"""The runner: builds task, architecture and methods from names, then fits and evaluates each
(method, seed) with timing, memory, device placement and MLflow tracking. Methods know none of it."""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import psutil
import torch
from tqdm.auto import tqdm

from ntkbench import arch as arch_lib
from ntkbench import methods as method_lib
from ntkbench import tasks as task_lib
from ntkbench.methods.base import centered_one_hot


@dataclass
class RunResult:
    task: str
    method: str
    arch: str
    seed: int
    n_train: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def split_options(options: dict[str, object], method_names: list[str]) -> dict[str, dict[str, object]]:
    """{"task.n_train": 100, "nn.lr": 0.1} → {"task": {"n_train": 100}, "nn": {"lr": 0.1}}.
    Options of registered methods that are not run are accepted and unused."""
    groups: dict[str, dict[str, object]] = {"task": {}, "arch": {}, **{m: {} for m in method_names}}
    for key, value in options.items():
        prefix, _, name = key.partition(".")
        if prefix not in groups or not name:
            raise ValueError(f"option {key!r} must be PREFIX.NAME with PREFIX one of {', '.join(groups)}")
        groups[prefix][name] = value
    return groups


def run(task: str = "digits", method: str = "all", arch: str = "mlp", seeds: tuple[int, ...] = (0,),
        options: dict[str, object] | None = None, device: str = "auto", tracking_uri: str | None = None,
        track: bool = True, n_trains: tuple[int, ...] = (), data_root: str | None = None,
        download: bool = False, tags: dict[str, str] | None = None,
        nn_outputs: dict[tuple, torch.Tensor] | None = None, tracking: str = "mlflow",
        outbox: str | None = None) -> list[RunResult]:
    """Run every (n_train, seed, method) on ``task`` with one architecture; one result per run.

    ``method`` is a name, a comma-separated list or ``all``. ``options`` are ``task.X``,
    ``arch.X`` or ``<method>.X`` settings. ``n_trains`` sweeps the task's n_train (learning
    curves); ``data_root`` goes to tasks that read files, and ``download`` lets those that can
    fetch missing files. ``tracking`` is ``mlflow`` (live to the store ``tracking_uri``; if the
    store fails, the runs go on into the outbox), ``offline`` (records in ``outbox``, default
    $NTKBENCH_OUTBOX or ./mlruns-outbox, for ``ntkbench sync``; no MLflow needed) or ``off``,
    as is ``track=False``. ``tags`` are added to every MLflow run. ``nn_outputs`` holds the test
    outputs of ``nn`` runs by data set (task, seed and task params); pass the same dict to
    several calls (the study does) so that ``taylor`` and ``entk`` runs of a later call get
    their linearization gap against an ``nn`` run of an earlier one. Every name and option,
    and the data, is checked before the first run; a method that raises is recorded as FAILED
    and the grid goes on.
    """
    names = method_lib.METHODS.list() if method == "all" else method.split(",")
    for name in names:
        method_lib.METHODS.get(name)
    groups = split_options(dict(options or {}), method_lib.METHODS.list())
    dev = resolve_device(device)
    network = arch_lib.get(arch, **groups["arch"])
    arch_params = {**_defaults(arch_lib.ARCHS.get(arch)), **groups["arch"]}
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
    for name in names:
        method_lib.get(name, network, 0, **dict(groups[name]))

    tracker = None
    if track and tracking != "off":
        from ntkbench.tracking import Tracker

        tracker = Tracker(tracking_uri, tracking, outbox)
    results = []
    # nn first, so that the linearizations of the same (n_train, seed) can be compared with it.
    names = sorted(names, key=lambda name: name != "nn")
    nn_outputs = {} if nn_outputs is None else nn_outputs
    arch_key = json.dumps(arch_params, sort_keys=True, default=str)
    grid = [(i, seed, name) for i in range(len(sizes)) for seed in seeds for name in names]
    for i, seed, name in tqdm(grid, desc="runs", disable=not sys.stderr.isatty()):
        data = datasets[i, seed]
        model = method_lib.get(name, network, seed, **dict(groups[name]))
        key = (data.name, arch, arch_key, json.dumps(data.params, sort_keys=True, default=str))
        reference = nn_outputs.get(key) if name in LINEARIZATIONS else None
        result, scores = _run_one(data, name, model, arch, arch_params, network, dev, tracker, reference, tags)
        if name == "nn" and scores is not None:
            nn_outputs[key] = scores.cpu()
        results.append(result)
    return results


def _defaults(builder) -> dict[str, object]:
    return {k: p.default for k, p in inspect.signature(builder).parameters.items()}


def _run_one(data, name, model, arch_name, arch_params, network, dev, tracker, nn_scores: torch.Tensor | None,
             tags: dict[str, str] | None) -> tuple[RunResult, torch.Tensor | None]:
    x, y = (t.to(dev) for t in data.train)
    x_test, y_test = (t.to(dev) for t in data.test)
    n_train = len(x)
    params = {"task": data.name, "method": name, "arch": arch_name, "seed": model.seed, "n_train": n_train,
              "device": dev.type, **{f"task.{k}": v for k, v in data.params.items()},
              **{f"arch.{k}": v for k, v in arch_params.items()},
              **{f"method.{k}": v for k, v in method_lib.options_of(model).items()}}
    result = RunResult(data.name, name, arch_name, model.seed, n_train, "FINISHED")
    if tracker is None:
        scope = nullcontext(None)
    else:
        from ntkbench.tracking import environment_tags

        config = {**params, "arch_layers": repr(network)}
        scope = tracker.run(data.name, f"{name}-{arch_name}-s{model.seed}-n{n_train}", params, {**environment_tags(dev), **(tags or {})}, config)
    try:
        with scope as tracked:
            result.run_id = tracked.run_id if tracked else None
            ctx = method_lib.RunContext(*((tracked.log_metric, tracked.log_param, tracked.log_dict) if tracked else ()))
            evaluation, scores = _fit_and_evaluate(model, ctx, x, y, x_test, y_test, data.num_classes, network, dev)
            if nn_scores is not None:
                evaluation.update(linearization_gap(scores, nn_scores.to(scores.device)))
            if tracked:  # the method's own metrics were logged as they came
                tracked.log_metrics(evaluation)
            result.metrics = {**ctx.metrics, **evaluation}
    except Exception as e:  # recorded, and the grid goes on; the MLflow run is already FAILED
        result.status, result.error = "FAILED", f"{type(e).__name__}: {e}"
        print(f"ntkbench: {name} (seed {model.seed}) failed: {result.error}", file=sys.stderr)
        return result, None
    return result, scores


LINEARIZATIONS = ("taylor", "entk")


def linearization_gap(scores: torch.Tensor, nn_scores: torch.Tensor) -> dict[str, float]:
    """How far a linearization's test outputs are from the trained network's (same task, seed
    and n_train): ``linearization_gap_rms`` = √(mean_{i,c} (f_lin − f_nn)²) and
    ``linearization_label_agreement``, the fraction of test inputs given the same label."""
    return {
        "linearization_gap_rms": float((scores - nn_scores).square().mean().sqrt()),
        "linearization_label_agreement": float((scores.argmax(1) == nn_scores.argmax(1)).float().mean()),
    }


def _fit_and_evaluate(model, ctx, x, y, x_test, y_test, num_classes, network, dev) -> tuple[dict[str, float], torch.Tensor]:
    with PeakMemory(dev) as memory:
        start = _now(dev)
        predictor = model.fit(x, y, num_classes, ctx)
        fitted = _now(dev)
        test_scores = predictor.predict(x_test)
        predicted = _now(dev)
        train_scores = predictor.predict(x)
        done = _now(dev)
    targets = centered_one_hot(y_test, num_classes, test_scores.dtype)
    n_params = sum(p.numel() for p in network.module(tuple(x.shape[1:]), num_classes).parameters())
    return {
        "test_accuracy": float((test_scores.argmax(1) == y_test).float().mean()),
        "test_mse": float((test_scores - targets).square().sum(1).mean()),
        "train_accuracy": float((train_scores.argmax(1) == y).float().mean()),
        "time_fit_s": fitted - start,
        "time_predict_s": predicted - fitted,
        "time_total_s": done - start,
        "peak_memory_mb": memory.peak_mb,
        "n_train": float(ctx.metrics.get("n_train_used", len(x))),
        "n_params": float(n_params),
    }, test_scores.detach()


def _now(dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()


class PeakMemory:
    """Peak memory during a block: allocated CUDA memory on a GPU; on the CPU, the process's
    resident set size, sampled every 5 ms by a background thread."""

    def __init__(self, dev: torch.device) -> None:
        self.dev, self.peak_mb = dev, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        else:
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


def summary(results: list[RunResult]):
    """A pandas table per (method, n_train): test accuracy mean ± std over seeds, mean times."""
    import pandas as pd

    rows = [{"method": r.method, "status": r.status, **r.metrics} for r in results]
    frame = pd.DataFrame(rows)
    ok = frame[frame.status == "FINISHED"]
    table = ok.groupby(["method", "n_train"]).agg(
        acc_mean=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"), seeds=("test_accuracy", "size"),
        fit_s=("time_fit_s", "mean"), predict_s=("time_predict_s", "mean"), peak_mb=("peak_memory_mb", "max"))
    failed = frame[frame.status != "FINISHED"].groupby("method").size().rename("failed")
    table = table.reset_index().merge(failed, on="method", how="outer").fillna({"failed": 0})
    return table.sort_values(["n_train", "acc_mean"], ascending=[True, False]).set_index(["method", "n_train"])
