"""Kernel tiles as Ray tasks (``tiled_kernel(..., executor="ray")``) on a real local cluster
with two logical GPUs: placement, bitwise equality with the local executor, the manifest, worker
death and resuming.

The faults are injected where a user's computation would fail: in an ``Elementwise`` layer's
function, called inside the tile tasks. Each is a closure (cloudpickle ships closures by value to
the workers, which cannot import this test module) and acts once, by removing a file that arms it (only one process can remove it).
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from ntkbench.arch import Dense, Elementwise, get, serial
from ntkbench.arch.tiled import tiled_kernel
from ntkbench.distributed.tiles import RayTasks

KINDS = ("nngp", "ntk", "cov1", "cov2")
# Every task here requests one logical GPU (and computes on the CPU), so that all tests share one
# pool of Ray workers: Ray keeps workers that ran GPU tasks apart from the others, and each pool
# costs seconds of torch imports on 2 cores. CPU-only tasks differ only in ``resources`` (below).
TASKS = RayTasks(gpus=1)
# Ample for two workers to start under load; the barrier below fails the test when it runs out.
BARRIER_S = 60


def _x(n, d=5, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _once(path: Path):
    """A function true exactly once across processes: for the one that removes ``path``."""
    def armed() -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    return armed


def _erf_that(act):
    """An Elementwise layer computing erf after ``act(u)`` ran (the fault)."""
    def fn(u):
        act(u)
        return torch.erf(u)
    return serial(Dense(8), Elementwise(fn, deg=8), Dense(1))


def _manifest(out: Path) -> list[int]:
    return json.loads((out / "manifest.json").read_text())["done"]


def _assert_equal(a, b):
    for kind in KINDS:
        assert torch.equal(getattr(a, kind), getattr(b, kind)), kind


def test_two_tiles_requesting_a_gpu_each_get_different_gpus(ray_tiles_cluster, tmp_path):
    started = tmp_path / "started"
    started.mkdir()

    def barrier(u):  # both tile tasks wait here until both have started: they run at once
        mine = started / str(os.getpid())
        if not mine.exists():
            mine.touch()
            deadline = time.monotonic() + BARRIER_S
            while len(list(started.iterdir())) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError("the other tile task did not start")
                time.sleep(0.01)

    arch = _erf_that(barrier)
    run = tiled_kernel(arch, _x(4), _x(2, seed=1), dtype=torch.float64, tile=2, executor="ray", ray_tasks=TASKS)
    assert run.tiles == 2 and len(run.placements) == 2
    ids = sorted(p.gpu_ids for p in run.placements)
    assert ids == [(0,), (1,)]
    for p in run.placements:  # each task saw its GPU as Ray exposed it
        assert p.cuda_visible_devices == str(p.gpu_ids[0])


@pytest.mark.parametrize("cross", [False, True], ids=["symmetric", "x1-x2"])
def test_ray_tiles_equal_the_local_kernel_bit_for_bit(ray_tiles_cluster, tmp_path, cross):
    arch = get("mlp", depth=2, width=8)
    x1, x2 = _x(10), (_x(7, seed=1) if cross else None)
    local = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3)
    in_memory = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3, executor="ray", ray_tasks=TASKS)
    _assert_equal(in_memory.kernel, local.kernel)  # the blocks came back through the object store
    run = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3, executor="ray", out=tmp_path, ray_tasks=TASKS)
    _assert_equal(run.kernel, local.kernel)
    # 4 row blocks: 4·5/2 = 10 upper tiles when symmetric, 4 × 3 when not.
    assert run.tiles == run.computed == (12 if cross else 10)
    assert sorted(_manifest(tmp_path)) == list(range(run.tiles)) == sorted(p.tile for p in run.placements)
    if not cross:
        assert all(i <= j for i, j in (p.offsets for p in run.placements))
    again = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3, executor="ray", out=tmp_path, ray_tasks=TASKS)
    assert again.computed == 0 and again.placements == ()
    _assert_equal(again.kernel, local.kernel)
    # The automatic tile, measured by a task on a worker, covers these few rows in one tile as locally.
    auto = tiled_kernel(arch, x1, x2, dtype=torch.float64, executor="ray", ray_tasks=TASKS)
    assert auto.tile == tiled_kernel(arch, x1, x2, dtype=torch.float64).tile == 10 and auto.tiles == 1


def test_a_tile_whose_worker_dies_is_retried(ray_tiles_cluster, tmp_path):
    armed = tmp_path / "armed"
    once = _once(armed)

    def crash_once(u):
        if once():
            os._exit(1)

    arch = _erf_that(crash_once)
    x = _x(9)
    local = tiled_kernel(arch, x, dtype=torch.float64, tile=3)  # not armed: computes plainly
    armed.touch()
    out = tmp_path / "kernel"
    run = tiled_kernel(arch, x, dtype=torch.float64, tile=3, executor="ray", out=out,
                       ray_tasks=RayTasks(gpus=1, max_retries=2))
    assert not armed.exists()  # a tile task removed it and killed its worker
    assert run.computed == run.tiles == 6
    done = _manifest(out)
    assert sorted(done) == list(range(6)) and len(done) == len(set(done))
    _assert_equal(run.kernel, local.kernel)


def test_an_interrupted_run_resumes_with_the_missing_tiles(ray_tiles_cluster, tmp_path):
    armed = tmp_path / "armed"
    once = _once(armed)

    def fail_once_on_the_large_row(u):  # only tiles with x1's last row see |u| that large
        if u.abs().max() > 1e3 and once():
            raise RuntimeError("injected tile failure")

    arch = _erf_that(fail_once_on_the_large_row)
    x1, x2 = _x(9), _x(7, seed=1)
    x1[-1] *= 1e4  # in the last row block: its tiles come last
    local = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3)
    armed.touch()
    out = tmp_path / "kernel"
    with pytest.raises(RuntimeError, match="injected tile failure") as failure:
        tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3, executor="ray", out=out, ray_tasks=TASKS)
    assert any("rerun with the same out to resume" in note for note in failure.value.__notes__)
    done = set(_manifest(out))
    assert set(range(6)) <= done and len(done) < 9  # the first two row blocks, not the failed tile
    resumed = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=3, executor="ray", out=out, ray_tasks=TASKS)
    assert resumed.computed == 9 - len(done)
    assert {p.tile for p in resumed.placements} == set(range(9)) - done
    assert sorted(_manifest(out)) == list(range(9))
    _assert_equal(resumed.kernel, local.kernel)


def test_tasks_request_a_gpu_on_cuda_and_cpus_otherwise():
    assert RayTasks().resources("cuda") == {"num_gpus": 1.0, "num_cpus": 1.0}
    assert RayTasks().resources("cpu") == {"num_gpus": 0.0, "num_cpus": 1.0}
    assert RayTasks(gpus=0.25, cpus=2).resources("cuda") == {"num_gpus": 0.25, "num_cpus": 2}


def test_bad_options_are_one_line():
    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'dask'"):
        tiled_kernel(get("mlp", depth=1), _x(2), executor="dask")
    with pytest.raises(ValueError, match="RayTasks need gpus >= 0"):
        RayTasks(gpus=-1)
