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
from dataclasses import dataclass, replace
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
class StudyArch:
    """One architecture of a study that compares several: its ``name`` (e.g. ``cnn-gap``), the
    registered ``arch`` and its ``options``, and ``size``, the input side its runs get as the
    task option ``size`` (None: the task's own; a downsampled input keeps an exact GAP kernel,
    O((H·W)²) per pair, affordable)."""

    name: str
    arch: str
    options: Options = ()
    size: int | None = None

    @property
    def label(self) -> str:
        """The report's name for it: ``name``, with ``-size`` for a downsampled input
        (``cnn-gap-7``), so that ``grid.size=14`` relabels what it changes."""
        return self.name if self.size is None else f"{self.name}-{self.size}"


@dataclass(frozen=True)
class StudyGrid:
    """The declared grid. ``training`` holds the options every method that has them runs with
    (without the method prefix); ``task_options``/``teacher_options`` are task options without
    the ``task.`` prefix (``teacher`` gets ``arch`` = the study's arch unless given).

    ``archs``: the architectures the study compares, each run with every variant (empty: the
    one architecture the study is given). ``flip_n_trains``: the n_train values (images drawn,
    before mirroring) at which every variant also runs with the task option ``flip`` (each
    training image and its mirror image), at label noise 0."""

    variants: tuple[Variant, ...]
    label_noise: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    n_trains: tuple[int, ...] = (100, 200, 400)
    seeds: tuple[int, ...] = (0, 1, 2)
    training: Options = (("epochs", 40), ("diagnostics_every", 2))
    teacher: bool = True
    task_options: Options = ()
    teacher_options: Options = ()
    archs: tuple[StudyArch, ...] = ()
    flip_n_trains: tuple[int, ...] = ()

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
              methods: Iterable[str] | None = None, end: bool = True, training: Options = (),
              method_options: dict[str, Options] | None = None, **fields: Any) -> StudyGrid:
    """Every registered method (or those of ``methods``) in :func:`display_order`; each method
    that linearizes another at each of ``at_epochs`` below ``epochs`` and, with ``end``, at the
    end of training (``epochs``, labelled ``@end``). ``epochs``, ``diagnostics_every`` and
    ``training`` are the grid's training options; ``method_options`` adds options to every
    variant of a method; other :class:`StudyGrid` fields pass through."""
    ks = sorted({k for k in at_epochs if k < epochs} | ({epochs} if end else set()))
    variants: list[Variant] = []
    for m in display_order(METHODS.list() if methods is None else methods):
        own = (method_options or {}).get(m, ())
        if linearizes(m) is None:
            variants.append(Variant(m, m, own))
        else:
            variants += [Variant(f"{m}@end" if k == epochs else f"{m}@{k}", m, ((AT_EPOCH, k), *own)) for k in ks]
    return StudyGrid(tuple(variants), training=(("epochs", epochs), ("diagnostics_every", diagnostics_every),
                                                *training), **fields)


STUDY_GRID = make_grid()
QUICK_GRID = make_grid(epochs=5, label_noise=(0.0, 0.5), n_trains=(100,), seeds=(0,), diagnostics_every=1)

IMAGE_ARCHS = (
    StudyArch("cnn-flatten", "cnn", (("depth", 3), ("channels", 32), ("readout", "flatten"))),
    StudyArch("cnn-flatten", "cnn", (("depth", 3), ("channels", 32), ("readout", "flatten")), size=7),
    StudyArch("cnn-gap", "cnn", (("depth", 3), ("channels", 32), ("readout", "gap")), size=7),
    StudyArch("wrn-gap", "wrn", (("depth", 10), ("widen", 1), ("norm", "none")), size=7),
)
"""The image study's networks: a depth-3 CNN with a Flatten readout at 28×28, and at 7×7 a Flatten
CNN, a GAP CNN (the same network with the other readout, for Arora et al.'s comparison at one
input size) and WRN-10-1 without normalization (neural-tangents' README WideResnet, whose exact
kernel exists). 7×7 is mnist5k averaged over 4×4 blocks: an exact GAP kernel costs O((H·W)²)
per pair, 256× less than at 28×28 (10.6k pairs/s for the depth-3 GAP CNN at 7×7 against 496 at
14×14 on 2 CPU cores)."""

