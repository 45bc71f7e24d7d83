"""The journal of a run: its events (``start``, ``params``, ``tags``, ``metrics``,
``artifact``, ``end``) in order, each with its time in ms since the epoch, as JSON lines.

A journal is kept in memory while MLflow takes the events, and written to a file of the outbox
(``<outbox>/<time>-<experiment>-<run name>-<record id>.jsonl``) with tracking ``offline`` or once
the store fails; each later event is appended and flushed, so a SIGKILL loses at most the event
being written. :func:`read_journal` reads such a file back for ``ntkbench sync``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any, TextIO

from ntkbench.record import STATUSES

DEFAULT_OUTBOX = "mlruns-outbox"
JOURNAL_FORMAT = 1
HEARTBEAT_TAG = "ntkbench_heartbeat"
"""A live run's latest sign of life (ms since the epoch), set every ``Run.HEARTBEAT_S`` seconds."""
RECORD_ID_TAG = "ntkbench_record_id"
"""Every run, live or imported, carries its journal's id: :func:`~ntkbench.tracking.sync.sync`
skips journals already in the store."""


def resolve_outbox(outbox: str | Path | None) -> Path:
    """``outbox``, else ``NTKBENCH_OUTBOX``, else ``mlruns-outbox`` in the working directory."""
    return Path(outbox or os.environ.get("NTKBENCH_OUTBOX") or DEFAULT_OUTBOX)


def now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """One run's events in order as JSON lines: in memory until :meth:`spill`, then in a file
    of the outbox, to which each later event is appended and flushed. The file is locked
    (``flock``) until :meth:`close`, so :func:`sync` leaves a running record alone."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.params: dict[str, str] = {}
        self.path: Path | None = None
        self._file: TextIO | None = None

    def add(self, event: dict[str, Any]) -> None:
        """Keep ``event`` (and append it to the file, if any); a param logged twice with two
        values raises, as MLflow would."""
        for key, value in event.get("params", {}).items():
            if self.params.setdefault(key, value) != value:
                raise ValueError(f"param {key!r} was logged as {self.params[key]!r} and again as {value!r}; "
                                 "a param is logged once per run")
        line = json.dumps(event) + "\n"
        if self._file:
            self._file.write(line)
            self._file.flush()
        else:
            self.lines.append(line)

    def spill(self, outbox: Path) -> Path:
        """Write every event so far to a new file in ``outbox`` and keep appending there. The
        file is written and locked under a ``.part`` name, then renamed: a sync never sees it
        unlocked."""
        start = json.loads(self.lines[0])
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start["time"] / 1000))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{start['experiment']}-{start['run_name']}")[:100]
        outbox.mkdir(parents=True, exist_ok=True)
        self.path = outbox / f"{stamp}-{name}-{start['record_id']}.jsonl"
        part = self.path.with_name(self.path.name + ".part")
        self._file = part.open("a", encoding="utf-8")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.writelines(self.lines)
        self._file.flush()
        part.rename(self.path)
        self.lines = []
        return self.path

    def touch(self) -> None:
        """Set the file's modification time to now: the journal's heartbeat."""
        if self.path is not None:
            os.utime(self.path)

    def discard(self) -> None:
        """Close and remove the file: every event is in the store."""
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


_FIELDS = {"start": ("format", "record_id", "experiment", "run_name", "tags"), "params": ("params",),
           "tags": ("tags",), "metrics": ("step", "values"), "artifact": ("file_name", "data"), "end": ("status",)}


class JournalError(ValueError):
    """A journal file that cannot be read; the message names the file and line."""



def read_journal(path: Path, data: bytes) -> list[dict[str, Any]]:
    """The events of the record file ``path`` whose content is ``data``. A last line with no
    newline that does not parse was cut off by a kill and is dropped; any other bad line
    raises a :class:`JournalError` naming the file and line."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise JournalError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON lines") from None
    events = [_parse(path, number, line) for number, line in enumerate(lines[:-1], 1)]
    if lines[-1]:
        try:
            events.append(_parse(path, len(lines), lines[-1]))
        except JournalError:
            pass  # the event being written when the process was killed
    if not events:
        raise JournalError(f"{path}: empty; expected a start event on line 1")
    for number, event in enumerate(events, 1):
        kind = event["event"]
        if (kind == "start") != (number == 1) or (kind == "end" and number != len(events)):
            raise JournalError(f"{path}:{number}: a {kind} event here; expected start on line 1 only and end last only")
    start = events[0]
    if start["format"] != JOURNAL_FORMAT or not re.fullmatch(r"[0-9a-f]{32}", str(start["record_id"])):
        raise JournalError(f"{path}:1: record format {start['format']!r}, id {start['record_id']!r}; "
                          f"expected format {JOURNAL_FORMAT} and a 32-digit hex id")
    if events[-1]["event"] == "end" and events[-1]["status"] not in STATUSES:
        raise JournalError(f"{path}:{len(events)}: status {events[-1]['status']!r}; expected one of {', '.join(STATUSES)}")
    return events


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    """One line of a record: a JSON object with its event's fields."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as e:
        raise JournalError(f"{path}:{number}: not JSON ({e.msg}); expected one event object a line") from None
    kind = event.get("event") if isinstance(event, dict) else None
    if kind not in _FIELDS:
        raise JournalError(f"{path}:{number}: event {kind!r}; expected one of {', '.join(_FIELDS)}")
    missing = [f for f in ("time", *_FIELDS[kind]) if f not in event]
    if missing:
        raise JournalError(f"{path}:{number}: the {kind} event lacks {', '.join(missing)}")
    return event
