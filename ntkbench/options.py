"""Checking option values at the boundary: types from annotations, ranges from declarations.

Every option a user can set (``--set task.X``, ``arch.X``, ``<method>.X``) goes through
:func:`check_type`; options with a valid range declare it with :func:`check_range` in their
owner's constructor (a method's ``__post_init__``, an architecture builder). Each failure is a
one-line ``ValueError`` that names the option, says what is expected and what was given.
"""

from __future__ import annotations

import math
import types
import typing


def check_type(name: str, value: object, annotation: object) -> object:
    """Return ``value`` if it fits ``annotation`` (int, float, str, bool, Literal, X | None);
    ints are accepted for floats (and returned as floats). Otherwise raise a ValueError."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return value
        if typing.get_origin(kind) is typing.Literal and value in typing.get_args(kind):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind in (int, str, bool) and type(value) is kind:
            return value
    expected = " or ".join(_describe(k) for k in allowed)
    raise ValueError(f"option {name} must be {expected}, got {value!r}")


def _describe(kind: object) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def check_range(name: str, value: float | int | None, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise a one-line ValueError unless ``value`` is None or a finite number in the interval
    from ``low`` to ``high`` (closed unless ``low_open``/``high_open``; None: unbounded)."""
    if value is None:
        return
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lower = "" if low is None else ("> " if low_open else ">= ") + f"{low:g}"
        upper = "" if high is None else ("< " if high_open else "<= ") + f"{high:g}"
        bounds = " and ".join(b for b in (lower, upper) if b) or "finite"
        raise ValueError(f"option {name} must be a finite number {bounds}, got {value!r}")
