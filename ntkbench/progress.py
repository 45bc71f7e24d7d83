"""Progress of long work on stderr, with tqdm: which run of how many, the epoch or kernel tile
inside it, and an estimate of the time left.

A command's runs are shown in one of three modes (:func:`mode`), chosen once:

- ``bar``: stderr is a terminal. A bar over the runs (``run 3/15 nn seed 0``, runs done, elapsed
  time and ETA from the runs so far) and, below it while a run lasts, the bar of its inner loop
  from :func:`steps`: epochs, kernel tiles or blocks, eNTK blocks.
- ``lines``: stderr is not a terminal (a log file, CI). One line per finished run,
  ``run 3/15 nn seed 0: FINISHED, 95.8 % in 3.2 s``, and no inner bars.
- ``quiet`` (``--quiet``): nothing. Errors are not progress: they are printed all the same.

The inner loops run deep inside methods and kernels, which know nothing of the command; while a
run of :class:`RunProgress` lasts, a context variable tells :func:`steps` whether to draw (only
in ``bar`` mode). Outside a run (a notebook calling a method) :func:`steps` draws when stderr is a
terminal, as tqdm's users expect.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, TypeVar

from tqdm.auto import tqdm

from ntkbench import format as fmt

if TYPE_CHECKING:
    from ntkbench.record import RunRecord

T = TypeVar("T")
MODES = ("bar", "lines", "quiet")
_inner: ContextVar[bool | None] = ContextVar("ntkbench_progress_inner", default=None)


def mode(quiet: bool = False, stream: IO[str] | None = None) -> str:
    """``quiet`` if asked, else ``bar`` when ``stream`` (default stderr) is a terminal, else ``lines``."""
    if quiet:
        return "quiet"
    stream = stream or sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def steps(items: Iterable[T], desc: str, total: int | None = None, hide: bool = False) -> Iterable[T]:
    """``items`` with a transient tqdm bar named ``desc`` (gone when the loop ends): drawn inside
    a :class:`RunProgress` run in ``bar`` mode, outside any run when stderr is a terminal, and
    never when ``hide`` (say, a loop of one step)."""
    shown = _inner.get()
    if shown is None:
        shown = sys.stderr.isatty()
    return tqdm(items, desc=desc, total=total, leave=False, disable=hide or not shown, dynamic_ncols=True)


def records(items: list[T], quiet: bool = False, unit: str = "record") -> Iterable[T]:
    """``items`` with a bar (count, ETA) in ``bar`` mode; as they are otherwise. For loops whose
    items print their own line (``ntkbench sync``)."""
    return tqdm(items, desc=f"{unit}s", unit=unit, disable=mode(quiet) != "bar", dynamic_ncols=True)


def outcome(record: RunRecord) -> str:
    """``FINISHED, 95.8 %`` (test accuracy in percent), or the status with the error."""
    if record.evaluation is not None:
        return f"{record.status}, {fmt.percent(record.evaluation.test_accuracy)} %"
    return f"{record.status}: {record.error}" if record.error else record.status


class RunProgress:
    """The progress of ``total`` runs in one of :data:`MODES` (default: :func:`mode` of
    ``stream``). Each run is ``start(label)`` … ``finish(record)``; ``close()`` ends the bar. The
    study makes one for all its runs and hands it to each :func:`ntkbench.runner.run` call, so
    the count goes over the whole study."""

    def __init__(self, total: int, quiet: bool = False, stream: IO[str] | None = None, unit: str = "run") -> None:
        self.stream = stream or sys.stderr
        self.mode = mode(quiet, self.stream)
        self.total, self.index, self.unit = total, 0, unit
        self.label, self._started, self._token = "", 0.0, None
        self.context: str | None = None
        """What the runner names a run by instead of its method, e.g. the study's ``iris taylor@5 p=0.5``."""
        self._bar = (tqdm(total=total, desc=f"{unit}s", unit=unit, file=self.stream, dynamic_ncols=True)
                     if self.mode == "bar" else None)

    def start(self, label: str) -> None:
        """Run number ``index + 1`` of ``total``, e.g. ``nn seed 0``, begins."""
        self.index += 1
        self.label, self._started = label, time.perf_counter()
        self._token = _inner.set(self.mode == "bar")
        if self._bar is not None:
            self._bar.set_description(f"{self.unit} {self.index}/{self.total} {label}")

    def finish(self, record: RunRecord, seconds: float | None = None) -> None:
        """The run that :meth:`start` began has ended with ``record``: in ``lines`` mode one line
        ``run i/total label: <outcome> in <wall time>`` (``seconds``, else the time since
        :meth:`start`: a run that ran elsewhere gives its own); in the other modes a run that did
        not finish gets one line ``ntkbench: run i/total label failed: <error>`` (above the bar)."""
        if self._token is not None:
            _inner.reset(self._token)
            self._token = None
        name = f"{self.unit} {self.index}/{self.total} {self.label}"
        if self.mode == "lines":
            seconds = time.perf_counter() - self._started if seconds is None else seconds
            print(f"{name}: {outcome(record)} in {fmt.seconds(seconds)}", file=self.stream, flush=True)
        elif record.evaluation is None:
            tqdm.write(f"ntkbench: {name} {record.status.lower()}: {record.error}", file=self.stream)
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._token is not None:  # a run cut short (an interrupt): its inner bars are gone too
            _inner.reset(self._token)
            self._token = None
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
