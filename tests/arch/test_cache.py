"""The kernel cache (``ntkbench.arch.cache``): hits equal the computed kernel bit for bit, rows
are found by content in any order, two writers never fill one entry, and eviction, ``ntkbench
cache list`` and ``clear`` keep the cache to its size."""

import fcntl
import os
import threading

import pytest
import torch

from ntkbench import cli
from ntkbench.arch import Serial, get
from ntkbench.arch.cache import TILE_ENV, KernelCache
from ntkbench.arch.tiled import tiled_kernel

ARCH = get("cnn", depth=1, channels=4)
F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(TILE_ENV, "4")
    yield
    torch.set_num_threads(threads)


def _x(n, seed=0):
    return torch.randn(n, 1, 5, 5, generator=torch.Generator().manual_seed(seed))


def test_hits_are_the_computed_kernel_and_subsets_are_found_by_content(tmp_path):
    cache, x, xt = KernelCache(tmp_path), _x(10), _x(6, seed=1)
    first = cache.get(ARCH, x, dtype=F64)
    assert (first.status, first.tiles, first.computed) == ("computed", 6, 6)
    again = cache.get(ARCH, x.clone(), dtype=F64)  # another tensor, the same rows
    assert (again.status, again.computed) == ("hit", 0)
    memory = tiled_kernel(ARCH, x, dtype=F64, tile=4).kernel
    for name in ("nngp", "ntk", "cov1", "cov2"):
        assert torch.equal(getattr(again.kernel, name), getattr(memory, name)), name
    again.kernel.ntk[0, 0] = -1.0  # copy-on-write: the caller's change never reaches the file
    assert cache.get(ARCH, x, dtype=F64).kernel.ntk[0, 0] == memory.ntk[0, 0]

    rows = torch.tensor([7, 2, 5, 0])
    sub = cache.get(ARCH, x[rows], dtype=F64)
    assert sub.status == "hit" and torch.equal(sub.kernel.ntk, memory.ntk[rows][:, rows])
    cross = cache.get(ARCH, x[rows], x, dtype=F64)  # rows and columns of the symmetric entry
    assert cross.status == "hit" and torch.equal(cross.kernel.nngp, memory.nngp[rows])
    same = cache.get(ARCH, x, x.clone(), dtype=F64)  # both sides the same rows: the symmetric request
    assert same.status == "hit"

    test = cache.get(ARCH, xt, x, dtype=F64)
    assert test.status == "computed"
    part = cache.get(ARCH, xt[[4, 1]], x[rows], dtype=F64)
    assert part.status == "hit" and torch.equal(part.kernel.ntk, test.kernel.ntk[[4, 1]][:, rows])
    assert cache.get(ARCH, xt[:3], dtype=F64).status == "computed"  # never a symmetric K from a cross entry
    assert cache.get(ARCH, x, dtype=torch.float32).status == "computed"  # dtype is in the key
    assert cache.get(get("cnn", depth=2, channels=4), x, dtype=F64).status == "computed"
    assert cache.get(get("cnn", depth=1, channels=64), x, dtype=F64).status == "hit"  # widths are not


def test_two_writers_compute_an_entry_once(tmp_path, monkeypatch):
    calls = []
    original = Serial.kernel

    def counted(self, *args, **options):
        calls.append(1)
        return original(self, *args, **options)

    monkeypatch.setattr(Serial, "kernel", counted)
    cache, x, results = KernelCache(tmp_path), _x(12), []
    threads = [threading.Thread(target=lambda: results.append(cache.get(ARCH, x, dtype=F64))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # flock excludes two open files in one process as in two: one computes, the other waits (or
    # comes later) and reads it
    assert sorted(r.status for r in results) == ["computed", "hit"]
    assert len(calls) == 6
    assert torch.equal(results[0].kernel.ntk, results[1].kernel.ntk)


def test_eviction_keeps_the_recent_entries_and_skips_those_in_use(tmp_path):
    cache = KernelCache(tmp_path)
    keys = [cache.get(ARCH, _x(6, seed=s), dtype=F64).key for s in range(3)]
    cache.get(ARCH, _x(6, seed=0), dtype=F64)  # entry 0 used last: entry 1 is the least recent
    sizes = {e.key: e.size_bytes for e in cache.entries()}
    assert [e.key for e in cache.entries()] == [keys[0], keys[2], keys[1]]
    removed = cache.evict(sizes[keys[0]] + sizes[keys[2]])
    assert [e.key for e in removed] == [keys[1]]
    with open(tmp_path / keys[2] / "lock") as held:  # another process computing or reading it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert [e.key for e in cache.evict(0)] == [keys[0]]
        removed, busy = cache.clear()
        assert removed == [] and [e.key for e in busy] == [keys[2]]
    assert [e.key for e in cache.clear()[0]] == [keys[2]] and os.listdir(tmp_path) == []


def _cli_run(cache, n_train, max_gb):
    return cli.main(["run", "--task", "digits", "--method", "ntk", "--arch", "mlp", "--set", "arch.depth=1",
                     "--set", "arch.width=16", "--set", f"task.n_train={n_train}", "--set", "task.n_test=50",
                     "--kernel-cache", str(cache), "--kernel-cache-max-gb", str(max_gb), "--no-track", "-q"])


def test_cli_run_evicts_and_cache_lists_and_clears(tmp_path, capsys):
    cache = tmp_path / "kernels"
    assert _cli_run(cache, 40, 100) == 0
    first = KernelCache(cache).entries()
    assert sorted((e.rows, e.cols) for e in first) == [(40, 40), (50, 40)] and all(e.complete for e in first)
    # 50 training rows need 1.25× the bytes of 40: the limit holds them, not the older ones too
    limit = 1.5 * sum(e.size_bytes for e in first)
    assert _cli_run(cache, 50, limit / 2**30) == 0
    assert sorted((e.rows, e.cols) for e in KernelCache(cache).entries()) == [(50, 50), (50, 50)]
    capsys.readouterr()

    assert cli.main(["cache", "list", "--kernel-cache", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["key", "arch", "shape"] and len(lines) == 4
    assert all(" complete " in line and "float64" in line and "flatten dense relu dense" in line for line in lines[1:3])
    assert lines[3].startswith("total: 2 entries, ") and lines[3].endswith(f" in {cache}")
    assert cli.main(["cache", "clear", "--kernel-cache", str(cache)]) == 0
    assert capsys.readouterr().out.startswith("cache clear: removed 2 entries (")
    assert cli.main(["cache", "list", "--kernel-cache", str(cache)]) == 0
    assert capsys.readouterr().out == f"total: 0 entries, 0 MB in {cache}\n"


def test_bad_cache_options_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    assert _cli_run(tmp_path, 40, -1) == 2
    assert capsys.readouterr().err == "ntkbench: error: --kernel-cache-max-gb must be a size in GB >= 0, got -1\n"
    assert cli.main(["cache", "list", "--kernel-cache", "off"]) == 2
    assert "--kernel-cache off names none" in capsys.readouterr().err
    monkeypatch.setenv(TILE_ENV, "zero")
    assert _cli_run(tmp_path, 40, 1) == 2
    assert capsys.readouterr().err == (f"ntkbench: error: {TILE_ENV}='zero' is not a tile side; expected a positive "
                                       "integer such as 256\n")
    assert os.listdir(tmp_path) == []
