"""Numbers in human units: the one place that says how ntkbench shows a time, a memory size, an
accuracy or a count, so the page, the README, the study and the CLI read alike.

Guarantees, for every function here:

- Three significant digits, in fixed point (never ``1e+03``), and the unit is chosen *after*
  rounding: 0.9996 s is ``1.00 s``, never ``1000 ms``; 59.97 s is ``1.00 min``; 1023.7 MB is
  ``1.00 GB``.
- Missing values (``None``, NaN) are :data:`MISSING`; infinities are ``∞`` (``−∞``).
- Accuracies are fractions in, percent out, with one decimal; the spread over seeds is shown
  only where there is more than one seed (one seed has no spread to show).
- Whole numbers print as integers, with thousands separators (``12,345``): an ``n_train`` that
  went through a float column still reads ``100``.
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["MISSING", "significant", "seconds", "megabytes", "percent", "accuracy", "seeds", "integer"]

MISSING = "—"
# (unit, seconds per unit, the first value, in the unit, that belongs to the next unit)
_TIME_UNITS = (("ms", 1e-3, 1000.0), ("s", 1.0, 60.0), ("min", 60.0, 60.0), ("h", 3600.0, math.inf))
_MEMORY_UNITS = (("MB", 1.0, 1024.0), ("GB", 1024.0, 1024.0), ("TB", 1024.0**2, math.inf))


def _special(x: float | None) -> str | None:
    """The text of a value that is not a finite number, else None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return None


def significant(x: float, digits: int = 3, trim: bool = False) -> str:
    """``x`` rounded to ``digits`` significant digits in fixed point: 0.0123 → ``0.0123``,
    1.5 → ``1.50``, 1234.5 → ``1235`` (digits left of the point are never rounded away).
    ``trim`` drops trailing zeros and a trailing point (``1.50`` → ``1.5``, ``2.00`` → ``2``)."""
    special = _special(x)
    if special is not None:
        return special
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    if decimals and len(text.lstrip("-").replace(".", "").lstrip("0")) > digits:
        # rounding carried into a new digit (9.996 → "10.00"): one decimal fewer
        text = f"{x:.{decimals - 1}f}"
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "-0.0") else text


def _scaled(x: float | None, units: tuple[tuple[str, float, float], ...], trim: bool) -> str:
    special = _special(x)
    if special is not None:
        return special
    if x == 0:
        return f"0 {units[0][0]}"
    for i, (unit, scale, limit) in enumerate(units):
        # each limit is one of the next unit: reaching it by rounding (59.97 s) means 1.00 of it
        value = x / scale if i == 0 or abs(x / scale) >= 1 else math.copysign(1.0, x)
        text = significant(value, trim=trim)
        if abs(float(text)) < limit:
            return f"{text} {unit}"
    raise AssertionError("the last unit has no limit")


def seconds(s: float | None, trim: bool = False) -> str:
    """A duration in ms below 1 s, s below 1 min, min below 1 h, else h: ``999 ms``,
    ``1.00 s``, ``12.3 s``, ``2.50 min``, ``1.20 h``. ``trim`` (for axis ticks): ``1 s``, ``2.5 min``."""
    return _scaled(s, _TIME_UNITS, trim)


def megabytes(mb: float | None, trim: bool = False) -> str:
    """A memory size given in MB (2**20 bytes) as MB below 1024 MB, else GB, else TB:
    ``0.0500 MB``, ``153 MB``, ``1.32 GB``, ``13.2 GB``."""
    return _scaled(mb, _MEMORY_UNITS, trim)


def percent(fraction: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage number without the sign: 0.9667 → ``96.7``."""
    special = _special(fraction)
    if special is not None:
        return special
    text = f"{100 * fraction:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def accuracy(mean: float | None, std: float | None = None, n_seeds: int = 1) -> str:
    """Mean test accuracy in percent, with ``± std`` (in points) where there are two seeds or
    more: ``96.7 ± 0.8``, ``86.0 ± 0.0`` (seeds that agree), ``96.7`` (one seed). A spread that
    is not zero but rounds to it reads ``± <0.1``; a missing spread (NaN) is left out."""
    text = percent(mean)
    if n_seeds < 2 or std is None or math.isnan(std):
        return text
    spread = percent(std)
    if spread == "0.0" and std > 0:
        spread = "<0.1"
    return f"{text} ± {spread}"


def seeds(n: int) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{integer(n)} seed" + ("" if n == 1 else "s")


def integer(n: float | int | None) -> str:
    """A whole number as an integer with thousands separators (``100``, ``12,345``), also when
    it comes as a float (``100.0``); a number that is not whole keeps three significant digits."""
    special = _special(n)
    if special is not None:
        return special
    if isinstance(n, Real) and float(n).is_integer():
        return f"{int(n):,}"
    return significant(float(n))
