"""Kernel matrices at scale: K(X1, X2) tile by tile, into host memory or memory-mapped .npy files,
with checkpoints so that a killed run resumes where it stopped.

The (N1, N2) output is cut into tile×tile tiles. For the symmetric train kernel (``x2=None``)
only tiles (i, j) with i <= j are computed; each lower tile is the transpose of its mirror.
A tile is computed by ``Serial.kernel`` on the tile's rows, in one batch of pairs on CUDA (so a
tile is what fits on the device) and in the CPU's cache-sized blocks there.

Tile size. A pair of inputs needs ``live · P · itemsize`` bytes while a batch is computed, with
P = ``Serial.pair_elements`` (1, H·W or (H·W)²) and ``live`` the pair tensors alive at once:
counted from the layer updates as 8 on the torch path (old and new nngp and ntk, the window-sum
copy, and the map's norm, cos and dot; the peak RSS of one batch of CNN-GAP or Myrtle-5 pairs at
16×16 on the CPU measured 7.0) and 6 on the fused path (old and new nngp and ntk, and
contiguous copies of the input kernel's). Each
input row adds its own self terms and its pixels. The tile is the largest b with
b²·pair + 2b·row <= ``memory_fraction`` · free memory (``torch.cuda.mem_get_info`` plus the
allocator's cache on CUDA, ``psutil``'s available memory on the CPU).

Out of memory. ``torch.OutOfMemoryError`` in a tile discards the tile, halves the batch side
(the tile is then computed in four batches, then sixteen, ...), warns, and retries; the smaller
batch is kept for the rest of the run. A tile is written and recorded only when all of it is done.

Checkpoints (``out=`` a directory). The directory holds nngp.npy, ntk.npy, cov1.npy, cov2.npy
(``np.lib.format.open_memmap``) and manifest.json. After each tile the memory maps are flushed
(msync) and then the manifest, listing the finished tiles, is replaced atomically (temporary
file, fsync, ``os.replace``, fsync of the directory): a tile in the manifest is on disk, and a
tile killed halfway is not in it. The manifest carries a fingerprint (a SHA-256 of the inputs,
the architecture's repr, dtype, device type, fused or not, shapes, tile); a run with the same
fingerprint skips the finished tiles, and a different one is an error unless ``restart=True``.
A resumed run gives the kernel bit for bit, because every tile is computed from the same rows
with the same batch (unless an out-of-memory error changed the batch; float64 then agrees to
rounding, see ``test_tiled.py``).

Executors. ``executor="local"`` computes the tiles in this process; ``executor="ray"`` as Ray
tasks over every GPU (or CPU) of a cluster (``distributed.tiles``): the same tiles from the same
rows with the same batch, so the same kernel bit for bit, and the same checkpoint directory,
whose manifest only this process writes. The executor is not in the fingerprint: a run begun by
one resumes under the other.

Precision. float32 is the default here; ``dtype=torch.float64`` for the exact kernels. Measured
on the CPU against float64 with random inputs (max |K32 − K64| / max |K64|, N = 16): FC of depth
3 and 10, CNN-V, CNN-GAP of depth 3 and 10 and Myrtle-5 at 8×8 all stay below 2.6e-7 for the
nngp and the ntk (3.2e-7 entry by entry), a few float32 roundings (ε = 1.2e-7). The arccos
grows rounding by 1/sin θ near cos θ = 1, so inputs with nearly parallel pixels or near-duplicate
images lose more; the pairs (x, x) themselves are exact (``kernel.input_kernel``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
import torch

from ntkbench import progress, signals
from ntkbench.arch.kernel import Kernel
from ntkbench.arch.serial import Serial

if TYPE_CHECKING:
    from ntkbench.distributed.tiles import Placement, RayTasks

LIVE_PAIR_TENSORS = {False: 8, True: 6}
MANIFEST = "manifest.json"
ARRAYS = ("nngp", "ntk", "cov1", "cov2")
EXECUTORS = ("local", "ray")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TiledKernel:
    """The kernel and how it was computed: ``tiles`` in all, ``computed`` by this run (the rest
    came from the checkpoint), with tiles of ``tile`` rows and batches of ``batch`` rows (the
    smallest any tile needed); under the Ray executor, where each computed tile ran."""

    kernel: Kernel
    tile: int
    batch: int
    tiles: int
    computed: int
    placements: tuple[Placement, ...] = ()


def tiled_kernel(arch: Serial, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 out: str | Path | None = None, tile: int | None = None, restart: bool = False,
                 memory_fraction: float = 0.5, fused: bool | None = None, executor: str = "local",
                 ray_tasks: RayTasks | None = None) -> TiledKernel:
    """NNGP and NTK of ``arch`` between the rows of ``x1`` and ``x2`` (``x2=None``: the symmetric
    kernel of ``x1``, also for ``x2 is x1``), computed on ``device`` (default: ``x1``'s) in tiles.

    The result is on the host: torch tensors, or with ``out`` torch views of memory-mapped .npy
    files in that directory, checkpointed after each tile. ``tile`` overrides the automatic tile
    side, which uses ``memory_fraction`` of the free memory; ``fused`` is passed to ``Serial.kernel``.

    ``executor="ray"`` computes the tiles as Ray tasks on the cluster ``distributed.connect`` joined
    (a new local one if none), with the resources of ``ray_tasks`` (``distributed.tiles``): the
    same kernel bit for bit, the same manifest and checkpoints; ``out`` must then be on a
    filesystem every worker sees. The automatic tile side is measured by one task on a worker,
    with its share (``RayTasks.gpus`` of a GPU, ``cpus`` of the node's CPUs) of ``memory_fraction``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    device = torch.device(device) if device is not None else x1.device
    symmetric = x2 is None or x2 is x1
    x1 = arch._check_input(x1, "x1")
    x2 = x1 if symmetric else arch._check_input(x2, "x2")
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same per-sample shape, got {tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}")
    if tile is not None and (not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
    n1, n2 = len(x1), len(x2)
    tile = min(tile, max(n1, n2)) if tile is not None else None
    fused = device.type == "cuda" if fused is None else fused
    store = None
    if out is not None:  # hashing the inputs costs a pass over them: only for checkpoints
        fingerprint = {
            "x1": _digest(x1), "x2": "symmetric" if symmetric else _digest(x2), "arch": repr(arch),
            "dtype": str(dtype), "device": device.type, "fused": fused, "shape1": list(x1.shape),
            "shape2": list(x2.shape), "tile": tile,
        }
        store = _Store(Path(out), fingerprint, (n1, n2), dtype, restart)
        tile = store.fingerprint["tile"]  # a resumed run keeps the manifest's tile
    if tile is None and executor == "ray":
        from ntkbench.distributed.tiles import RayTasks, probe_tile

        tile = min(probe_tile(arch, tuple(x1.shape[1:]), dtype, device, fused, memory_fraction,
                              ray_tasks or RayTasks()), max(n1, n2))
    tile = tile or min(auto_tile(arch, tuple(x1.shape[1:]), dtype, device, fused, memory_fraction), max(n1, n2))
    if store is not None:
        store.open(tile)
    arrays = store.tensors() if store is not None else {
        "nngp": torch.empty(n1, n2, dtype=dtype), "ntk": torch.empty(n1, n2, dtype=dtype),
        "cov1": torch.empty(n1, dtype=dtype), "cov2": torch.empty(n2, dtype=dtype)}
    batch = tile if device.type == "cuda" else min(tile, arch.block_side(tuple(x1.shape[1:]), device))

    tiles = [(i, j) for i in range(0, n1, tile) for j in range(i if symmetric else 0, n2, tile)]
    done = store.done if store is not None else set()
    todo = [t for t in range(len(tiles)) if t not in done]
    placements = ()
    if executor == "ray":
        from ntkbench.distributed.tiles import RayTasks, run_tiles

        placements = tuple(run_tiles(arch, x1, x2, symmetric, tiles, todo, tile, dtype=dtype, device=device,
                                     batch=batch, fused=fused, arrays=arrays, store=store,
                                     tasks=ray_tasks or RayTasks()))
        batch = min((p.batch for p in placements), default=batch)
        if store is not None:  # the workers wrote the files: map them afresh (a shared filesystem's
            arrays = store.reopen()  # client may keep pages it read before)
    else:
        for t in progress.steps(todo, "kernel tiles", hide=len(todo) < 2):
            signals.check()
            i, j = tiles[t]
            same = symmetric and i == j
            xa = x1[i:i + tile].to(device)
            xb = None if same else x2[j:j + tile].to(device)
            k, batch = _compute_with_retry(arch, xa, xb, dtype, batch, fused, f"tile ({i}, {j})")
            _write(arrays, k, i, j, symmetric and not same)
            if store is not None:
                store.record(t)
    log.info("tiled kernel (%s): computed %d of %d tiles (%d from the checkpoint), tile %d, batch %d", executor,
             len(todo), len(tiles), len(tiles) - len(todo), tile, batch)
    cov2 = arrays["cov1"] if symmetric else arrays["cov2"]
    kernel = Kernel(arrays["nngp"], arrays["ntk"], arrays["cov1"], cov2, "none")
    return TiledKernel(kernel, tile, batch, len(tiles), len(todo), placements)


def auto_tile(arch: Serial, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, fused: bool,
              memory_fraction: float) -> int:
    """The largest tile side b with b²·pair + 2b·row <= memory_fraction · free memory (module doc)."""
    item = torch.finfo(dtype).bits // 8
    live = LIVE_PAIR_TENSORS[fused]
    elements = arch.pair_elements(input_shape)
    pair = live * elements * item
    row = (live * elements + math.prod(input_shape)) * item
    budget = memory_fraction * free_memory(device)
    side = int((math.sqrt(row * row + pair * budget) - row) / pair)
    if side < 1:
        raise ValueError(f"one pair of inputs needs {pair + 2 * row} bytes, but {memory_fraction} of the free memory on "
                         f"{device} is {budget:.0f} bytes")
    return side


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors: on CUDA the driver's free memory plus the allocator's unused
    cache; elsewhere the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def _compute_with_retry(arch: Serial, xa: torch.Tensor, xb: torch.Tensor | None, dtype: torch.dtype, batch: int,
                        fused: bool, where: str) -> tuple[Kernel, int]:
    """The tile, halving the batch on out-of-memory errors; returns it and the batch that fitted."""
    while True:
        try:
            return _compute_tile(arch, xa, xb, dtype, batch, fused), batch
        except torch.OutOfMemoryError as e:
            if batch == 1:
                raise torch.OutOfMemoryError(f"{where}: one pair of inputs does not fit in memory on {xa.device}") from e
            warnings.warn(f"out of memory in {where} with batches of {batch} rows; retrying with {batch // 2}",
                          RuntimeWarning, stacklevel=3)
            batch //= 2


def _compute_tile(arch: Serial, xa: torch.Tensor, xb: torch.Tensor | None, dtype: torch.dtype, batch: int,
                  fused: bool) -> Kernel:
    """One tile, in batches of batch × batch pairs; ``xb=None`` for a diagonal tile of a symmetric kernel."""
    return arch.kernel(xa, xb, dtype=dtype, block_size=batch, fused=fused)


def _write(arrays: dict[str, torch.Tensor], k: Kernel, i: int, j: int, mirror: bool, cov1: bool = True,
           cov2: bool = True) -> None:
    """The tile's block at rows i.., columns j.. (``mirror``: its transpose too), and its rows'
    cov1 and columns' cov2 where asked."""
    n, m = k.nngp.shape
    for name in ("nngp", "ntk"):
        value = getattr(k, name)
        arrays[name][i:i + n, j:j + m] = value.cpu()
        if mirror:
            arrays[name][j:j + m, i:i + n] = value.mT.contiguous().cpu()
    if cov1:
        arrays["cov1"][i:i + n] = k.cov1.cpu()
    if cov2:
        arrays["cov2"][j:j + m] = k.cov2.cpu()


def _digest(x: torch.Tensor) -> str:
    """SHA-256 of the tensor's dtype, shape and bytes."""
    a = np.ascontiguousarray(x.detach().cpu().numpy())
    h = hashlib.sha256(f"{a.dtype} {a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


class _Store:
    """The checkpoint directory: memory-mapped arrays and the manifest of finished tiles."""

    def __init__(self, root: Path, fingerprint: dict, shape: tuple[int, int], dtype: torch.dtype, restart: bool) -> None:
        self.root, self.shape, self.dtype = root, shape, dtype
        self.fingerprint, self.done = dict(fingerprint), set()
        path = root / MANIFEST
        if not path.exists() or restart:
            return
        try:
            manifest = json.loads(path.read_text())
            old, done = manifest["fingerprint"], manifest["done"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a tiled-kernel manifest ({e}); use another directory or restart=True") from None
        if fingerprint["tile"] is None:
            self.fingerprint["tile"] = old.get("tile")
        diff = [key for key in sorted(set(old) | set(self.fingerprint)) if old.get(key) != self.fingerprint.get(key)]
        if diff:
            key = diff[0]
            raise ValueError(f"{path} checkpoints another computation ({key}: {_short(old.get(key))} there, "
                             f"{_short(self.fingerprint.get(key))} now); use another directory or restart=True")
        self.done = set(done)

    def open(self, tile: int) -> None:
        """Create the arrays, or open them for resuming when tiles are already done."""
        self.fingerprint["tile"] = tile
        shapes = {"nngp": self.shape, "ntk": self.shape, "cov1": self.shape[:1], "cov2": self.shape[1:]}
        dtype = np.dtype(str(self.dtype).removeprefix("torch."))
        self.root.mkdir(parents=True, exist_ok=True)
        self.maps = {}
        for name in ARRAYS:
            path = self.root / f"{name}.npy"
            if self.done:
                if not path.exists():
                    raise ValueError(f"{path} is missing, but {self.root / MANIFEST} lists finished tiles; "
                                     "use another directory or restart=True")
                self.maps[name] = np.lib.format.open_memmap(path, mode="r+")
                if self.maps[name].shape != shapes[name] or self.maps[name].dtype != dtype:
                    raise ValueError(f"{path} has shape {self.maps[name].shape} and dtype {self.maps[name].dtype}; "
                                     f"the manifest expects {shapes[name]} and {dtype}")
            else:
                self.maps[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shapes[name])
        if not self.done:
            self._save()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(m) for name, m in self.maps.items()}

    def reopen(self) -> dict[str, torch.Tensor]:
        """The arrays mapped anew from the files (after other processes wrote them)."""
        self.maps = {name: np.lib.format.open_memmap(self.root / f"{name}.npy", mode="r+") for name in ARRAYS}
        return self.tensors()

    def record(self, tile_index: int) -> None:
        """Mark a tile finished: flush the arrays, then replace the manifest atomically."""
        for m in self.maps.values():
            m.flush()
        self.done.add(tile_index)
        self._save()

    def _save(self) -> None:
        path = self.root / MANIFEST
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"fingerprint": self.fingerprint, "done": sorted(self.done)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
