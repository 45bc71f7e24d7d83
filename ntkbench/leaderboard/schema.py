"""The formats of the committed leaderboard files, with their limits.

An entry (``leaderboard/entries/*.json``, schema version 2) holds the seeds of one (config
fingerprint, device class): the :class:`~ntkbench.record.Config` as JSON and its fingerprint,
one result per seed (run id, seed, n_train and every :class:`~ntkbench.record.Evaluation`
field), the environment (``Environment`` less the commit, which is the ``commit`` field), the
``ntkbench run`` command that reproduces it, the date of its latest run and a checksum: the
sha256 of the canonical JSON of every other field. An entry cannot say it is verified: the
maintainers list the checksums they reproduced in ``leaderboard/verified.json``
(:class:`VerifiedFile`), and a change to an entry changes its checksum.

Limits, so that a file cannot blow up a page or reach outside the folder: at most
:data:`MAX_FILE_BYTES` per file (checked before parsing), :data:`MAX_RESULTS` seeds per entry,
names of tasks, methods and architectures matching :data:`NAME_PATTERN` (no ``/``, no leading
``.``), option names matching :data:`OPTION_PATTERN`, and bounded strings and option values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, create_model, model_validator
from pydantic_core import PydanticCustomError

from ntkbench.record import Config, Evaluation, canonical_json

SCHEMA_VERSION = 2
MAX_FILE_BYTES = 1 << 20
MAX_RESULTS = 100
MAX_OPTIONS = 64
MAX_OPTION_JSON = 1000
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
OPTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(\+00:00|Z)$"
SELF_VERIFIED = ("verified", "verified_by")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _bounded_json(value: JsonValue) -> JsonValue:
    if len(canonical_json(value)) > MAX_OPTION_JSON:
        raise ValueError(f"an option value is limited to {MAX_OPTION_JSON} characters of JSON")
    return value


Options = Annotated[dict[Annotated[str, Field(pattern=OPTION_PATTERN)],
                         Annotated[JsonValue, AfterValidator(_bounded_json)]], Field(max_length=MAX_OPTIONS)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ConfigModel(_Strict):
    """``Config.to_json()``: registered-style names and bounded options."""

    task: Name
    method: Name
    arch: Name
    task_options: Options
    method_options: Options
    arch_options: Options


def _figure(name: str, kind: type) -> tuple[type, Any]:
    """Every Evaluation figure is >= 0; accuracies are at most 1."""
    return kind, Field(ge=0, le=1) if name.endswith("accuracy") else Field(ge=0)


_HINTS = typing.get_type_hints(Evaluation)
SeedResult = create_model(
    "SeedResult", __base__=_Strict,
    seed=(int, Field(ge=0, lt=2**63)), n_train=(int, Field(ge=1)),
    run_id=(str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")),
    **{f.name: _figure(f.name, _HINTS[f.name]) for f in dataclasses.fields(Evaluation)},
)
SeedResult.__doc__ = "One seed: its MLflow run id, seed, n_train used and every Evaluation field."


class EnvironmentModel(_Strict):
    """``Environment`` without ``git_commit`` (the entry's ``commit``)."""

    device: str = Field(pattern=r"^[a-z]{1,16}$")
    device_name: str = Field(min_length=1, max_length=128)
    torch_version: str = Field(max_length=64)
    ntkbench_version: str = Field(max_length=64)
    hostname: str = Field(max_length=255)


class Entry(_Strict):
    """One leaderboard entry, schema version 2 (see the module's docstring)."""

    schema_version: Literal[2]
    config: ConfigModel
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$")
    results: list[SeedResult] = Field(min_length=1, max_length=MAX_RESULTS)  # type: ignore[valid-type]
    environment: EnvironmentModel
    commit: str = Field(pattern=r"^([0-9a-f]{7,64}|unknown)$")
    command: str = Field(pattern=r"^ntkbench run ", max_length=8192)
    date: str = Field(pattern=ISO_UTC)
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="before")
    @classmethod
    def _not_self_verified(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in data for k in SELF_VERIFIED):
            raise PydanticCustomError("self_verified", "an entry cannot verify itself; maintainers list the "
                                      "checksums they reproduced in leaderboard/verified.json")
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _consistent(cls, data: Any, handler: Any) -> Entry:
        self = handler(data)  # the fields first; the checksum is of the JSON as given
        seeds = [r.seed for r in self.results]
        if len(set(seeds)) != len(seeds):
            raise PydanticCustomError("duplicate_seed", "results repeat a seed")
        run_ids = [r.run_id for r in self.results]
        if len(set(run_ids)) != len(run_ids):
            raise PydanticCustomError("duplicate_run", "results repeat a run id")
        if self.fingerprint != (actual := self.as_config().fingerprint):
            raise PydanticCustomError("fingerprint_mismatch", "fingerprint {got} is not the config's ({actual})",
                                      {"got": self.fingerprint, "actual": actual})
        expected = compute_checksum(data if isinstance(data, Mapping) else self.model_dump(mode="json"))
        if self.checksum != expected:
            raise PydanticCustomError("checksum_mismatch", "checksum mismatch: the file says {got}, its content "
                                      "hashes to {expected}", {"got": self.checksum, "expected": expected})
        return self

    def as_config(self) -> Config:
        return Config.from_json(self.config.model_dump(mode="json"))

    @property
    def file_name(self) -> str:
        return file_name(self.as_config(), self.environment.device_name)

    def to_text(self) -> str:
        """The file's text: sorted keys, indent 2, a final newline; the same entry, the same bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False,
                          allow_nan=False) + "\n"


# Where a model-level error is reported: the field it concerns.
MODEL_ERROR_FIELDS = {"checksum_mismatch": "checksum", "duplicate_seed": "results", "duplicate_run": "results",
                      "fingerprint_mismatch": "fingerprint", "self_verified": "verified",
                      "duplicate_checksum": "verified"}


class Verification(_Strict):
    """One reproduced entry: its checksum, who reproduced it and on which day."""

    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")
    by: str = Field(min_length=1, max_length=100)
    date: str = Field(pattern=r"^\d{4}-\d\d-\d\d$")


class VerifiedFile(_Strict):
    """``leaderboard/verified.json``, kept by the maintainers: the entries they reproduced."""

    schema_version: Literal[1]
    verified: list[Verification] = Field(max_length=100_000)

    @model_validator(mode="after")
    def _unique(self) -> VerifiedFile:
        checksums = [v.checksum for v in self.verified]
        if len(set(checksums)) != len(checksums):
            raise PydanticCustomError("duplicate_checksum", "a checksum is listed twice")
        return self


@dataclass(frozen=True)
class Problem:
    """Why one file is not valid."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


def compute_checksum(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``data`` without its ``checksum`` key."""
    return hashlib.sha256(canonical_json({k: v for k, v in data.items() if k != "checksum"}).encode()).hexdigest()


def file_name(config: Config, device_name: str) -> str:
    """``<task>__<method>__<arch>__<fingerprint>__<device>.json``: the device class in lower
    case with every run of other characters than [a-z0-9] made one ``-`` (at most 40)."""
    device = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")[:40].strip("-") or "unknown"
    return f"{config.task}__{config.method}__{config.arch}__{config.fingerprint}__{device}.json"
