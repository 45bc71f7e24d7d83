"""The study's declared grid: the variants (a method with its options) and the label noise,
n_train, seeds and training options they run at.

No method is named here; the grid reads what methods declare. A method that linearizes another
(:func:`ntkbench.methods.linearizes`) gets one variant per epoch it is taken at (its option
:data:`ntkbench.methods.AT_EPOCH`); every other method one variant. The training options are
data of the grid, applied to each method that has the option. Variants run in
:func:`display_order`, so a network runs before the methods that linearize it and share its
test outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ntkbench.methods import AT_EPOCH, METHODS, linearizes, option_names

Options = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Variant:
    """One column of the study: a method with its options, e.g. ``taylor@5``."""

    label: str
    method: str
    options: Options = ()


@dataclass(frozen=True)
class StudyGrid:
    """The declared grid. ``training`` holds the options every method that has them runs with
    (without the method prefix); ``task_options``/``teacher_options`` are task options without
    the ``task.`` prefix (``teacher`` gets ``arch`` = the study's arch unless given)."""

    variants: tuple[Variant, ...]
    label_noise: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    n_trains: tuple[int, ...] = (100, 200, 400)
    seeds: tuple[int, ...] = (0, 1, 2)
    training: Options = (("epochs", 40), ("diagnostics_every", 2))
    teacher: bool = True
    task_options: Options = ()
    teacher_options: Options = ()

    def method_options(self, variant: Variant) -> dict[str, Any]:
        """The training options that ``variant``'s method has, then the variant's own options."""
        names = option_names(variant.method)
        return {**{k: v for k, v in self.training if k in names}, **dict(variant.options)}


def target(method: str) -> str | None:
    """The method that ``method`` linearizes, or None; None also for a method that is not
    registered (any more), as a stored run's may be."""
    return linearizes(method) if method in METHODS else None


def _linearized(names: Iterable[str]) -> set[str]:
    """The methods that a registered method or one of ``names`` linearizes."""
    return {target(m) for m in {*METHODS.list(), *names}} - {None}


def display_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in the study's order: each method that another linearizes, followed by those
    of ``methods`` that linearize it, then the rest; by name within each group (the registry's
    order)."""
    names = sorted(set(methods))
    out: list[str] = []
    for linearized in [m for m in names if m in _linearized(names)]:
        out += [linearized, *(m for m in names if target(m) == linearized)]
    return out + [m for m in names if m not in out]


def reference(methods: Iterable[str]) -> str | None:
    """The study's linearized network: the first of ``methods``, in :func:`display_order`, that a
    method linearizes (``nn``: ``taylor`` and ``entk`` linearize it); None when there is none."""
    names = set(methods)
    return next((m for m in display_order(names) if m in _linearized(names)), None)


def make_grid(epochs: int = 40, at_epochs: tuple[int, ...] = (0, 1, 5), diagnostics_every: int = 2,
              methods: Iterable[str] | None = None, **fields: Any) -> StudyGrid:
    """Every registered method (or those of ``methods``) in :func:`display_order`; each method
    that linearizes another at each of ``at_epochs`` below ``epochs`` and at the end of training
    (``epochs``, labelled ``@end``). ``epochs`` and ``diagnostics_every`` are the grid's training
    options; other :class:`StudyGrid` fields pass through."""
    ks = sorted({k for k in at_epochs if k < epochs} | {epochs})
    variants: list[Variant] = []
    for m in display_order(METHODS.list() if methods is None else methods):
        if linearizes(m) is None:
            variants.append(Variant(m, m))
        else:
            variants += [Variant(f"{m}@end" if k == epochs else f"{m}@{k}", m, ((AT_EPOCH, k),)) for k in ks]
    return StudyGrid(tuple(variants), training=(("epochs", epochs), ("diagnostics_every", diagnostics_every)),
                     **fields)


STUDY_GRID = make_grid()
QUICK_GRID = make_grid(epochs=5, label_noise=(0.0, 0.5), n_trains=(100,), seeds=(0,), diagnostics_every=1)
