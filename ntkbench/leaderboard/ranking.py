"""The leaderboard's rows: which results are averaged together, how rows are labelled, ranked,
and which lie on the Pareto front.

Identity. A row is every seed of one (task, method, config fingerprint, n_train used, device
class, source), where the device class is ``Environment.device_name`` and the source one of
``local`` (a run of the MLflow store), ``self-reported`` (a committed entry) or ``verified`` (an
entry whose checksum the maintainers list). So runs that differ in any option, local runs and
committed entries, and times from different device classes are never averaged together.

Counting. A local run whose run id is in a committed entry counts once, through the entry
(:func:`combine`). Within a row each seed counts once: of several runs of one seed the latest
finished is kept (ties: the larger run id), and ``runs_per_seed`` says how many there were.

Rules, so that the board reads the same everywhere:

- ``acc_mean`` is the mean test accuracy over the row's seeds, ``acc_std`` the sample standard
  deviation (0 for one seed); times are means, ``peak_memory_mb`` (the memory a run added) and
  ``n_params`` maxima. Results are sorted by seed before any sum, so the input order is moot.
- ``commit``: the common commit, or ``"mixed"`` when the seeds come from several (all of them
  are in ``commits``).
- Label: the architecture's name followed by the options (``depth=1``, ``nn.lr=0.1``,
  ``task.label_noise=0.5``) whose values differ between the configs of the same task, method and
  architecture; ``task.n_train`` is left out, as the n_train column shows it. A kernel computed
  other than in closed form is always named (``ntk.kernel_method=monte_carlo``, with the
  samples and width of a Monte Carlo estimate).
- Rank, per task: higher ``acc_mean`` first (compared at 12 decimals, so means of equal
  accuracies tie despite float rounding), then lower ``time_total_s``, then method, label,
  n_train, source, device and fingerprint; ranks are 1, 2, 3, ... with no shared places. A NaN
  accuracy or time ranks last.
- Pareto front, per task: a row is on it when no other row of the task has a ``time_total_s`` at
  most as large and an ``acc_mean`` at least as large, one of the two strictly (rows with a NaN
  or infinite accuracy or time are left out of the front).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ntkbench.record import Config, RunRecord, encode_param

__all__ = ["LOCAL", "SELF_REPORTED", "VERIFIED", "Result", "Row", "combine", "aggregate", "pareto_front",
           "option_items"]

LOCAL, SELF_REPORTED, VERIFIED = "local", "self-reported", "verified"
_TIE_DECIMALS = 12


@dataclass(frozen=True)
class Result:
    """One FINISHED run (``record.evaluation`` is set) as the leaderboard counts it.

    ``source`` is ``local``, ``self-reported`` or ``verified``; ``verified_by`` says who
    reproduced a verified entry and when ("" otherwise)."""

    record: RunRecord
    source: str
    verified_by: str = ""

    @property
    def key(self) -> tuple[str, str, str, int, str, str]:
        """The row this result belongs to."""
        r = self.record
        return (r.task, r.method, r.fingerprint, r.n_train, r.environment.device_name, self.source)


@dataclass(frozen=True)
class Row:
    """One leaderboard row: the seeds of one (task, method, fingerprint, n_train, device, source).

    ``accuracies``, ``seed_ids`` and ``runs_per_seed`` are in seed order, one per distinct seed;
    ``commits`` lists the distinct full commits; ``finished_at`` is the latest kept result's.
    """

    task: str
    method: str
    arch: str
    label: str
    config: Config
    n_train: int
    source: str
    device: str
    acc_mean: float
    acc_std: float
    time_fit_s: float
    time_predict_s: float
    time_total_s: float
    peak_memory_mb: float
    n_params: int
    commit: str
    commits: tuple[str, ...]
    accuracies: tuple[float, ...]
    seed_ids: tuple[int, ...]
    runs_per_seed: tuple[int, ...]
    finished_at: str
    verified_by: str = ""
    rank: int = 0
    pareto: bool = False

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    @property
    def seeds(self) -> int:
        return len(self.seed_ids)


def combine(local: Iterable[RunRecord], entries: Iterable[Result]) -> list[Result]:
    """The entries' results, then the local FINISHED runs whose run id no entry holds (an
    exported run counts once, through its entry), as ``local`` results."""
    entries = list(entries)
    exported = {r.record.run_id for r in entries if r.record.run_id}
    return entries + [Result(rec, LOCAL) for rec in local
                      if rec.evaluation is not None and rec.run_id not in exported]


def option_items(config: Config) -> dict[str, Any]:
    """A config's options under their label names: ``depth`` for an architecture option,
    ``<method>.<name>`` for a method option, ``task.<name>`` for a task option."""
    return {**dict(config.arch_options),
            **{f"{config.method}.{k}": v for k, v in config.method_options.items()},
            **{f"task.{k}": v for k, v in config.task_options.items() if k != "n_train"}}


def _labels(configs: Iterable[Config]) -> dict[str, str]:
    """fingerprint → label, for configs of one (task, method, arch) (see the module's rules)."""
    items = {c.fingerprint: (c.arch, option_items(c)) for c in configs}
    keys = sorted({k for _, opts in items.values() for k in opts},
                  key=lambda k: (2 if k.startswith("task.") else 1 if "." in k else 0, k))
    missing = object()
    differing = [k for k in keys if len({encode_param(o.get(k)) if k in o else missing
                                         for _, o in items.values()}) > 1]
    return {fp: " ".join([arch] + [f"{k}={encode_param(opts[k])}" for k in differing if k in opts]
                         + [f"{k}={encode_param(opts[k])}" for k in _kernel_path(opts) if k not in differing])
            for fp, (arch, opts) in items.items()}


def _kernel_path(opts: dict[str, Any]) -> list[str]:
    """The options that say how a kernel method's kernel was computed, when not in closed form."""
    method = next((k for k in opts if k.endswith(".kernel_method")), None)
    if method is None or opts[method] == "exact":
        return []
    prefix = method.split(".")[0]
    return [method] + ([f"{prefix}.mc_samples", f"{prefix}.mc_width"] if opts[method] == "monte_carlo" else [])


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _sample_std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), 0 for one value, NaN when a value is not finite."""
    if not all(math.isfinite(x) for x in xs):
        return math.nan
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _num(x: float, nan_as: float) -> float:
    return nan_as if math.isnan(x) else x


def _rank_key(row: Row) -> tuple[Any, ...]:
    acc = _num(row.acc_mean, -math.inf)
    acc = round(acc, _TIE_DECIMALS) if math.isfinite(acc) else acc
    return (-acc, _num(row.time_total_s, math.inf), row.method, row.label, row.n_train, row.source, row.device,
            row.fingerprint)


def _dominates(a: Row, b: Row) -> bool:
    at, bt = _num(a.time_total_s, math.inf), _num(b.time_total_s, math.inf)
    aa, ba = _num(a.acc_mean, -math.inf), _num(b.acc_mean, -math.inf)
    return at <= bt and aa >= ba and (at < bt or aa > ba)


def pareto_front(rows: Sequence[Row]) -> list[Row]:
    """The rows on their task's Pareto front (lower ``time_total_s``, higher ``acc_mean``), in the
    input order. Rows of different tasks never dominate each other; equal rows are both kept;
    a row with a non-finite accuracy or time is never on the front."""
    ok = [r for r in rows if math.isfinite(r.acc_mean) and math.isfinite(r.time_total_s)]
    return [r for r in ok if not any(o.task == r.task and _dominates(o, r) for o in ok)]


def _latest_per_seed(results: Sequence[Result]) -> tuple[list[Result], list[int]]:
    """One result per seed (the latest finished; ties: the larger run id), in seed order, and
    how many results each seed had."""
    by_seed: dict[int, list[Result]] = {}
    for res in results:
        by_seed.setdefault(res.record.seed, []).append(res)
    kept = [max(by_seed[s], key=lambda r: (r.record.finished_at, r.record.run_id or "")) for s in sorted(by_seed)]
    return kept, [len(by_seed[s]) for s in sorted(by_seed)]


def _row(results: Sequence[Result], label: str) -> Row:
    kept, counts = _latest_per_seed(results)
    first = kept[0]
    evals = [r.record.evaluation for r in kept]
    accs = [e.test_accuracy for e in evals]
    commits = tuple(sorted({r.record.environment.git_commit for r in kept}))
    return Row(
        task=first.record.task, method=first.record.method, arch=first.record.arch, label=label,
        config=first.record.config, n_train=first.record.n_train, source=first.source,
        device=first.record.environment.device_name, acc_mean=_mean(accs), acc_std=_sample_std(accs),
        time_fit_s=_mean([e.time_fit_s for e in evals]), time_predict_s=_mean([e.time_predict_s for e in evals]),
        time_total_s=_mean([e.time_total_s for e in evals]), peak_memory_mb=max(e.peak_memory_mb for e in evals),
        n_params=max(e.n_params for e in evals), commit=commits[0] if len(commits) == 1 else "mixed",
        commits=commits, accuracies=tuple(accs), seed_ids=tuple(r.record.seed for r in kept),
        runs_per_seed=tuple(counts), finished_at=max(r.record.finished_at for r in kept),
        verified_by="; ".join(sorted({r.verified_by for r in kept if r.verified_by})),
    )


def aggregate(results: Iterable[Result]) -> list[Row]:
    """Group results into rows (see the module's rules), sorted by task then rank, with ``rank``
    and ``pareto`` set."""
    groups: dict[tuple[str, str, str, int, str, str], list[Result]] = {}
    for res in results:
        groups.setdefault(res.key, []).append(res)
    configs: dict[tuple[str, str, str], dict[str, Config]] = {}
    for res in (g[0] for g in groups.values()):
        rec = res.record
        configs.setdefault((rec.task, rec.method, rec.arch), {})[rec.fingerprint] = rec.config
    labels = {fp: label for same in configs.values() for fp, label in _labels(same.values()).items()}
    unranked = [_row(group, labels[key[2]]) for key, group in groups.items()]
    rows: list[Row] = []
    for task in sorted({r.task for r in unranked}):
        ranked = sorted((r for r in unranked if r.task == task), key=_rank_key)
        ranked = [replace(r, rank=i) for i, r in enumerate(ranked, start=1)]
        front = {id(r) for r in pareto_front(ranked)}
        rows.extend(replace(r, pareto=id(r) in front) for r in ranked)
    return rows
