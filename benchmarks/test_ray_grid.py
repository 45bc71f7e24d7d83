"""What ``--executor ray`` costs and gains, on this machine's CPU (no GPU needed).

- ``test_grid_throughput``: one grid of ``len(SEEDS) * 2`` small kernel runs (digits, ``ntk`` and
  ``nngp``, n_train 800, tracking off) with the local loop, and as Ray tasks on a local cluster
  of 1 CPU and of 2 CPUs (one worker per CPU; one torch thread per run everywhere), in turn
  within each round, so that load on a shared machine hits all three alike. Each cluster is
  started, warmed up (its workers import torch and ntkbench, untimed) and stopped inside the
  round. ``extra_info``: the fastest round's seconds and runs/s of each, and the ratios
  ``ray1_over_local``, ``ray2_over_local`` and ``ray2_over_ray1`` (of throughputs).
- ``test_task_overhead``: an empty Ray task, submitted and waited for one at a time, against a
  plain function call, and 1000 empty tasks in flight at once. ``extra_info``: microseconds per
  call each way and their ratio.

    pytest benchmarks/test_ray_grid.py -s
"""

import time
import timeit

import pytest
import torch

from ntkbench import runner
from ntkbench.distributed.grid import RayOptions

ray = pytest.importorskip("ray", reason="pip install 'ntkbench[ray]'")

SEEDS = tuple(range(6))
GRID = dict(task="digits", method="ntk,nngp", options={"task.n_train": 800, "task.n_test": 200}, device="cpu",
            tracking="off", quiet=True)


def _cluster(cpus: int) -> None:
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    runner.run(seeds=tuple(range(100, 100 + cpus)), executor="ray", **GRID)  # warm-up: workers import torch, ntkbench


def _timed(**executor) -> float:
    start = time.perf_counter()
    records = runner.run(seeds=SEEDS, **GRID, **executor)
    assert all(r.status == "FINISHED" for r in records)
    return time.perf_counter() - start


def test_grid_throughput(benchmark):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"local": [], "ray1": [], "ray2": []}

    def round_():
        times["local"].append(_timed())
        for cpus in (1, 2):
            _cluster(cpus)
            try:
                times[f"ray{cpus}"].append(_timed(executor="ray", ray_options=RayOptions(cpus_per_run=1)))
            finally:
                ray.shutdown()

    try:
        runner.run(seeds=(999,), **GRID)  # warm-up of this process
        benchmark.pedantic(round_, rounds=3)
    finally:
        torch.set_num_threads(threads)
    runs = 2 * len(SEEDS)
    best = {name: min(spans) for name, spans in times.items()}
    rate = {name: runs / span for name, span in best.items()}
    benchmark.extra_info.update(runs=runs, **{f"{n}_s": s for n, s in best.items()},
                                **{f"{n}_runs_per_s": r for n, r in rate.items()},
                                ray1_over_local=rate["ray1"] / rate["local"],
                                ray2_over_local=rate["ray2"] / rate["local"], ray2_over_ray1=rate["ray2"] / rate["ray1"])
    print(f"\n{runs} runs: local {best['local']:.2f} s, Ray 1 worker {best['ray1']:.2f} s, Ray 2 workers "
          f"{best['ray2']:.2f} s; throughput ray1/local {rate['ray1'] / rate['local']:.2f}, ray2/local "
          f"{rate['ray2'] / rate['local']:.2f}, ray2/ray1 {rate['ray2'] / rate['ray1']:.2f}")


def test_task_overhead(benchmark):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(lambda: None)  # by value: the workers cannot import this module
        ray.get([task.remote() for _ in range(20)])  # warm-up: workers started, function exported
        benchmark.pedantic(lambda: ray.get(task.remote()), rounds=200, warmup_rounds=10)
        start = time.perf_counter()
        ray.get([task.remote() for _ in range(1000)])
        in_flight_us = (time.perf_counter() - start) / 1000 * 1e6
    finally:
        ray.shutdown()
    task_us = benchmark.stats.stats.median * 1e6
    call_us = min(timeit.repeat(lambda: None, number=100_000, repeat=5)) / 100_000 * 1e6
    benchmark.extra_info.update(task_us=task_us, call_us=call_us, task_over_call=task_us / call_us,
                                in_flight_task_us=in_flight_us)
    print(f"\nempty Ray task {task_us:.0f} µs one at a time ({in_flight_us:.0f} µs each with 1000 in flight), "
          f"function call {call_us:.3f} µs: {task_us / call_us:.0f}x")
