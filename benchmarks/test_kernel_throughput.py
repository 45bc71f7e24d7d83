"""Kernel entries per second of the at-scale path (``arch.tiled.tiled_kernel``, float32, host
output) for FC, CNN-V (Flatten readout), CNN-GAP and Myrtle-5 at 32×32 and 64×64, with the
work per entry counted from the layers' declarations (``Serial.cost``) so that a report can set the
rate against a device's ceiling.

The symmetric N×N train kernel is timed: ``entries`` = N² delivered, ``pairs`` = N(N+1)/2
computed. Defaults are small for the CPU; on a GPU set
``NTKBENCH_TP_N`` (all cases), ``NTKBENCH_TP_DEPTH`` (FC, CNN-V, CNN-GAP; default 2) and
``NTKBENCH_TP_DTYPE`` (float32 or float64), e.g. the issue's targets:

    NTKBENCH_TP_N=100000 pytest benchmarks/test_kernel_throughput.py -k fc-64        # < 10 s
    NTKBENCH_TP_N=64 NTKBENCH_TP_DEPTH=21 pytest benchmarks/test_kernel_throughput.py -k cnn-gap-32

Ceiling model per computed pair on the fused path: t >= max(flops / F, bytes / B), with the H200's
F = 50.6 (fp32) or 54.7 (fp64) TFLOP/s and B = 4.2 TB/s; ``flops`` counts each acos/asin at its
libdevice cost (``ntkbench.plan.ACOS_FLOPS``). The issue's 76·10⁹ map evaluations per second is the pure-torch
``relu_map``'s rate; it bounds the torch path (``maps / M``), not the fused kernel, and is stored
as ``h200_torch_map_bound_pairs_per_s``. ``extra_info`` holds the counts per entry, the ceiling
and, on CUDA, the fraction of it achieved. CUDA work is synchronized inside the timed function.
"""

import os
from dataclasses import asdict

import pytest
import torch

from ntkbench.arch import get
from ntkbench.arch.tiled import tiled_kernel
from ntkbench.plan import h200_pairs_per_s as ceiling

# The pure-torch relu_map's rate on an H200 (map evaluations per second), which bounds the torch path.
H200_TORCH_MAPS = 76e9
DEPTH = int(os.environ.get("NTKBENCH_TP_DEPTH", "2"))
DTYPE = getattr(torch, os.environ.get("NTKBENCH_TP_DTYPE", "float32"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = {  # name: (architecture, side, default N on the CPU)
    "fc-32": (lambda: get("mlp", depth=DEPTH), 32, 512),
    "fc-64": (lambda: get("mlp", depth=DEPTH), 64, 256),
    "cnn-v-32": (lambda: get("cnn", depth=DEPTH, readout="flatten"), 32, 32),
    "cnn-v-64": (lambda: get("cnn", depth=DEPTH, readout="flatten"), 64, 16),
    "cnn-gap-32": (lambda: get("cnn", depth=DEPTH), 32, 2),
    "cnn-gap-64": (lambda: get("cnn", depth=DEPTH), 64, 1),
    "myrtle5-32": (lambda: get("myrtle5"), 32, 2),
    "myrtle5-64": (lambda: get("myrtle5"), 64, 1),
}


@pytest.mark.parametrize("name", CASES)
def test_kernel_throughput(benchmark, name):
    make, side, default_n = CASES[name]
    arch, n = make(), int(os.environ.get("NTKBENCH_TP_N", default_n))
    x = torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def run():
        k = tiled_kernel(arch, x, dtype=DTYPE).kernel
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return k

    warm = DEVICE.type == "cuda"  # Triton compiles on the first call
    k = benchmark.pedantic(run, rounds=1 if n * n * arch.pair_elements((3, side, side)) > 1e7 else 3,
                           warmup_rounds=1 if warm else 0)
    assert torch.isfinite(k.ntk).all()
    seconds, pairs = benchmark.stats.stats.min, n * (n + 1) / 2
    cost = arch.cost((3, side, side), fused=True)
    info = {"n": n, "depth": DEPTH, "dtype": str(DTYPE), "device": DEVICE.type, "entries_per_s": n * n / seconds,
            "pairs_per_s": pairs / seconds, **{f"{key}_per_entry": v for key, v in asdict(cost).items()},
            "h200_ceiling_pairs_per_s": ceiling(cost, DTYPE),
            "h200_torch_map_bound_pairs_per_s": H200_TORCH_MAPS / cost.maps if cost.maps else None}
    if DEVICE.type == "cuda":
        info["fraction_of_h200_ceiling"] = info["pairs_per_s"] / info["h200_ceiling_pairs_per_s"]
    benchmark.extra_info.update(info)
    print(f"\n{name}: N={n} {pairs / seconds:.4g} pairs/s ({n * n / seconds:.4g} entries/s) on {DEVICE.type}; "
          f"per entry {cost.flops:.3g} flop, {cost.elements * torch.finfo(DTYPE).bits // 8:.3g} B, {cost.maps:.3g} maps; "
          f"H200 ceiling {ceiling(cost, DTYPE):.4g} pairs/s")
