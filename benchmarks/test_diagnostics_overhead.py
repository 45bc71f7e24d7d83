"""What the training diagnostics cost in a run: ``ntkbench.run`` of ``nn`` as ``make bench`` runs
it (digits, every training image, mlp depth 2 width 256, 40 epochs, logged to an MLflow SQLite
store), with the default interval (``TrainOptions.diagnostics_every``: weight distance, and the
32-input probe eNTK's distance and alignment) against the same run with them off. The two
alternate within each round, so that load on a shared machine hits both alike;
``extra_info["ratio_on_over_off"]`` is the ratio of their fastest rounds (target: under 1.10).
"""

import time

from ntkbench import runner
from ntkbench.methods.training import TrainOptions

EVERY = TrainOptions.diagnostics_every
OPTIONS = {"arch.depth": 2, "arch.width": 256}


def test_nn_run_with_diagnostics_against_without(benchmark, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    times: dict[int, list[float]] = {0: [], EVERY: []}

    def pair():
        for every in (0, EVERY):
            start = time.perf_counter()
            runner.run(task="digits", method="nn", options={**OPTIONS, "nn.diagnostics_every": every},
                       tracking_uri=uri, device="cpu")
            times[every].append(time.perf_counter() - start)

    benchmark.pedantic(pair, rounds=5, warmup_rounds=1)
    ratio = min(times[EVERY]) / min(times[0])
    benchmark.extra_info.update(every=EVERY, off_min_s=min(times[0]), on_min_s=min(times[EVERY]), ratio_on_over_off=ratio)
    print(f"\nnn run on digits (1437 images, 40 epochs, MLflow): off {min(times[0]):.3f} s, diagnostics every "
          f"{EVERY} epochs {min(times[EVERY]):.3f} s, ratio {ratio:.3f}")
