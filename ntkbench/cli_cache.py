"""The kernel cache on the command line (``ntkbench.arch.cache``):

    ntkbench run|study ... [--kernel-cache DIR|off] [--kernel-cache-max-gb GB]
    ntkbench cache list|clear [--kernel-cache DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ntkbench import format as fmt

CACHE_HELP = ("directory of the kernel cache, where ntk and nngp keep their kernels (computed once, resumed after a "
              "kill); default $NTKBENCH_KERNEL_CACHE or .ntkbench/kernels; off: none, kernels in memory")


def add_kernel_cache_options(parser: argparse.ArgumentParser) -> None:
    from ntkbench.arch.cache import DEFAULT_MAX_GB

    parser.add_argument("--kernel-cache", default=None, metavar="DIR|off", help=CACHE_HELP)
    parser.add_argument("--kernel-cache-max-gb", type=float, default=DEFAULT_MAX_GB, metavar="GB",
                        help=f"after the runs, evict least-recently-used complete kernels down to this size "
                             f"(default {DEFAULT_MAX_GB:g})")


def add_cache_command(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="list or clear the kernel cache")
    cache.add_argument("action", choices=["list", "clear"],
                       help="list: one line per kernel and the total; clear: remove every kernel not in use")
    cache.add_argument("--kernel-cache", default=None, metavar="DIR",
                       help="the cache directory; default $NTKBENCH_KERNEL_CACHE or .ntkbench/kernels")


def kernel_cache_options(args: argparse.Namespace) -> tuple[Path | None, float | None]:
    """(directory or None, max GB) from ``run``/``study`` arguments; a one-line ValueError for a
    negative size or a bad ``$NTKBENCH_KERNEL_TILE``."""
    from ntkbench.arch.cache import resolve_dir, tile_from_env

    if not args.kernel_cache_max_gb >= 0:
        raise ValueError(f"--kernel-cache-max-gb must be a size in GB >= 0, got {args.kernel_cache_max_gb:g}")
    tile_from_env()
    root = resolve_dir(args.kernel_cache)
    return root, args.kernel_cache_max_gb if root is not None else None


def cache_command(args: argparse.Namespace) -> int:
    """``cache list``: one line per entry, most recently used first, then the total; ``cache
    clear``: what was removed and what was left in use. Exit 2 for ``--kernel-cache off``."""
    from ntkbench.arch.cache import KernelCache, resolve_dir

    root = resolve_dir(args.kernel_cache)
    if root is None:
        print("ntkbench: error: ntkbench cache needs a cache directory, and --kernel-cache off names none; "
              "expected --kernel-cache DIR", file=sys.stderr)
        return 2
    cache = KernelCache(root)
    if args.action == "clear":
        removed, busy = cache.clear()
        size = sum(e.size_bytes for e in removed)
        left = f"; {len(busy)} in use by another process left" if busy else ""
        print(f"cache clear: removed {len(removed)} entries ({_size(size)}) from {root}{left}")
        return 0
    entries = cache.entries()
    rows = [[e.key[:12], _short(e.arch), f"{e.rows}×{e.cols}", e.dtype, _size(e.size_bytes),
             "complete" if e.complete else "partial", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))]
            for e in entries]
    if rows:
        rows.insert(0, ["key", "arch", "shape", "dtype", "size", "state", "last used"])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"total: {len(entries)} entries, {_size(sum(e.size_bytes for e in entries))} in {root}")
    return 0


def _size(n_bytes: int) -> str:
    return fmt.megabytes(n_bytes / 2**20)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
