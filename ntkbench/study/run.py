"""Running a study: every variant of the grid on the task and on ``teacher``, through
:func:`ntkbench.runner.run`, each run tagged with the study and its variant.

Tags: :data:`STUDY_TAG` (the task), :data:`STUDY_ID_TAG` (``<task>-<UTC time>``, so the latest
study sorts last), :data:`VARIANT_TAG` (the variant's label, e.g. ``taylor@end``) and, in a study
of several architectures, :data:`ARCH_TAG` (the architecture's label). Label noise is swept at
the largest n_train only; the n_train sweep runs at label noise 0; flips run at the grid's
``flip_n_trains``, at label noise 0.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench.distributed import EXECUTORS
from ntkbench.study.grid import StudyArch, StudyGrid, study_grid

if TYPE_CHECKING:
    from ntkbench.distributed.grid import RayOptions
    from ntkbench.record import RunRecord

STUDY_TAG, STUDY_ID_TAG, VARIANT_TAG = "ntkbench_study", "ntkbench_study_id", "ntkbench_study_variant"
ARCH_TAG = "ntkbench_study_arch"
"""The label of the run's :class:`~ntkbench.study.grid.StudyArch`, in a study of several."""
LABEL_NOISE, FLIP, SIZE = "label_noise", "flip", "size"
"""The task options the study sets: label noise (swept), flip augmentation and the input side."""
DEFINING = ("readout", "norm")
"""Architecture options that define a study's architectures (GAP or Flatten, normalization or
none): ``--set arch.readout`` would turn ``cnn-flatten`` into a GAP network under its label."""


def _task_options(name: str, task: str, arch: str, grid: StudyGrid) -> dict[str, Any]:
    if name == "teacher" and task != "teacher":
        return {"arch": arch, **dict(grid.teacher_options)}
    return dict(grid.task_options)