IMAGE_GRID = make_grid(
    epochs=30, at_epochs=(0, 4, 14), end=False, diagnostics_every=4,
    training=(("loss", "cross_entropy"), ("lr", 1.0), ("batch_size", 16)), method_options={"entk": (("centered", True),)},
    label_noise=(0.0,), n_trains=(50, 100, 200), seeds=(0, 1, 2), teacher=False, task_options=(("n_test", 500),),
    archs=IMAGE_ARCHS, flip_n_trains=(100,))
"""The study on images (``make study TASK=mnist5k``): :data:`IMAGE_ARCHS`, each with nn,
taylor and entk at epochs 0, 4 and 14 of 30 (0, 13 and 47% of training: 4 and 14 bracket Fort
et al. 2020's 15–45%; entk ``centered``, kernel regression with the kernel of θ_k alone, as
theirs), ntk and nngp; n_train 50, 100, 200 and 3 seeds, 500 test images; every
variant also with flips at n_train 100. Networks train with cross-entropy, SGD lr 1.0 (NTK
parameterization), batch 16: with MSE at this step count the Flatten CNN stayed near chance.
n_train is what the kernels allow in the 45-minute CPU budget (README, "The image study")."""

STUDY_GRIDS = {"mnist5k": IMAGE_GRID}
"""The grid ``ntkbench study`` runs on a task, where it is not :data:`STUDY_GRID`."""


def study_grid(task: str, quick: bool = False) -> StudyGrid:
    """The grid of ``task`` (:data:`STUDY_GRIDS`, else :data:`STUDY_GRID`); ``quick``:
    :data:`QUICK_GRID`, or the task's grid with one seed at its middle n_train (its flips, if it
    has any, there too)."""
    if task not in STUDY_GRIDS:
        return QUICK_GRID if quick else STUDY_GRID
    grid = STUDY_GRIDS[task]
    if not quick:
        return grid
    middle = grid.n_trains[len(grid.n_trains) // 2]
    return replace(grid, seeds=grid.seeds[:1], n_trains=(middle,), flip_n_trains=(middle,) if grid.flip_n_trains else ())


GRID_OPTIONS = ("n_trains", "seeds", "flip_n_trains", "label_noise", "size")
"""What ``ntkbench study --set grid.NAME=VALUE`` changes: the sweeps, and ``size``, the input
side of every architecture that runs on a downsampled input."""


def configure(grid: StudyGrid, settings: dict[str, Any]) -> StudyGrid:
    """``grid`` with ``grid.NAME`` settings (:data:`GRID_OPTIONS`; a sweep is a list or one
    number) and ``task.NAME`` settings (added to its task options) applied. Anything else, a
    value that is not a number, and ``grid.size`` on a grid without downsampled architectures
    are a ``ValueError`` naming what is expected."""
    changes: dict[str, Any] = {}
    tasks = dict(grid.task_options)
    for key, value in settings.items():
        prefix, _, name = key.partition(".")
        if prefix == "task":
            tasks[name] = value
            continue
        if prefix != "grid" or name not in GRID_OPTIONS:
            raise ValueError(f"unknown study setting {key!r}; expected task.NAME or grid.NAME with NAME one of "
                             f"{', '.join(GRID_OPTIONS)}")
        values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        kind = float if name == "label_noise" else int
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and kind(v) == v for v in values) \
                or (name == "size" and len(values) != 1):
            raise ValueError(f"grid.{name} takes {'one' if name == 'size' else 'a list of'} "
                             f"{'number' if kind is float else 'integer'}{'' if name == 'size' else 's'}, got {value!r}")
        if name == "size":
            if not any(a.size is not None for a in grid.archs):
                raise ValueError("grid.size sets the input side of downsampled architectures; this grid has none")
            changes["archs"] = tuple(replace(a, size=int(values[0])) if a.size is not None else a for a in grid.archs)
        else:
            changes[name] = tuple(kind(v) for v in values)
    return replace(grid, task_options=tuple(tasks.items()), **changes)
