"""Leaderboard entries: versioned, checksummed JSON files exported from MLflow runs.

One file per (task, method, arch) holds every seed of one configuration, the environment it ran
in and the ``ntkbench run`` command that reproduces it. ``validate`` reports every bad file;
``load_entries`` and ``records_from_mlflow`` turn entries and runs into ``Record``s. Loading an
entry only parses JSON: nothing named in it is ever imported or executed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ntkbench.leaderboard.record import Record

SCHEMA_VERSION = 1
SEED_PARAMS = frozenset({"seed", "task.seed", "method.seed"})  # every other param is in an entry's config
METRICS = ("test_accuracy", "train_accuracy", "time_fit_s", "time_predict_s", "time_total_s", "peak_memory_mb", "n_params")
ENVIRONMENT_TAGS = ("device", "device_name", "torch_version", "ntkbench_version", "hostname")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class SeedResult(_Strict):
    """The figures of one seed (one MLflow run)."""

    seed: int = Field(ge=0)
    n_train: int = Field(ge=1)
    test_accuracy: float = Field(ge=0, le=1)
    train_accuracy: float = Field(ge=0, le=1)
    time_fit_s: float = Field(ge=0)
    time_predict_s: float = Field(ge=0)
    time_total_s: float = Field(ge=0)
    peak_memory_mb: float = Field(ge=0)
    n_params: int = Field(ge=0)
    run_id: str = Field(min_length=1)


class Environment(_Strict):
    """Where the runs ran (the MLflow run tags of the same names)."""

    device: str
    device_name: str
    torch_version: str
    ntkbench_version: str
    hostname: str


class Entry(_Strict):
    """One leaderboard entry, schema version 1. ``checksum`` is the sha256 of the canonical
    JSON (sorted keys, no spaces) of every other field; a mismatch fails validation."""

    schema_version: Literal[1]
    task: str = Field(min_length=1)
    method: str = Field(min_length=1)
    arch: str = Field(min_length=1)
    config: dict[str, str]
    results: list[SeedResult] = Field(min_length=1)
    environment: Environment
    commit: str
    command: str = Field(min_length=1)
    verified: bool
    verified_by: str | None
    date: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(\+00:00|Z)$")  # ISO 8601, UTC
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="wrap")
    @classmethod
    def _consistent(cls, data: Any, handler: Any) -> Entry:
        self = handler(data)  # the fields first; the checksum is of the JSON as given
        keys = [(r.n_train, r.seed) for r in self.results]
        if len(set(keys)) != len(keys):
            raise PydanticCustomError("duplicate_seed", "results repeat an (n_train, seed) pair")
        if self.verified and not self.verified_by:
            raise PydanticCustomError("unverified", "verified is true but verified_by is empty")
        expected = compute_checksum(data if isinstance(data, Mapping) else self.model_dump(mode="json"))
        if self.checksum != expected:
            raise PydanticCustomError("checksum_mismatch", "checksum mismatch: the file says {got}, its content "
                                      "hashes to {expected}", {"got": self.checksum, "expected": expected})
        return self


@dataclass(frozen=True)
class Problem:
    """Why one file is not a valid entry."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


