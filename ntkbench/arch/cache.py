"""A content-addressed cache of kernel matrices on disk: each kernel is computed once, by
``tiled_kernel``, and a run killed halfway continues where it stopped.

Key. An entry holds the NNGP and the NTK (and their diagonals) of one pass of the recursion,
K(X1, X2) or the symmetric K(X, X), for

    family = SHA-256 of {arch: to_spec(arch) (repr(arch) for a layer the exchange format lacks),
                         dtype, code: ntkbench.__version__ + "+k" + KERNEL_CODE_VERSION,
                         input_shape}
    key    = SHA-256 of (family, the row digests of X1, those of X2 or "symmetric")[:32 hex]

where a row digest is the 16-byte BLAKE2b of the row's dtype, shape and bytes. Widths are not in
the spec: the kernels do not depend on them. Device, fused kernels and tile sizes are not in the
key either: they change the kernel only by rounding.

Layout. ``ROOT/<key>/`` holds ``entry.json`` (family, arch, dtype, code version, shapes,
symmetric), ``rows1.npy`` and for a non-symmetric entry ``rows2.npy`` (the row digests, (n, 16)
uint8), ``kernel/`` (``tiled_kernel``'s checkpoint: nngp.npy, ntk.npy, cov1.npy, cov2.npy,
manifest.json), ``complete`` once every tile is done, ``used`` (its mtime is the last use) and
``lock``.

Lookup (``KernelCache.get``), in this order:

1. the entry of the exact key, complete: a hit, memory-mapped (copy-on-write: writes by the
   caller stay in its memory and never reach the file);
2. a complete entry of the same family whose rows contain every requested row and whose columns
   every requested column (by digest, in any order; a symmetric request takes symmetric
   entries only, so that K stays exactly symmetric): a hit, K[rows][:, cols] copied from it, in
   chunks, into the exact key's entry (so every result is a file: the out-of-core solver maps it);
3. otherwise the exact key's entry is computed, or resumed from its manifest when a run stopped
   halfway (``resumed``). A request whose two sides have the same rows is the symmetric one.

Locking. Computing or resuming holds an exclusive ``fcntl.flock`` on the entry's ``lock`` file;
a second process asking for the same entry **waits** (saying so on stderr), then finds it
complete (a hit) or, if the first process died, resumes it. Hits take a shared lock while they
open the files. Eviction and ``clear`` take the exclusive lock without waiting and skip an entry
in use (``arch.locks``).

Eviction (``evict``): least-recently-used complete entries are removed until the cache holds at
most ``max_bytes`` (apparent file sizes); partial entries stay, to be resumed, until ``clear``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ntkbench.arch.kernel import Kernel
from ntkbench.arch.locks import locked, remove_unless_locked
from ntkbench.arch.serial import Serial
from ntkbench.arch.tiled import ARRAYS, MANIFEST, tiled_kernel

KERNEL_CODE_VERSION = 1
"""Bumped whenever the kernel of some layer changes its values: entries of other versions are
then never read (``ntkbench cache clear`` removes them)."""
CACHE_ENV, TILE_ENV = "NTKBENCH_KERNEL_CACHE", "NTKBENCH_KERNEL_TILE"
DEFAULT_DIR = Path(".ntkbench") / "kernels"
DEFAULT_MAX_GB = 20.0
ROW_DIGEST_BYTES = 16
# Numbers per chunk when a submatrix is copied from a cached entry (128 MB in float64).
GATHER_ELEMENTS = 1 << 24
Status = Literal["computed", "resumed", "hit"]


@dataclass(frozen=True)
class CachedKernel:
    """The kernel (host tensors; memory-mapped when it comes from the cache) and how it was
    obtained: ``status``, the ``seconds`` it took (hashing, waiting and loading included), the
    entry's ``key`` (None without a cache), the ``tiles`` of the computation and how many of
    them this call ``computed`` (0 for a hit), the tile side (None for a hit), and the entry's
    folder (``path / "kernel" / "ntk.npy"`` is K's file; None without a cache)."""

    kernel: Kernel
    status: Status
    seconds: float
    key: str | None
    tiles: int
    computed: int
    tile: int | None
    path: Path | None = None


@dataclass(frozen=True)
class Entry:
    """One cache entry as ``ntkbench cache list`` shows it."""

    key: str
    path: Path
    arch: str
    rows: int
    cols: int
    dtype: str
    size_bytes: int
    complete: bool
    last_used: float


def resolve_dir(option: str | Path | None) -> Path | None:
    """The cache directory: ``off`` → None; the option; else ``$NTKBENCH_KERNEL_CACHE``; else
    ``.ntkbench/kernels`` in the working directory (git-ignored)."""
    text = str(option) if option is not None else os.environ.get(CACHE_ENV) or str(DEFAULT_DIR)
    return None if text == "off" else Path(text)


def tile_from_env() -> int | None:
    """The tile side from ``$NTKBENCH_KERNEL_TILE`` (None when unset: ``tiled_kernel`` sizes
    tiles by free memory). Small tiles make kernels resumable at a finer grain."""
    text = os.environ.get(TILE_ENV)
    if not text:
        return None
    try:
        tile = int(text)
    except ValueError:
        tile = 0
    if tile < 1:
        raise ValueError(f"{TILE_ENV}={text!r} is not a tile side; expected a positive integer such as 256")
    return tile


def code_version() -> str:
    from ntkbench import __version__

    return f"{__version__}+k{KERNEL_CODE_VERSION}"


def arch_identity(arch: Serial) -> str:
    """The architecture's kernel spec as compact JSON (``arch.spec.to_spec``), else its repr."""
    from ntkbench.arch.spec import to_spec

    try:
        return json.dumps(to_spec(arch), separators=(",", ":"))
    except ValueError:
        return repr(arch)


def arch_label(identity: str) -> str:
    """A short name for listings: the spec's layer names (``flatten dense relu ...``), else the repr."""
    try:
        spec = json.loads(identity)
    except ValueError:
        return identity
    return " ".join(f"residual({len(e[1])}|{len(e[2])})" if e[0] == "residual" else e[0] for e in spec)


def row_digests(x: torch.Tensor) -> np.ndarray:
    """(n, 16) uint8: BLAKE2b-128 of each row's dtype, shape and bytes."""
    a = np.ascontiguousarray(x.detach().cpu().numpy())
    prefix = f"{a.dtype} {a.shape[1:]}".encode()
    out = np.empty((len(a), ROW_DIGEST_BYTES), np.uint8)
    for i, row in enumerate(a.reshape(len(a), -1)):
        h = hashlib.blake2b(prefix, digest_size=ROW_DIGEST_BYTES)
        h.update(row)
        out[i] = np.frombuffer(h.digest(), np.uint8)
    return out


def kernel(arch: Serial, x1: torch.Tensor, x2: torch.Tensor | None = None, *, dtype: torch.dtype,
           cache: KernelCache | None = None, device: torch.device | None = None,
           executor: str = "local") -> CachedKernel:
    """NNGP and NTK of ``arch`` between the rows of ``x1`` and ``x2`` (None: symmetric) by
    ``tiled_kernel``: through ``cache`` when given, else in memory (status ``computed``).
    ``$NTKBENCH_KERNEL_TILE`` sets the tile side of new computations."""
    if cache is not None:
        return cache.get(arch, x1, x2, dtype=dtype, device=device, executor=executor)
    start = time.perf_counter()
    run = tiled_kernel(arch, x1, x2, dtype=dtype, device=device, tile=tile_from_env(), executor=executor)
    return CachedKernel(run.kernel, "computed", time.perf_counter() - start, None, run.tiles, run.computed, run.tile)


class KernelCache:
    """The cache in directory ``root`` (created on first write); see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def get(self, arch: Serial, x1: torch.Tensor, x2: torch.Tensor | None = None, *, dtype: torch.dtype,
            device: torch.device | None = None, executor: str = "local") -> CachedKernel:
        """K(x1, x2) (x2 None or ``x2 is x1``: the symmetric K(x1, x1)) from the cache: a hit,
        or computed or resumed into the exact key's entry."""
        start = time.perf_counter()
        x1 = arch._check_input(x1, "x1")
        h1 = row_digests(x1)
        h2 = None if x2 is None or x2 is x1 else row_digests(arch._check_input(x2, "x2"))
        if h2 is not None and np.array_equal(h1, h2):
            x2, h2 = None, None
        family = _sha({"arch": arch_identity(arch), "dtype": str(dtype), "code": code_version(),
                       "input_shape": list(x1.shape[1:])})
        key = _sha([family, h1.tobytes().hex(), "symmetric" if h2 is None else h2.tobytes().hex()])[:32]
        path = self.root / key
        while True:  # each pass ends in a result, or retries because an entry vanished under it
            found = self._load(path)
            if found is not None:
                return CachedKernel(found, "hit", time.perf_counter() - start, key, 0, 0, None, path)
            with locked(path, exclusive=True, create=True) as ok:
                if not ok:
                    continue
                status, run = "hit", None  # unless this process fills it: another one may have meanwhile
                if not (path / "complete").exists():
                    _describe(path, arch, h1, h2, family, dtype, tuple(x1.shape[1:]))
                    superset = self._superset(family, h1, h2)
                    if superset is None or not _materialize(path / "kernel", *superset):
                        status, run = self._compute(path, arch, x1, x2, dtype, device, executor)
                    (path / "complete").touch()
            found = self._load(path)
            if found is not None:
                tiles = (run.tiles, run.computed, run.tile) if run is not None else (0, 0, None)
                return CachedKernel(found, status, time.perf_counter() - start, key, *tiles, path)

    def _compute(self, path: Path, arch: Serial, x1, x2, dtype: torch.dtype, device, executor: str):
        """Fill the entry by ``tiled_kernel`` under its exclusive lock: (status, ``TiledKernel``)."""
        out = path / "kernel"
        resumed = _done_tiles(out) > 0
        options = dict(dtype=dtype, device=device, out=out, tile=tile_from_env(), executor=executor)
        try:
            run = tiled_kernel(arch, x1, x2, **options)
        except ValueError as e:
            if not resumed or "checkpoints another computation" not in str(e):
                raise
            # Same kernel, other circumstances (device, fused, tile, an unstored width): start again.
            warnings.warn(f"kernel cache entry {path.name}: cannot resume ({e}); computing it again",
                          RuntimeWarning, stacklevel=3)
            run, resumed = tiled_kernel(arch, x1, x2, restart=True, **options), False
        return ("resumed" if resumed and run.computed < run.tiles else "computed"), run

    def _load(self, path: Path) -> Kernel | None:
        """The complete entry's kernel, memory-mapped copy-on-write under a shared lock; None if
        the entry is missing, partial, or removed meanwhile."""
        if not (path / "complete").exists():
            return None
        with locked(path, exclusive=False, create=False) as ok:
            if not ok or not (path / "complete").exists():
                return None
            maps = {name: np.load(path / "kernel" / f"{name}.npy", mmap_mode="c") for name in ARRAYS}
            (path / "used").touch()
        if not (path / "rows2.npy").exists():  # symmetric: one diagonal
            maps["cov2"] = maps["cov1"]
        t = {name: torch.from_numpy(m) for name, m in maps.items()}
        return Kernel(t["nngp"], t["ntk"], t["cov1"], t["cov2"], "none")

    def _superset(self, family: str, h1: np.ndarray, h2: np.ndarray | None):
        """(path, rows, cols) of the smallest complete entry of ``family`` that contains the
        requested rows (and columns), or None; a symmetric request (h2 None) takes symmetric ones."""
        best = None
        for path, meta in self._metas():
            if meta.get("family") != family or not (path / "complete").exists():
                continue
            if h2 is None and not meta["symmetric"]:
                continue
            if best is not None and meta["rows"] * meta["cols"] >= best[0]:
                continue
            try:
                cached1 = np.load(path / "rows1.npy")
                rows = _positions(cached1, h1)
                cols = None
                if rows is not None and h2 is not None:
                    cols = _positions(cached1 if meta["symmetric"] else np.load(path / "rows2.npy"), h2)
                    rows = rows if cols is not None else None
            except (OSError, ValueError):  # removed meanwhile
                continue
            if rows is not None:
                best = (meta["rows"] * meta["cols"], path, rows, cols)
        return None if best is None else best[1:]

    def _metas(self) -> Iterator[tuple[Path, dict]]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            try:
                yield path, json.loads((path / "entry.json").read_text())
            except (OSError, ValueError):  # not an entry, or one being created or removed
                continue

    def entries(self) -> list[Entry]:
        """Every entry with a readable ``entry.json``, most recently used first."""
        out = []
        for path, meta in self._metas():
            try:  # an entry removed meanwhile is left out
                used = path / "used"
                last = (used if used.exists() else path / "entry.json").stat().st_mtime
                out.append(Entry(path.name, path, arch_label(meta.get("arch", "?")), meta.get("rows", 0),
                                 meta.get("cols", 0), meta.get("dtype", "?"), _size(path),
                                 (path / "complete").exists(), last))
            except OSError:
                continue
        return sorted(out, key=lambda e: e.last_used, reverse=True)

    def evict(self, max_bytes: float) -> list[Entry]:
        """Remove least-recently-used complete entries until at most ``max_bytes`` remain (entries
        in use by another process are skipped); returns the removed ones."""
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        removed = []
        for entry in reversed(entries):
            if total <= max_bytes:
                break
            if entry.complete and remove_unless_locked(entry.path):
                total -= entry.size_bytes
                removed.append(entry)
        return removed

    def clear(self) -> tuple[list[Entry], list[Entry]]:
        """Remove every entry: (removed, left because another process holds it). Folders of
        entries killed before their ``entry.json`` was written go too, unless locked."""
        removed, busy = [], []
        for entry in self.entries():
            (removed if remove_unless_locked(entry.path) else busy).append(entry)
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if path.is_dir() and not (path / "entry.json").exists():
                remove_unless_locked(path)
        return removed, busy


def _positions(cached: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    """Index of each wanted digest among the cached ones, or None if one is missing."""
    if len(wanted) > len(cached):
        return None
    index = {row.tobytes(): i for i, row in enumerate(cached)}
    try:
        return np.fromiter((index[row.tobytes()] for row in wanted), np.int64, len(wanted))
    except KeyError:
        return None


def _describe(path: Path, arch: Serial, h1: np.ndarray, h2: np.ndarray | None, family: str, dtype: torch.dtype,
              input_shape: tuple[int, ...]) -> None:
    """Write a new entry's row digests and then its ``entry.json`` (last: it marks the entry)."""
    if (path / "entry.json").exists():
        return
    np.save(path / "rows1.npy", h1)
    if h2 is not None:
        np.save(path / "rows2.npy", h2)
    _write_json(path / "entry.json", {
        "family": family, "arch": arch_identity(arch), "dtype": str(dtype).removeprefix("torch."),
        "code": code_version(), "rows": len(h1), "cols": len(h1 if h2 is None else h2), "symmetric": h2 is None,
        "input_shape": list(input_shape)})


def _materialize(out: Path, source: Path, rows: np.ndarray, cols: np.ndarray | None) -> bool:
    """Write K[rows][:, cols] of the complete entry ``source`` (held under a shared lock, so it
    is not evicted meanwhile) into ``out`` as an entry's arrays; False if ``source`` is gone."""
    cols = rows if cols is None else cols
    with locked(source, exclusive=False, create=False) as ok:
        if not ok or not (source / "complete").exists():
            return False
        src = {name: np.load(source / "kernel" / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        if not (source / "rows2.npy").exists():
            src["cov2"] = src["cov1"]
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # a killed computation's, now superseded
        for name in ("nngp", "ntk"):
            dst = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=src[name].dtype,
                                            shape=(len(rows), len(cols)))
            step = max(1, GATHER_ELEMENTS // src[name].shape[1])
            for a in range(0, len(rows), step):  # at most GATHER_ELEMENTS numbers of the source at once
                dst[a:a + step] = src[name][rows[a:a + step]][:, cols]
            dst.flush()
            del dst
        np.save(out / "cov1.npy", src["cov1"][rows])
        np.save(out / "cov2.npy", src["cov2"][cols])
        (source / "used").touch()
    return True


def _done_tiles(out: Path) -> int:
    try:
        return len(json.loads((out / MANIFEST).read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
