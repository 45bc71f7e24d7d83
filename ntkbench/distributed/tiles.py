"""The tiles of one kernel as Ray tasks over every GPU (or CPU) of a cluster
(``tiled_kernel(..., executor="ray")``; Shankar et al. 2020 pulled (row block, column block)
tiles from a queue, one process per GPU, upper triangle only).

Guarantees, given the tiles ``tiled_kernel`` lists (upper ones only for a symmetric kernel):

- Each tile task computes its block with the local executor's ``_compute_with_retry`` on the same
  rows with the same batch and thread count, so the kernel is bitwise equal to the local one (on
  the same kind of device, BLAS and CPU; an out-of-memory retry that halves a task's batch makes
  that tile agree to rounding only, as locally). cov1 and cov2 are written by the tile that writes
  them last in the local loop.
- With ``out``, a task writes its block into the .npy files with ``os.pwrite`` at the block's
  offsets and fsyncs them before it returns: byte ranges, not memory-mapped pages, so workers on
  other machines of a shared filesystem never write back each other's stale page halves. Without
  ``out`` the block comes back through the object store.
- The driver alone writes the manifest, after a task has returned (one writer, no races): a tile in
  the manifest is on disk, a retried or re-run tile is skipped, a crashed job resumes at the
  missing tiles. Ray reruns a task whose worker died up to ``max_retries`` times; a tile whose
  task raises stops the submission, the tiles in flight finish and are recorded, and the first
  error is raised with a note saying how many tiles are safe.
- A task requests ``gpus`` GPUs (fractional allowed; default one on CUDA, none otherwise) and
  ``cpus`` CPUs, and computes on ``cuda`` (the GPU Ray exposes through CUDA_VISIBLE_DEVICES) or
  on the CPU with ``max(1, floor(cpus))`` torch threads.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ntkbench import progress, signals
from ntkbench.arch.kernel import Kernel
from ntkbench.arch.tiled import _compute_with_retry, _write
from ntkbench.distributed import connect

if TYPE_CHECKING:
    from ntkbench.arch.serial import Serial
    from ntkbench.arch.tiled import _Store

__all__ = ["Placement", "RayTasks", "probe_tile", "run_tiles"]


@dataclass(frozen=True)
class RayTasks:
    """How each task asks Ray for resources. gpus: GPUs per task (None: 1 on CUDA, 0 on the CPU;
    fractions share a GPU). cpus: CPUs per task (also the CPU path's torch threads). max_retries:
    reruns of a task whose worker died. max_in_flight: tasks submitted at once (None: twice the
    tasks the cluster can run at once, so that no worker waits for the driver)."""

    gpus: float | None = None
    cpus: float = 1.0
    max_retries: int = 3
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        if not ((self.gpus is None or self.gpus >= 0) and self.cpus >= 0 and self.max_retries >= 0
                and (self.max_in_flight is None or self.max_in_flight >= 1)):
            raise ValueError(f"RayTasks need gpus >= 0 (or None), cpus >= 0, max_retries >= 0 and max_in_flight >= 1 "
                             f"(or None), got {self}")

    def resources(self, device_type: str) -> dict[str, float]:
        """``num_gpus`` and ``num_cpus`` of a task computing on ``device_type``."""
        gpus = (1.0 if device_type == "cuda" else 0.0) if self.gpus is None else self.gpus
        return {"num_gpus": gpus, "num_cpus": self.cpus}

    def slots(self, ray, device_type: str) -> int:
        """How many such tasks the connected cluster can run at once (at least 1)."""
        total = ray.cluster_resources()
        need = self.resources(device_type)
        slots = [total.get(key, 0.0) / need[name] for key, name in (("GPU", "num_gpus"), ("CPU", "num_cpus"))
                 if need[name] > 0]
        return max(1, int(min(slots))) if slots else 1

    def in_flight(self, ray, device_type: str) -> int:
        """``max_in_flight``, or twice ``slots``."""
        return self.max_in_flight if self.max_in_flight is not None else 2 * self.slots(ray, device_type)


@dataclass(frozen=True)
class Placement:
    """Where a tile ran: its index, (row, column) offsets, Ray node, worker pid, the GPU ids Ray
    gave it (``ray.get_gpu_ids()``), its CUDA_VISIBLE_DEVICES, the batch that fitted and the
    seconds it took."""

    tile: int
    offsets: tuple[int, int]
    node: str
    pid: int
    gpu_ids: tuple[int, ...]
    cuda_visible_devices: str | None
    batch: int
    seconds: float


@dataclass(frozen=True)
class _NpyFile:
    """Where a .npy file's data starts and its 2-D (rows, columns) layout, C order."""

    path: str
    offset: int
    columns: int
    itemsize: int

    def write(self, fd: int, block: np.ndarray, i: int, j: int) -> None:
        """block into rows i.., columns j.. (a 1-D block: elements i..), one pwrite per row."""
        if block.ndim == 1:
            os.pwrite(fd, np.ascontiguousarray(block).tobytes(), self.offset + i * self.itemsize)
            return
        for r, row in enumerate(np.ascontiguousarray(block)):
            os.pwrite(fd, row.tobytes(), self.offset + ((i + r) * self.columns + j) * self.itemsize)


@dataclass(frozen=True)
class _Tile:
    """One task's work: tile ``index`` at rows i.., columns j.. (``same``: a diagonal tile of a
    symmetric kernel, computed from one row block; ``mirror``: also write its transpose), what it
    writes of cov1 and cov2, and how it computes."""

    index: int
    i: int
    j: int
    same: bool
    mirror: bool
    cov1: bool
    cov2: bool
    dtype: torch.dtype
    device_type: str
    batch: int
    fused: bool
    threads: int


def _tile_task(arch: Serial, xa: torch.Tensor, xb: torch.Tensor, tile: _Tile, files: dict[str, _NpyFile] | None):
    """Runs in a Ray worker: the tile's block, written into ``files`` (returns the Placement) or
    returned with it (``files=None``)."""
    import ray

    start = time.perf_counter()
    device = torch.device("cuda") if tile.device_type == "cuda" else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(tile.threads)
    xa = xa.to(device)
    xb = None if tile.same else xb.to(device)
    k, batch = _compute_with_retry(arch, xa, xb, tile.dtype, tile.batch, tile.fused, f"tile ({tile.i}, {tile.j})")
    placement = Placement(tile.index, (tile.i, tile.j), ray.get_runtime_context().get_node_id(), os.getpid(),
                          tuple(int(g) for g in ray.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES"), batch,
                          time.perf_counter() - start)
    if files is None:
        return placement, k.nngp.cpu(), k.ntk.cpu(), k.cov1.cpu(), k.cov2.cpu()
    blocks = {"nngp": k.nngp.cpu().numpy(), "ntk": k.ntk.cpu().numpy()}
    for name, f in files.items():
        if (name == "cov1" and not tile.cov1) or (name == "cov2" and not tile.cov2):
            continue
        fd = os.open(f.path, os.O_WRONLY)
        try:
            if name in blocks:
                f.write(fd, blocks[name], tile.i, tile.j)
                if tile.mirror:
                    f.write(fd, blocks[name].T, tile.j, tile.i)
            else:
                f.write(fd, getattr(k, name).cpu().numpy(), tile.i if name == "cov1" else tile.j, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    return placement


def run_tiles(arch: Serial, x1: torch.Tensor, x2: torch.Tensor, symmetric: bool, tiles: list[tuple[int, int]],
              todo: list[int], tile: int, *, dtype: torch.dtype, device: torch.device, batch: int, fused: bool,
              arrays: dict[str, torch.Tensor], store: _Store | None, tasks: RayTasks) -> list[Placement]:
    """Compute tiles ``todo`` of ``tiles`` as Ray tasks (module doc) into ``store``'s files, or
    into ``arrays`` when there is no store; returns where each ran, in completion order."""
    ray = connect()
    remote = ray.remote(_tile_task).options(max_retries=tasks.max_retries, **tasks.resources(device.type))
    last_i, last_j = tiles[-1][0], max(j for _, j in tiles)

    def covs(i: int, j: int) -> tuple[bool, bool]:
        """Whether tile (i, j) writes cov1 and cov2: the local loop's last writer of each does."""
        return j == last_j, i == (j if symmetric else last_i)

    arch_ref = ray.put(arch)  # serialized once, not with every task
    # Each needed row block is put once (a clone: a view would carry its whole storage along).
    starts1 = {tiles[t][0] for t in todo} | ({tiles[t][1] for t in todo} if symmetric else set())
    rows1 = {i: ray.put(x1[i:i + tile].detach().cpu().clone()) for i in sorted(starts1)}
    rows2 = rows1 if symmetric else {j: ray.put(x2[j:j + tile].detach().cpu().clone())
                                     for j in sorted({tiles[t][1] for t in todo})}
    files = None if store is None else {name: _NpyFile(str(store.root / f"{name}.npy"), m.offset,
                                                       m.shape[1] if m.ndim == 2 else 1, m.itemsize)
                                        for name, m in store.maps.items()}
    threads = max(1, math.floor(tasks.cpus))

    def submit(t: int):
        i, j = tiles[t]
        same = symmetric and i == j
        spec = _Tile(t, i, j, same, symmetric and not same, *covs(i, j), dtype=dtype, device_type=device.type,
                     batch=batch, fused=fused, threads=threads)
        return remote.remote(arch_ref, rows1[i], rows2[j], spec, files)

    placements: list[Placement] = []
    for t, result in progress.steps(_completions(ray, submit, todo, tasks.in_flight(ray, device.type), tiles, store),
                                    "kernel tiles", total=len(todo), hide=len(todo) < 2):
        if files is None:
            placement, nngp, ntk, cov1, cov2 = result
            i, j = tiles[t]
            _write(arrays, Kernel(nngp, ntk, cov1, cov2, "none"), i, j, symmetric and i != j, *covs(i, j))
        else:
            placement = result
        if store is not None:
            store.record(t)
        placements.append(placement)
    return placements


def _completions(ray, submit, todo: list[int], in_flight: int, tiles: list[tuple[int, int]], store: _Store | None):
    """Yield (tile, result) as tasks finish, with at most ``in_flight`` submitted. After a task
    raises, nothing more is submitted; the tiles in flight finish and are yielded, then the first
    error is raised with a note. A signal (``signals.check``) cancels the tasks in flight."""
    queue, pending, error, done = iter(todo), {}, None, 0
    while True:
        while error is None and len(pending) < in_flight and (t := next(queue, None)) is not None:
            pending[submit(t)] = t
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        try:
            signals.check()
        except signals.Interrupted:
            for ref in pending:
                ray.cancel(ref)
            raise
        for ref in ready:
            t = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 (Ray wraps the task's error; it is raised below)
                if error is None:
                    error = (t, e)
                continue
            done += 1
            yield t, result
    if error is not None:
        t, e = error
        where = f"recorded in {store.root / 'manifest.json'}; rerun with the same out to resume" if store else \
            "lost (no out directory)"
        e.add_note(f"tiled_kernel: tile {t} at {tiles[t]} failed; {done} of {len(todo)} tiles of this run finished, "
                   f"{where}")
        raise e


def _probe_task(arch: Serial, input_shape: tuple[int, ...], dtype: torch.dtype, device_type: str, fused: bool,
                memory_fraction: float, gpus: float, cpus: float) -> int:
    """Runs in a Ray worker: ``auto_tile`` on its device with its share of the memory."""
    import ray

    from ntkbench.arch.tiled import auto_tile

    if device_type == "cuda":
        share = min(1.0, gpus) if gpus > 0 else 1.0
    else:
        node = ray.get_runtime_context().get_node_id()
        total = next((n["Resources"].get("CPU", 1.0) for n in ray.nodes() if n["NodeID"] == node), 1.0)
        share = min(1.0, cpus / total) if cpus > 0 else 1.0
    device = torch.device("cuda") if device_type == "cuda" else torch.device("cpu")
    return auto_tile(arch, input_shape, dtype, device, fused, memory_fraction * share)


def probe_tile(arch: Serial, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, fused: bool,
               memory_fraction: float, tasks: RayTasks) -> int:
    """The automatic tile side measured by one task with the tiles' resources on a worker (the
    driver may have no GPU): ``auto_tile`` with the task's share of ``memory_fraction``."""
    ray = connect()
    resources = tasks.resources(device.type)
    remote = ray.remote(_probe_task).options(max_retries=tasks.max_retries, **resources)
    return ray.get(remote.remote(arch, input_shape, dtype, device.type, fused, memory_fraction,
                                 resources["num_gpus"], resources["num_cpus"]))
