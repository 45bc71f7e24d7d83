"""The Monte Carlo kernel's cost against the exact one at equal error.

A small CNN (CNN-GAP depth 2, 3×8×8 inputs) and an MLP for contrast, the symmetric train kernel
of N = 32 inputs in float64 (NTKBENCH_BENCH_MC_N). pytest-benchmark times the Monte Carlo
estimate from S = 16 networks (NTKBENCH_BENCH_MC_SAMPLES) of width 128
(NTKBENCH_BENCH_MC_WIDTH); the exact kernel is timed in the same test (the fastest of 3 runs).

The estimate's relative Frobenius error against the exact kernel, for nngp and ntk, is split
into its noise, ‖se‖/‖K‖ from the reported standard errors, and the width bias, estimated as
√max(err² − noise², 0) (rough from one run: it reads high while the noise dominates). The noise
falls as 1/√S, so a target error ε needs

    S(ε) = S · (noise / ε)²  samples,   costing  S(ε) · (time per sample),

provided the bias is below ε; where the bias estimate is above ε/2, ``bias_warning_at_<ε>`` says
to widen the networks (a wider network costs more per sample but has less noise per sample).
``extra_info`` holds, per kernel, the error, noise and bias, and for ε = 1e-2 and 1e-3 the
samples needed (the larger of nngp's and ntk's) and the time ratio ``mc_over_exact_at_<ε>`` =
Monte Carlo time at ε / exact time. The exact kernel is exact to
rounding (~1e-15), so "equal error" means: the Monte Carlo time to reach ε, against the time of
a kernel that is already better than any ε.
"""

import math
import os
import time

import pytest
import torch

from ntkbench.arch import get
from ntkbench.arch.monte_carlo import monte_carlo_kernel

N = int(os.environ.get("NTKBENCH_BENCH_MC_N", "32"))
SAMPLES = int(os.environ.get("NTKBENCH_BENCH_MC_SAMPLES", "16"))
WIDTH = int(os.environ.get("NTKBENCH_BENCH_MC_WIDTH", "128"))
TARGETS = (1e-2, 1e-3)
CASES = {
    "cnn-gap2-8x8": (lambda: get("cnn", depth=2), (3, 8, 8)),
    "mlp2": (lambda: get("mlp", depth=2), (64,)),
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@pytest.mark.parametrize("name", CASES)
def test_monte_carlo_vs_exact_at_equal_error(benchmark, name):
    make, shape = CASES[name]
    arch = make()
    x = torch.randn(N, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact_s = math.inf
    for _ in range(3):
        start = time.perf_counter()
        exact = arch.kernel(x)
        exact_s = min(exact_s, time.perf_counter() - start)
    k = benchmark.pedantic(monte_carlo_kernel, args=(arch, x), kwargs={"n_samples": SAMPLES, "width": WIDTH},
                           rounds=1, iterations=1)
    mc_s = benchmark.stats.stats.min
    info = {"n": N, "n_samples": SAMPLES, "width": WIDTH, "exact_s": exact_s, "mc_s": mc_s}
    noise = {}
    for field in ("nngp", "ntk"):
        reference = getattr(exact, field)
        error = _rel(getattr(k, field), reference)
        noise[field] = float(torch.linalg.norm(getattr(k, f"{field}_se")) / torch.linalg.norm(reference))
        bias = math.sqrt(max(error**2 - noise[field] ** 2, 0.0))
        info.update({f"{field}_error": error, f"{field}_noise": noise[field], f"{field}_bias": bias})
    lines = [f"\n{name}: exact {exact_s:.3g} s, Monte Carlo ({SAMPLES} x width {WIDTH}) {mc_s:.3g} s; "
             + ", ".join(f"{f} error {info[f + '_error']:.3g} (noise {info[f + '_noise']:.3g})" for f in noise)]
    bias = max(info["nngp_bias"], info["ntk_bias"])
    for target in TARGETS:
        needed = max(2, math.ceil(SAMPLES * max(noise.values()) ** 2 / target**2))
        ratio = mc_s / SAMPLES * needed / exact_s
        info[f"samples_at_{target:g}"] = needed
        info[f"mc_over_exact_at_{target:g}"] = ratio
        warning = ""
        if bias > target / 2:
            warning = f"width {WIDTH} may be too narrow: bias estimate {bias:.2g}"
            info[f"bias_warning_at_{target:g}"] = warning
        lines.append(f"  at error {target:g}: {needed} samples, {ratio:.3g}x the exact kernel's time"
                     + (f" ({warning})" if warning else ""))
    benchmark.extra_info.update(info)
    print("\n".join(lines))
    assert k.nngp.isfinite().all() and k.ntk.isfinite().all()
