"""Kernel timings on the CPU against neural-tangents' stax in the same run.

FC depth 3 and CNN-GAP depth 3 at 8×8 and 16×16, N = 256 (set NTKBENCH_BENCH_N to change it),
the symmetric train kernel, float64 on both sides. neural-tangents runs in `.venv-nt`
(`make nt-env`) as a subprocess; its time is measured inside that process after a warm-up call
that includes XLA compilation, and stored in `extra_info` with the ratio ours / neural-tangents.
Without `.venv-nt` the comparison is skipped with a message; our timings still run.
"""

import os

import pytest
import torch

from nt_client import nt_available, nt_kernel
from ntkbench.arch import get
from ntkbench.arch.spec import to_spec

N = int(os.environ.get("NTKBENCH_BENCH_N", "256"))
CASES = {
    "fc3": (lambda: get("mlp", depth=3), (64,)),
    "cnn-gap3-8x8": (lambda: get("cnn", depth=3), (3, 8, 8)),
    "cnn-gap3-16x16": (lambda: get("cnn", depth=3), (3, 16, 16)),
}


@pytest.mark.parametrize("name", CASES)
def test_kernel_vs_neural_tangents(benchmark, name):
    make, shape = CASES[name]
    arch = make()
    x = torch.randn(N, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rounds = 20 if name == "fc3" else 1
    k = benchmark.pedantic(arch.kernel, args=(x,), rounds=rounds, warmup_rounds=1 if rounds > 1 else 0)
    benchmark.extra_info["n"] = N
    if not nt_available():
        benchmark.extra_info["neural_tangents"] = "skipped: .venv-nt missing (run `make nt-env`)"
        print("\nneural-tangents comparison skipped: .venv-nt is missing; run `make nt-env`")
        return
    # neural-tangents holds its whole (N, N, HW, HW) covariance unless batched.
    nt = nt_kernel(to_spec(arch), x.numpy(), rounds=rounds, batch_size=0 if len(shape) == 1 else 32)
    ours_min, nt_min = benchmark.stats.stats.min, float(nt["times"].min())
    benchmark.extra_info.update(nt_min_s=nt_min, ratio_ours_over_nt=ours_min / nt_min)
    print(f"\n{name}: ntkbench {ours_min:.4g} s, neural-tangents {nt_min:.4g} s, ratio {ours_min / nt_min:.2f}")
    rel = float((k.ntk - torch.from_numpy(nt["ntk"])).abs().max() / k.ntk.abs().max())
    assert rel < 1e-6
