"""eNTK throughput: train-kernel entries per second of each implementation (contraction, NTK-vector
products, sketch) on an MLP and a small CNN, with the cost model's estimate for each.

Sizes come from the environment, so the same file serves the CPU and the GPU:
NTKBENCH_BENCH_ENTK_N (inputs, default 128), NTKBENCH_BENCH_ENTK_KERNEL (sum or full, default
sum), NTKBENCH_BENCH_ENTK_SKETCH (m, default 256), NTKBENCH_BENCH_ENTK_DTYPE (float64 or float32,
default float64, entk's default). ``extra_info`` holds entries/s, the plan (block, held J), the
estimated GFLOP and the achieved GFLOP/s, which calibrates the cost model on the machine.
On CUDA the timed function synchronizes before it returns.
"""

import os

import pytest
import torch

from ntkbench.arch import get
from ntkbench.methods import empirical
from ntkbench.methods.empirical import Linearization
from ntkbench.methods.training import init_network
from ntkbench.methods.entk import ENTK

N = int(os.environ.get("NTKBENCH_BENCH_ENTK_N", "128"))
KERNEL = os.environ.get("NTKBENCH_BENCH_ENTK_KERNEL", "sum")
SKETCH_DIM = int(os.environ.get("NTKBENCH_BENCH_ENTK_SKETCH", "256"))
DTYPE = {"float64": torch.float64, "float32": torch.float32}[os.environ.get("NTKBENCH_BENCH_ENTK_DTYPE", "float64")]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NUM_CLASSES = 10
CASES = {
    "mlp2x256": (lambda: get("mlp", depth=2, width=256), (64,)),
    "cnn2x16-16x16": (lambda: get("cnn", depth=2, channels=16), (3, 16, 16)),
}
WORKING_BYTES = 4 * 2**30


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("implementation", empirical.IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES)
def test_entk_kernel_throughput(benchmark, case, implementation):
    make, shape = CASES[case]
    x = torch.randn(N, *shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    net, params = init_network(ENTK(arch=make()), x, NUM_CLASSES)
    lin = Linearization(net.to(DTYPE), {k: v.to(DTYPE) for k, v in params.items()}, KERNEL, NUM_CLASSES)
    x = x.to(DTYPE)
    sizes = empirical.measure(lin, x, SKETCH_DIM)
    plan = empirical.estimate(implementation, sizes, WORKING_BYTES)

    def kernel() -> None:
        empirical.train_kernel(lin, x, plan, seed=0)
        _sync()

    benchmark.pedantic(kernel, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.min
    entries = (N * lin.rows_per_input) ** 2
    benchmark.extra_info.update(
        n=N, kernel=KERNEL, device=DEVICE.type, dtype=str(DTYPE), n_params=sizes.n_params, block=plan.block,
        hold=plan.hold, sketch_dim=plan.sketch_dim, entries_per_s=entries / seconds,
        estimated_gflop=plan.flops / 1e9, achieved_gflop_per_s=plan.flops / 1e9 / seconds)
    print(f"\n{case} {implementation}: {entries / seconds:.4g} entries/s, "
          f"estimate {plan.flops / 1e9:.3g} GFLOP at {plan.flops / 1e9 / seconds:.3g} GFLOP/s")