def run_study(task: str, arch: str = "mlp", arch_options: dict[str, Any] | None = None, quick: bool = False,
              tracking_uri: str | None = None, grid: StudyGrid | None = None, device: str = "auto",
              tracking: str = "mlflow", outbox: str | None = None, quiet: bool = False, executor: str = "local",
              ray_address: str | None = None, ray_options: RayOptions | None = None,
              kernel_cache: str | Path | None = None, kernel_cache_max_gb: float | None = None) -> list[RunRecord]:
    """Run ``grid`` (default: the task's, :func:`~ntkbench.study.grid.study_grid` with ``quick``)
    on ``task`` and ``teacher``: one :func:`ntkbench.runner.run` per (task, architecture,
    variant, label noise or flips), all tagged with one study id. The architectures are the
    grid's ``archs`` (``arch`` and ``arch_options`` when it has none; with them, an
    ``arch_options`` entry goes to each architecture that has that option). n_train values are
    capped to the task's training set size. The variants
    run in the grid's order and share one store of test outputs, so a linearization compares
    its outputs with the run of the network it linearizes. ``tracking`` and ``outbox`` are the
    runner's. Progress (:mod:`ntkbench.progress`) counts over the whole study, and names each run
    by task, variant, label noise, seed and n_train; nothing with ``quiet``. ``kernel_cache`` is
    the runner's; its eviction to ``kernel_cache_max_gb`` runs once, after the whole study.

    ``executor`` ``ray`` (with ``ray_address`` and ``ray_options``, as in the runner) checks every
    variant's grid first, then sends all the study's runs to the cluster at once: a linearization
    waits for the network run it linearizes, every other run for a free worker."""
    from ntkbench import runner
    from ntkbench import tasks as task_lib
    from ntkbench.arch import resolve
    from ntkbench.progress import RunProgress

    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor != "ray" and (ray_address is not None or ray_options is not None):
        raise ValueError("ray_address and ray_options are for executor 'ray'; the local executor runs in this process")
    if executor == "ray":
        from ntkbench.distributed.grid import check

        check(device, ray_options)
    grid = grid or study_grid(task, quick)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    tags = {STUDY_TAG: task, STUDY_ID_TAG: f"{task}-{stamp}"}
    outputs: dict[tuple, Any] = {}
    names = (task, "teacher") if grid.teacher and task != "teacher" else (task,)
    archs = grid.archs or (StudyArch(arch, arch),)
    given = arch_options or {}
    accepted = {a: set(resolve(a.arch)) if grid.archs else set(given) for a in archs}
    # Each architecture's options: its own, then those of arch_options it has (all of them alone).
    aopts = {a: {**dict(a.options), **{k: v for k, v in given.items() if k in accepted[a]}} for a in archs}
    if grid.archs:
        unknown = sorted(set(given) - set().union(*accepted.values()))
        if unknown:
            raise ValueError(f"arch.{unknown[0]} is an option of none of the study's architectures "
                             f"({', '.join(sorted({a.arch for a in archs}))}); see their options with ntkbench list")
        fixed = sorted(set(given) & set(DEFINING))
        if fixed:
            raise ValueError(f"arch.{fixed[0]} defines the study's architectures "
                             f"({', '.join(a.label for a in archs)}) and cannot be set for all of them")
    plan = []  # (task, arch, variant, label noise, options, n_trains, tags): one runner.run call each
    for name in names:
        topts = _task_options(name, task, arch, grid)
        common = {k: v for k, v in topts.items() if k != "n_train"}
        size = len(task_lib.get(name, **common).train[1])
        for a in archs:  # a bad size fails here, before any run
            if a.size is not None:
                task_lib.get(name, **{**common, SIZE: a.size})
        n_trains = tuple(sorted({min(n, size) for n in grid.n_trains}))
        flips = tuple(sorted({min(n, size) for n in grid.flip_n_trains}))
        for a in archs:
            atags = {**tags, ARCH_TAG: a.label} if grid.archs else tags
            for variant in grid.variants:
                m = variant.method
                options = {**{f"task.{k}": v for k, v in topts.items()},
                           **({f"task.{SIZE}": a.size} if a.size is not None else {}),
                           **{f"arch.{k}": v for k, v in aopts[a].items()},
                           **{f"{m}.{k}": v for k, v in grid.method_options(variant).items()}}
                vtags = {**atags, VARIANT_TAG: variant.label}
                plan += [(name, a.arch, variant, p, {**options, f"task.{LABEL_NOISE}": p},
                          n_trains if p == 0 else n_trains[-1:], vtags) for p in grid.label_noise]
                if flips:
                    plan.append((name, a.arch, variant, 0.0, {**options, f"task.{LABEL_NOISE}": 0.0, f"task.{FLIP}": True},
                                 flips, vtags))
    if executor == "ray":
        from ntkbench.distributed import grid as ray_grid

        cache = Path(kernel_cache) if kernel_cache is not None else None
        plans = [runner.prepare(name, variant.method, a, grid.seeds, options, sizes, tags=vtags,
                                context=_context(name, vtags, p, options), kernel_cache=cache)
                 for name, a, variant, p, options, sizes, vtags in plan]
        records = ray_grid.run_plans(plans, device, tracking, tracking_uri, outbox, ray_address, ray_options, outputs,
                                     quiet)
        runner.evict(cache, kernel_cache_max_gb)
        return records
    records: list[RunRecord] = []
    with RunProgress(sum(len(sizes) * len(grid.seeds) for *_, sizes, _ in plan), quiet) as progress:
        for name, a, variant, p, options, sizes, vtags in plan:
            progress.context = _context(name, vtags, p, options)
            records += runner.run(task=name, method=variant.method, arch=a, seeds=grid.seeds, device=device,
                                  options=options, tracking_uri=tracking_uri, n_trains=sizes, tags=vtags,
                                  nn_outputs=outputs, tracking=tracking, outbox=outbox, progress=progress,
                                  kernel_cache=kernel_cache)
    runner.evict(Path(kernel_cache) if kernel_cache is not None else None, kernel_cache_max_gb)
    return records


def _context(name: str, tags: dict[str, str], p: float, options: dict[str, Any]) -> str:
    """How progress names a group of runs: ``mnist5k cnn-gap taylor@3 p=0 flip``."""
    arch = f" {tags[ARCH_TAG]}" if ARCH_TAG in tags else ""
    return f"{name}{arch} {tags[VARIANT_TAG]} p={p:g}" + (" flip" if options.get(f"task.{FLIP}") else "")
