"""Kernel tiles and out-of-core CG products under Ray against the local executor, on the CPU, as
ratios measured in one run.

Tiles: the symmetric CNN-GAP kernel (depth 2, 8×8 inputs: (H·W)² = 4,096 elements per pair) of
N inputs in tiles of TILE rows (default 128 and 16: 36 tiles of about 70 ms each on one core
here), written into .npy memory maps (``out=``, the path a cluster uses). Timed: the local loop
with one torch thread, Ray with a cluster of 1 CPU (one worker) and of 2 CPUs (two workers), one
CPU and one thread per task. Each cluster is started, warmed by one untimed kernel (its workers
import torch), then timed; ``extra_info`` holds tiles/s and the ratios ray/local, and the time of
a tile with next to nothing to compute (the per-tile overhead: the task, the files, the
manifest), locally and under Ray.

Out-of-core products: one K V (n = NTKBENCH_OOC_N, default 4,096, float64, 128 MiB file in the
page cache, 10 right-hand sides) by streaming row blocks locally and as Ray tasks on 2 workers;
ratio local time / Ray time (above 1: Ray is faster).

Environment: NTKBENCH_RAY_TILES_N, NTKBENCH_RAY_TILES_TILE, NTKBENCH_OOC_N, NTKBENCH_ROUNDS (3).
"""

import contextlib
import os
import time

import numpy as np
import pytest
import torch

from ntkbench.arch import get
from ntkbench.arch.tiled import tiled_kernel
from ntkbench.distributed import require_ray
from ntkbench.distributed.tiles import RayTasks
from ntkbench.solvers import kernel_file

N = int(os.environ.get("NTKBENCH_RAY_TILES_N", "128"))
TILE = int(os.environ.get("NTKBENCH_RAY_TILES_TILE", "16"))
OOC_N = int(os.environ.get("NTKBENCH_OOC_N", "4096"))
ROUNDS = int(os.environ.get("NTKBENCH_ROUNDS", "3"))
ARCH = get("cnn", depth=2)
SHAPE = (3, 8, 8)
OVERHEAD_ROW_BLOCKS = 12  # 78 tiny tiles


@contextlib.contextmanager
def cluster(num_cpus: int):
    """A fresh local Ray cluster with ``num_cpus`` CPUs, shut down afterwards."""
    ray = require_ray()
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already connected; this benchmark starts its own with 1 and 2 CPUs")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def best(fn, rounds: int = ROUNDS) -> float:
    """The least wall time of ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_tile_throughput_ray_against_local(benchmark, tmp_path):
    torch.set_num_threads(1)
    x = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(0))

    def kernel(executor: str, name: str):
        return tiled_kernel(ARCH, x, tile=TILE, out=tmp_path / name, restart=True, executor=executor,
                            ray_tasks=RayTasks(cpus=1))

    first = kernel("local", "local")
    tiles, reference = first.tiles, first.kernel.ntk.clone()
    seconds = {"local": best(lambda: kernel("local", "local"))}
    for workers in (1, 2):
        with cluster(workers):
            assert torch.equal(kernel("ray", f"ray{workers}").kernel.ntk, reference)  # warms the workers
            if workers == 1:
                seconds["ray1"] = best(lambda: kernel("ray", "ray1"))
            else:
                benchmark.pedantic(lambda: kernel("ray", "ray2"), rounds=ROUNDS)
                seconds["ray2"] = benchmark.stats.stats.min
            if workers == 2:  # per-task overhead: tiles of an FC kernel on 4 inputs each, next to nothing to compute
                fc, tiny = get("mlp", depth=1), torch.randn(4 * OVERHEAD_ROW_BLOCKS, 8)
                count = tiled_kernel(fc, tiny, tile=4).tiles
                overhead = {executor: best(lambda executor=executor: tiled_kernel(
                    fc, tiny, tile=4, out=tmp_path / f"fc-{executor}", restart=True, executor=executor)) / count
                    for executor in ("local", "ray")}
    rates = {key: tiles / value for key, value in seconds.items()}
    benchmark.extra_info.update({
        "n": N, "tile": TILE, "tiles": tiles, **{f"tiles_per_s_{key}": rate for key, rate in rates.items()},
        "ratio_ray1_vs_local": rates["ray1"] / rates["local"], "ratio_ray2_vs_local": rates["ray2"] / rates["local"],
        "ratio_ray2_vs_ray1": rates["ray2"] / rates["ray1"], "cpus": os.cpu_count(),
        "seconds_per_tiny_tile_local": overhead["local"], "seconds_per_tiny_tile_ray2": overhead["ray"],
    })
    print(f"\ntiles/s: local {rates['local']:.2f}, ray 1 worker {rates['ray1']:.2f}, ray 2 workers "
          f"{rates['ray2']:.2f}; ratios ray1/local {rates['ray1'] / rates['local']:.2f}, "
          f"ray2/local {rates['ray2'] / rates['local']:.2f}; a tiny tile takes {overhead['local'] * 1e3:.2f} ms "
          f"locally and {overhead['ray'] * 1e3:.2f} ms under Ray (2 workers)")


def test_out_of_core_products_ray_against_local(benchmark, tmp_path):
    torch.set_num_threads(1)
    g = np.random.default_rng(0)
    features = g.standard_normal((OOC_N, 64))
    path = tmp_path / "k.npy"
    np.save(path, features @ features.T / 64 + np.eye(OOC_N))
    v = torch.randn(OOC_N, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    local = kernel_file(path, block_bytes=32 << 20)
    product = local.matmul(v)
    local_s = best(lambda: local.matmul(v))
    with cluster(2):
        distributed = kernel_file(path, block_bytes=32 << 20, executor="ray", ray_tasks=RayTasks(cpus=1))
        assert torch.equal(distributed.matmul(v), product)  # warms the workers
        benchmark.pedantic(lambda: distributed.matmul(v), rounds=ROUNDS)
        ray_s = benchmark.stats.stats.min
        blocks = len(distributed.product.blocks)
    benchmark.extra_info.update({"n": OOC_N, "blocks_ray": blocks, "blocks_local": len(local.product.blocks),
                                 "seconds_local": local_s, "seconds_ray2": ray_s, "ratio_local_vs_ray2": local_s / ray_s})
    print(f"\nK V (n={OOC_N}): local {local_s * 1e3:.1f} ms ({len(local.product.blocks)} blocks), "
          f"ray 2 workers {ray_s * 1e3:.1f} ms ({blocks} blocks); local/ray {local_s / ray_s:.2f}")
