"""The typed record of one run: what was run (:class:`Config`), on what (:class:`Environment`),
with which seed, and what came out (:class:`Evaluation` plus the method's own metrics).

The runner writes one :class:`RunRecord` per run; tracking stores it in MLflow (params, tags and
the artifact ``record.json``); the leaderboard, ``export`` and the study read it back with
:func:`from_mlflow_row`. Nothing downstream looks up a run's meaning by string keys of its own.

Identity. :meth:`Config.fingerprint` is a stable hash of everything that defines the experiment
except the seed: task, method and architecture names and their resolved options. The code
version (``Environment.git_commit``) is recorded beside it, not inside it, so a commit that
changes no result does not split a leaderboard row. Two runs with the same fingerprint and seed
are repetitions of one experiment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

FINGERPRINT_TAG = "ntkbench_fingerprint"
RECORD_ARTIFACT = "record.json"
RECORD_FORMAT = 1
STATUSES = ("FINISHED", "FAILED", "KILLED")


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces; NaN or infinity raise (they have no JSON form)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Config:
    """What defines an experiment, except the seed: names and resolved options (JSON values).

    ``task_options`` are the task's resolved params without the seed and machine facts (see
    ``ntkbench.tasks.base.IDENTITY_EXCLUDED``); ``method_options`` and ``arch_options`` are every
    option of the method and the architecture, defaults included, without the seed.
    """

    task: str
    method: str
    arch: str
    task_options: Mapping[str, Any] = field(default_factory=dict)
    method_options: Mapping[str, Any] = field(default_factory=dict)
    arch_options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "method": self.method, "arch": self.arch,
                "task_options": dict(self.task_options), "method_options": dict(self.method_options),
                "arch_options": dict(self.arch_options)}

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of :meth:`to_json`."""
        return hashlib.sha256(canonical_json(self.to_json()).encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Config:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Environment:
    """Where a run ran. ``device`` is ``cpu`` or ``cuda``; ``device_name`` the CPU or GPU model,
    which is the *device class* the leaderboard never averages times across."""

    device: str
    device_name: str
    torch_version: str
    ntkbench_version: str
    hostname: str
    git_commit: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Environment:
        return cls(**{f.name: str(data.get(f.name, "unknown")) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Evaluation:
    """The runner's own figures of a finished run.

    ``time_total_s`` = fit + test prediction (what a user of the method pays);
    ``time_train_eval_s`` is the extra prediction on the training set, timed apart.
    ``peak_memory_mb`` is the memory the run added over the process's level when it started
    (CUDA: peak allocated minus allocated at start; CPU: peak resident set minus resident set at
    start, sampled every 5 ms); ``process_peak_memory_mb`` the absolute peak (CPU: the whole
    process, torch itself included). The leaderboard shows ``peak_memory_mb``.
    """

    test_accuracy: float
    test_mse: float
    train_accuracy: float
    time_fit_s: float
    time_predict_s: float
    time_total_s: float
    time_train_eval_s: float
    peak_memory_mb: float
    process_peak_memory_mb: float
    n_params: int

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        """From a mapping with every field (extra keys are ignored); a missing one is a KeyError."""
        return cls(**{f.name: int(data[f.name]) if f.name == "n_params" else float(data[f.name])
                      for f in dataclasses.fields(cls)})


EVALUATION_FIELDS = tuple(f.name for f in dataclasses.fields(Evaluation))


@dataclass(frozen=True)
class RunRecord:
    """One run: config, seed, the n_train it used, status and results, environment and run id.

    ``evaluation`` is None unless the run FINISHED. ``metrics`` holds the last value of every
    metric the method reported (``ridge``, ``kernel_alignment``, ...). ``params`` the choices it
    reported (``solver``, ``entk_solve``, ...). ``run_id`` is the MLflow run's id (None when
    untracked), ``finished_at`` its end time, ISO 8601 UTC ("" while unknown).
    """

    config: Config
    seed: int
    n_train: int
    status: str
    environment: Environment
    evaluation: Evaluation | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None
    finished_at: str = ""
    storage: str = field(default="", compare=False)
    """Where the complete run went in this process: ``mlflow``, ``outbox`` (the store failed or
    was unreachable, or tracking was offline) or "" (untracked). Not part of the stored record."""

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def arch(self) -> str:
        return self.config.arch

    def to_json(self) -> dict[str, Any]:
        """A JSON object; non-finite metrics become null (JSON has no NaN)."""
        return {"format": RECORD_FORMAT, "fingerprint": self.fingerprint, "config": self.config.to_json(),
                "seed": self.seed, "n_train": self.n_train, "status": self.status,
                "environment": self.environment.to_json(),
                "evaluation": self.evaluation.to_json() if self.evaluation else None,
                "metrics": {k: v if math.isfinite(v) else None for k, v in self.metrics.items()},
                "params": dict(self.params), "run_id": self.run_id, "error": self.error,
                "finished_at": self.finished_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The inverse of :meth:`to_json`; a record whose fingerprint does not match its config
        raises a ValueError (it was edited)."""
        record = cls(Config.from_json(data["config"]), int(data["seed"]), int(data["n_train"]), str(data["status"]),
                     Environment.from_json(data["environment"]),
                     Evaluation.from_json(data["evaluation"]) if data.get("evaluation") else None,
                     {k: math.nan if v is None else float(v) for k, v in data.get("metrics", {}).items()},
                     dict(data.get("params", {})), data.get("run_id"), data.get("error"), data.get("finished_at", ""))
        if "fingerprint" in data and data["fingerprint"] != record.fingerprint:
            raise ValueError(f"record fingerprint {data['fingerprint']} does not match its config "
                             f"({record.fingerprint}); the record was edited")
        return record


def encode_param(value: Any) -> str:
    """An option value as an MLflow param: a string as itself when that reads back as the same
    string (``sgd``), anything else as JSON (``0.5``, ``true``, ``[1, 2]``, ``"1"``)."""
    if isinstance(value, str) and decode_param(value) == value:
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def decode_param(text: str) -> Any:
    """The inverse of :func:`encode_param`: JSON where the text parses, else the string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def from_mlflow_row(row: Mapping[str, Any]) -> RunRecord | None:
    """The record of one row of MLflow's pandas frame (``run_id``, ``status``, ``end_time``,
    ``params.*``, ``metrics.*``, ``tags.*``), or None for a run that ntkbench did not write
    (no fingerprint tag: another tool's run, or one from before records existed).

    Options come from the ``task.*``, ``method.*`` and ``arch.*`` params decoded as JSON; the
    fingerprint from the tag, which the runner computed from the typed values, and which is
    checked against the decoded config (a mismatch raises a ValueError naming the run)."""
    def present(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in row.items()
                if k.startswith(prefix) and v is not None and not (isinstance(v, float) and math.isnan(v))}

    params, tags, metrics = present("params."), present("tags."), present("metrics.")
    if FINGERPRINT_TAG not in tags:
        return None
    options = {prefix: {k[len(prefix) + 1:]: decode_param(v) for k, v in params.items() if k.startswith(prefix + ".")}
               for prefix in ("task", "method", "arch")}
    config = Config(params["task"], params["method"], params["arch"], options["task"], options["method"], options["arch"])
    if config.fingerprint != tags[FINGERPRINT_TAG]:
        raise ValueError(f"run {row['run_id']}: its params hash to {config.fingerprint}, its tag says "
                         f"{tags[FINGERPRINT_TAG]}; the run's params were changed after it ran")
    evaluation = None
    if all(name in metrics for name in EVALUATION_FIELDS):
        evaluation = Evaluation.from_json(metrics)
    own = {k: float(v) for k, v in metrics.items() if k not in EVALUATION_FIELDS and k != "n_train"}
    end = row.get("end_time")
    finished = _iso_utc(end) if end is not None and end == end else ""
    reported = {k: decode_param(v) for k, v in params.items()
                if k not in ("task", "method", "arch", "seed", "n_train", "device") and "." not in k}
    return RunRecord(config, int(params["seed"]), int(metrics.get("n_train", params.get("n_train", 0))),
                     str(row["status"]), Environment.from_json(tags), evaluation, own, reported,
                     str(row["run_id"]), tags.get("error"), finished)


def _iso_utc(when: Any) -> str:
    """A datetime or pandas Timestamp as ISO 8601 UTC with milliseconds (MLflow's precision)."""
    from datetime import timezone

    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")