def compute_checksum(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``data`` without its ``checksum`` key."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iso_utc(when: Any) -> str:
    """A datetime or pandas Timestamp as ISO 8601 UTC with milliseconds (MLflow's precision)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def file_name(task: str, method: str, arch: str) -> str:
    """``<task>__<method>__<arch>.json`` with characters outside [A-Za-z0-9._-] made ``_``."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in (task, method, arch)) + ".json"


def build_command(task: str, method: str, arch: str, config: Mapping[str, str], seeds: list[int]) -> str:
    """The ``ntkbench run`` command line that reruns ``config`` for ``seeds``: every resolved
    architecture and method option, and the task options it accepts (not facts such as its source)."""
    import inspect

    from ntkbench.tasks import TASKS
    from ntkbench.tasks.base import COMMON_OPTIONS

    settable = set(COMMON_OPTIONS) - {"seed"}
    if task in TASKS:  # its own options: the builder's keyword parameters
        settable |= set(list(inspect.signature(TASKS.get(task)).parameters)[1:])
    tokens = ["ntkbench", "run", "--task", task, "--method", method, "--arch", arch,
              "--seeds", ",".join(str(s) for s in sorted(set(seeds)))]
    if "device" in config:
        tokens += ["--device", config["device"]]
    for key in sorted(config):
        prefix, _, name = key.partition(".")
        if (prefix == "task" and name in settable) or (prefix == "arch" and name):
            tokens += ["--set", f"{key}={config[key]}"]
        elif prefix == "method" and name:
            tokens += ["--set", f"{method}.{name}={config[key]}"]
    return shlex.join(tokens)


def _run_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """params, tags and the SeedResult fields of one ``runs_frame`` row; KeyError names what lacks."""
    def present(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix) and v is not None and v == v}

    params, tags, metrics = present("params."), present("tags."), present("metrics.")
    lacking = [f"param {n!r}" for n in ("task", "method", "arch", "seed") if n not in params]
    lacking += [f"metric {n!r}" for n in (*METRICS, "n_train") if n not in metrics]
    if lacking:
        raise KeyError(", ".join(lacking))
    result = {"seed": int(params["seed"]), "n_train": int(metrics["n_train"]), "run_id": row["run_id"],
              **{m: int(metrics[m]) if m == "n_params" else float(metrics[m]) for m in METRICS}}
    return {"params": params, "tags": tags, "result": result, "end_time": row["end_time"]}


def export(run_ids: list[str], out_dir: Path, tracking_uri: str | None = None) -> list[Path]:
    """Write one entry per (task, method, arch) of the FINISHED runs ``run_ids`` into ``out_dir``.

    Runs of one file must share their config (every param but the seed), commit and
    environment, and differ in (n_train, seed); otherwise, or for an unknown or unfinished run,
    a ``ValueError`` names the runs. Nothing is written then. Files are deterministic: the same
    runs give the same bytes. Returns the written paths, sorted.
    """
    from ntkbench.tracking import runs_frame

    if not run_ids:
        raise ValueError("no run ids to export")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in runs_frame(tracking_uri, list(run_ids)).to_dict("records"):
        if row["status"] != "FINISHED":
            raise ValueError(f"run {row['run_id']} is {row['status']}, not FINISHED")
        try:
            fields = _run_fields(row)
        except KeyError as e:
            raise ValueError(f"run {row['run_id']} lacks {e.args[0]}") from None
        groups.setdefault(tuple(fields["params"][k] for k in ("task", "method", "arch")), []).append(fields)
    entries: dict[str, Entry] = {}
    for key, runs in sorted(groups.items()):
        if (name := file_name(*key)) in entries:
            raise ValueError(f"{'/'.join(key)} and another (task, method, arch) would both be written to {name}")
        entries[name] = _entry(key, runs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        text = json.dumps(entry.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        (Path(out_dir) / name).write_text(text + "\n", encoding="utf-8")
    return [Path(out_dir) / name for name in entries]


def _entry(key: tuple[str, str, str], runs: list[dict[str, Any]]) -> Entry:
    def config(run: dict[str, Any]) -> dict[str, str]:
        return {k: str(v) for k, v in run["params"].items() if k not in SEED_PARAMS}

    def environment(run: dict[str, Any]) -> dict[str, str]:
        return {t: str(run["tags"].get(t, "unknown")) for t in (*ENVIRONMENT_TAGS, "git_commit")}

    first, where = runs[0], "/".join(key)
    for run in runs[1:]:
        ids = f"runs {first['result']['run_id']} and {run['result']['run_id']} of {where}"
        a, b = config(first), config(run)
        if differ := sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)):
            raise ValueError(f"{ids} differ in more than the seed: {', '.join(differ)}")
        if environment(run) != environment(first):
            raise ValueError(f"{ids} ran at different commits or in different environments")
    results = sorted((r["result"] for r in runs), key=lambda r: (r["n_train"], r["seed"]))
    if len({(r["n_train"], r["seed"]) for r in results}) != len(results):
        raise ValueError(f"{where}: more than one run for the same (n_train, seed)")
    env = environment(first)
    commit = env.pop("git_commit")
    data = {"schema_version": SCHEMA_VERSION, "task": key[0], "method": key[1], "arch": key[2],
            "config": config(first), "results": results, "environment": env, "commit": commit,
            "command": build_command(*key, config(first), [r["seed"] for r in results]),
            "verified": False, "verified_by": None, "date": max(iso_utc(r["end_time"]) for r in runs)}
    return Entry.model_validate({**data, "checksum": compute_checksum(data)})


