"""One generic name registry for architectures, methods and tasks (in the style of timm's
``@register_model`` and lm-evaluation-harness's ``Registry``)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. Filled by a decorator, read by name.

    Registering a name twice is an error; an unknown name raises a ``KeyError`` subclass whose
    message suggests the closest names and lists all known ones.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(self.kind, name, sorted(self._items))
        return self._items[name]

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items


def did_you_mean(names: Sequence[str], known: Sequence[str]) -> str:
    """``"; did you mean 'epochs'?"`` with the closest of ``known`` to each of ``names`` that has a
    close one (difflib's ratio ≥ 0.6), or ``""`` when none has."""
    close = [m[0] for n in names if (m := difflib.get_close_matches(n, known, n=1))]
    return f"; did you mean {' or '.join(map(repr, dict.fromkeys(close)))}?" if close else ""


def unknown_message(subject: str, names: Sequence[str], known: Sequence[str], listing: str) -> str:
    """One line: ``subject`` with ``{}`` replaced by the quoted ``names``, a :func:`did_you_mean`,
    then ``listing: <known, comma-separated>`` after a separator, e.g.
    ``unknown option 'epoch' for method 'nn'; did you mean 'epochs'? Valid options: epochs, lr``
    or ``unknown task 'nope'. Known tasks: digits, iris``."""
    hint = did_you_mean(names, known)
    return f"{subject.format(', '.join(map(repr, names)))}{hint or '.'} {listing}: {', '.join(known)}"


class UnknownNameError(KeyError):
    """An unknown registry name; ``str()`` is one line naming the valid choices."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.message = unknown_message(f"unknown {kind} {{}}", [name], known, f"Known {kind}s")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message
