"""Stopping at safe points: SIGINT, SIGTERM and SIGHUP only set a flag; the loops that take long
(the grid's runs, the training steps, the kernel's tiles and blocks, a sync's records) call
:func:`check` at their boundaries, which raises :class:`Interrupted` there. So a signal never
lands inside a store write, and the current run still ends KILLED.

A second signal while the first is pending raises at once (a user who presses Ctrl-C twice
wants out now). Outside :func:`handling` (a notebook, a library call) nothing is installed and
:func:`check` costs one global read.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
"""The shell's convention: 128 + the signal's number."""

_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """A signal, raised at a safe point; ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} ({signal.Signals(signum).name})")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)


def _handle(signum: int, frame: object) -> None:
    global _pending
    if _pending is not None:  # the second signal: out now
        raise Interrupted(signum)
    _pending = signum


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived since :func:`handling` began."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextmanager
def handling() -> Iterator[None]:
    """Within the block (main thread only), SIGINT, SIGTERM and SIGHUP set the flag that
    :func:`check` reads; the previous handlers come back after it."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    _pending = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending = None
