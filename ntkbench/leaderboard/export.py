"""From the MLflow store to the leaderboard: the local runs as typed records, and ``export``,
which writes the entries (see :mod:`ntkbench.leaderboard.schema`) of chosen runs."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ntkbench.leaderboard.schema import SCHEMA_VERSION, Entry, Problem, compute_checksum, file_name
from ntkbench.record import FINGERPRINT_TAG, Config, RunRecord, encode_param, from_mlflow_row


def records_from_mlflow(tracking_uri: str | None) -> tuple[list[RunRecord], list[Problem]]:
    """The FINISHED runs of the store that ntkbench wrote, as records, and one problem per run
    whose params no longer match its fingerprint (it is left out); ([], []) for an empty or
    missing store, which is not created."""
    from ntkbench.tracking import runs_frame

    records, problems = [], []
    for row in runs_frame(tracking_uri).to_dict("records"):
        try:
            record = from_mlflow_row(row)
        except ValueError as e:
            problems.append(Problem(f"run {row['run_id']}", "params", str(e)))
            continue
        if record is not None and record.evaluation is not None:
            records.append(record)
    return sorted(records, key=lambda r: (r.task, r.method, r.fingerprint, r.seed, r.run_id or "")), problems


def _task_options(task: str) -> set[str]:
    """The options ``--set task.NAME`` accepts for ``task``: the common ones but the seed, and
    the builder's own keyword parameters (none for a task not registered here)."""
    from ntkbench.tasks import TASKS
    from ntkbench.tasks.base import COMMON_OPTIONS, option_names

    return set(option_names(task) if task in TASKS else COMMON_OPTIONS) - {"seed"}


def build_command(config: Config, seeds: Iterable[int], device: str) -> str:
    """The ``ntkbench run`` line that reruns ``config`` for ``seeds`` on ``device``: every
    architecture and method option and every settable task option (not facts such as the
    data's source) as ``--set``, values as :func:`~ntkbench.record.encode_param` writes them."""
    tokens = ["ntkbench", "run", "--task", config.task, "--method", config.method, "--arch", config.arch,
              "--seeds", ",".join(str(s) for s in sorted(set(seeds))), "--device", device]
    settable = _task_options(config.task)
    sets = [(f"task.{k}", v) for k, v in config.task_options.items() if k in settable]
    sets += [(f"{config.method}.{k}", v) for k, v in config.method_options.items()]
    sets += [(f"arch.{k}", v) for k, v in config.arch_options.items()]
    for key, value in sorted(sets):
        tokens += ["--set", f"{key}={encode_param(value)}"]
    return shlex.join(tokens)


def _finished_record(row: Mapping[str, Any]) -> RunRecord:
    run = row["run_id"]
    if row["status"] != "FINISHED":
        raise ValueError(f"run {run} is {row['status']}, not FINISHED")
    record = from_mlflow_row(row)
    if record is None:
        raise ValueError(f"run {run} has no {FINGERPRINT_TAG} tag: it was not written by ntkbench's runner")
    if record.evaluation is None:
        raise ValueError(f"run {run} lacks some of the runner's metrics (test_accuracy, time_total_s, ...)")
    return record


def make_entry(records: list[RunRecord]) -> Entry:
    """The entry of the runs of one (fingerprint, device class); they must share the commit and
    environment and differ in their seeds."""
    first = records[0]
    where = f"{first.task}/{first.method}/{first.arch} config {first.fingerprint}"
    for rec in records[1:]:
        a, b = first.environment.to_json(), rec.environment.to_json()
        if differ := sorted(k for k in a if a[k] != b[k]):
            raise ValueError(f"runs {first.run_id} and {rec.run_id} of {where} differ in {', '.join(differ)}; "
                             "export runs of one commit and environment together")
    seeds = sorted(r.seed for r in records)
    if dup := sorted({s for s in seeds if seeds.count(s) > 1}):
        runs = ", ".join(r.run_id or "" for r in records if r.seed == dup[0])
        raise ValueError(f"runs {runs} of {where} are all seed {dup[0]}; export one run per seed")
    environment = first.environment.to_json()
    commit = environment.pop("git_commit")
    results = [{"seed": r.seed, "n_train": r.n_train, "run_id": r.run_id, **r.evaluation.to_json()}
               for r in sorted(records, key=lambda r: r.seed)]
    data = {"schema_version": SCHEMA_VERSION, "config": first.config.to_json(), "fingerprint": first.fingerprint,
            "results": results, "environment": environment, "commit": commit,
            "command": build_command(first.config, seeds, environment["device"]),
            "date": max(r.finished_at for r in records)}
    try:
        return Entry.model_validate({**data, "checksum": compute_checksum(data)})
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        raise ValueError(f"{where} would not be a valid entry: {'.'.join(map(str, error['loc']))}: "
                         f"{error['msg']}") from None


def export(run_ids: list[str], out_dir: Path, tracking_uri: str | None = None) -> list[Path]:
    """Write one entry per (config fingerprint, device class) of the FINISHED runs ``run_ids``
    into ``out_dir``, keeping their run ids. A bad run or group raises a one-line ``ValueError``
    and nothing is written. The same runs give the same bytes. Returns the written paths, sorted.
    """
    from ntkbench.tracking import runs_frame

    if not run_ids:
        raise ValueError("no run ids to export")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for row in runs_frame(tracking_uri, list(run_ids)).to_dict("records"):
        record = _finished_record(row)
        groups.setdefault((record.fingerprint, record.environment.device_name), []).append(record)
    out_dir = Path(out_dir)
    entries: dict[str, Entry] = {}
    for (_, device), records in sorted(groups.items()):
        name = file_name(records[0].config, device)
        if name in entries or _holds_another(out_dir / name, records[0].fingerprint, device):
            raise ValueError(f"{name} would hold two device classes or configs; its device name is {device!r}")
        entries[name] = make_entry(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        (out_dir / name).write_text(entry.to_text(), encoding="utf-8")
    return sorted(out_dir / name for name in entries)


def _holds_another(path: Path, fingerprint: str, device: str) -> bool:
    """Whether ``path`` is an entry of another config or device class (names can collide when
    device names differ only in punctuation)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return (data["fingerprint"], data["environment"]["device_name"]) != (fingerprint, device)
    except (OSError, ValueError, KeyError, TypeError):
        return False
