"""What the training diagnostics cost: ``nn`` fits on digits with the default interval
(``diagnostics_every=10``: weight distance, and the 32-input probe eNTK's distance and
alignment) against the same fit with them off. The two alternate within each round, so that
load on a shared machine hits both alike; ``extra_info["ratio_on_over_off"]`` is the ratio of
their fastest rounds (target: under 1.10).

Both fits run without MLflow (a plain RunContext), so the figure is the diagnostics' own compute.
"""

import time

from ntkbench import arch, methods, tasks

TASK = tasks.get("digits", n_train=1000, n_test=100)
NET = arch.get("mlp", depth=2, width=256)


def test_nn_fit_with_diagnostics_against_without(benchmark):
    x, y = TASK.train
    times: dict[int, list[float]] = {0: [], 10: []}

    def pair():
        for every in (0, 10):
            start = time.perf_counter()
            methods.get("nn", NET, 0, diagnostics_every=every).fit(x, y, TASK.num_classes, methods.RunContext())
            times[every].append(time.perf_counter() - start)

    benchmark.pedantic(pair, rounds=7, warmup_rounds=1)
    ratio = min(times[10]) / min(times[0])
    benchmark.extra_info.update(off_min_s=min(times[0]), on_min_s=min(times[10]), ratio_on_over_off=ratio)
    print(f"\nnn on digits (n_train 1000, 40 epochs): off {min(times[0]):.3f} s, diagnostics every 10 epochs "
          f"{min(times[10]):.3f} s, ratio {ratio:.3f}")