_MODEL_ERROR_FIELDS = {"checksum_mismatch": "checksum", "duplicate_seed": "results", "unverified": "verified_by"}


def _check_file(path: Path) -> tuple[Entry | None, list[Problem]]:
    """The entry in ``path``, or None and every problem found."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        return None, [Problem(str(path), "<file>", f"not valid JSON (truncated?): {e.msg} at line {e.lineno} "
                                                   f"column {e.colno}")]
    except (OSError, ValueError) as e:  # unreadable, not UTF-8
        return None, [Problem(str(path), "<file>", f"unreadable: {e}")]
    if not isinstance(data, dict):
        return None, [Problem(str(path), "<file>", f"expected a JSON object, got {type(data).__name__}")]
    try:
        return Entry.model_validate(data), []
    except ValidationError as e:
        return None, [Problem(str(path), ".".join(str(p) for p in error["loc"])
                              or _MODEL_ERROR_FIELDS.get(error["type"], "<entry>"), error["msg"])
                      for error in e.errors(include_url=False)]


def _entry_files(path: Path) -> tuple[list[Path], list[Problem]]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file()), []
    return ([path], []) if path.is_file() else ([], [Problem(str(path), "<file>", "no such file or directory")])


def validate(path: Path) -> list[Problem]:
    """Every problem of the entry ``path`` or of each ``*.json`` in the directory ``path``;
    an empty list when all are valid."""
    files, problems = _entry_files(path)
    for file in files:
        problems += _check_file(file)[1]
    return problems


_FIGURES = ("n_train", "seed", "test_accuracy", "time_fit_s", "time_predict_s", "time_total_s", "peak_memory_mb",
            "n_params")


def load_entries(directory: Path) -> tuple[list[Record], list[Problem]]:
    """Records of the valid entries in ``directory`` (one per seed) and the problems of the
    others, which are skipped. Never raises for a bad or missing file."""
    files, problems = _entry_files(directory)
    records = []
    for file in files:
        entry, found = _check_file(file)
        problems += found
        if entry is not None:
            device = entry.environment.device_name or entry.environment.device
            records += [Record(entry.task, entry.method, entry.arch, **{f: getattr(r, f) for f in _FIGURES},
                               device=device, commit=entry.commit, verified=entry.verified,
                               source=f"entry:{file.name}", finished_at=entry.date) for r in entry.results]
    return records, problems


def records_from_mlflow(tracking_uri: str | None) -> list[Record]:
    """A Record (``verified`` false, source ``mlflow:<run_id>``) per FINISHED run of the store
    that carries the benchmark's params and metrics, sorted; [] for an empty or missing store."""
    from ntkbench.tracking import runs_frame

    records = []
    for row in runs_frame(tracking_uri).to_dict("records"):
        try:
            fields = _run_fields(row)
        except KeyError:  # a run of something else in the same store
            continue
        p, t, r = fields["params"], fields["tags"], fields["result"]
        records.append(Record(p["task"], p["method"], p["arch"], **{f: r[f] for f in _FIGURES},
                              device=str(t.get("device_name") or t.get("device") or "unknown"),
                              commit=str(t.get("git_commit", "unknown")), verified=False,
                              source=f"mlflow:{row['run_id']}", finished_at=iso_utc(row["end_time"])))
    return sorted(records, key=lambda r: (r.task, r.method, r.arch, r.n_train, r.seed, r.source))
