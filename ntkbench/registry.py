"""One generic name registry for architectures, methods and tasks (in the style of timm's
``@register_model`` and lm-evaluation-harness's ``Registry``)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
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


class UnknownNameError(KeyError):
    """An unknown registry name; ``str()`` is one line naming the valid choices."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.message = f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(known)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message
