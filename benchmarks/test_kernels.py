"""Kernel timings on the CPU against neural-tangents' stax in the same run.

FC depth 3 and CNN-GAP depth 3 at 8×8 and 16×16, N = 256 (set NTKBENCH_BENCH_N to change it),
the symmetric train kernel, float64 on both sides. neural-tangents runs in `.venv-nt`
(`make nt-env`) as a subprocess; its time is measured inside that process after a warm-up call
that includes XLA compilation, and stored in `extra_info` with the ratio ours / neural-tangents.
Without `.venv-nt` the comparison is skipped with a message; our timings still run.

The WRN case (`test_wrn_blocks_vs_neural_tangents`) takes one layer list through both libraries
(ntkbench's `from_spec`, neural-tangents' stax via benchmarks/nt_bridge.py): a 3×3 stem and two
blocks of the neural-tangents README's Wide ResNet on 8×8 inputs, one with an Identity shortcut
and one with stride 2 and a Conv shortcut, then GlobalAvgPool and Dense. It reports kernel
entries (N² pairs) per second of each side and their ratio ours / neural-tangents (> 1: ours
faster), each side's fastest of 3 rounds after a warm-up, for ours in float64 and float32 against
neural-tangents in float64. It is skipped with a message while `from_spec` does not know the
"residual" entry.
"""

import functools
import os

import numpy as np
import pytest
import torch

from nt_client import nt_available, nt_kernel
from ntkbench.arch import get
from ntkbench.arch.spec import from_spec, to_spec

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


def _conv3(stride: int = 1) -> list:
    return ["conv", 3, 1.0, None, stride]


# The README's WideResnetBlock(channels, strides, channel_mismatch): Relu → Conv → Relu → Conv main,
# Identity or Conv(3×3, strides) shortcut; all convs W_std = 1, no bias.
WRN_BLOCKS = [_conv3(),
              ["residual", [["relu"], _conv3(), ["relu"], _conv3()], []],
              ["residual", [["relu"], _conv3(2), ["relu"], _conv3()], [_conv3(2)]],
              ["gap"], ["dense", 1.0, 0.0]]
WRN_SHAPE = (3, 8, 8)
WRN_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}
# Fastest of 3 rounds after one warm-up on each side: on a loaded 2-core machine one round of the
# same call was seen to take anywhere from 0.75 s to 16 s (N = 64, two threads).
WRN_ROUNDS = 3


def _wrn_arch():
    """WRN_BLOCKS through from_spec; a skip while from_spec refuses the smallest residual block."""
    try:
        from_spec([["dense", 1.0, 0.0], ["residual", [["relu"], ["dense", 1.0, 0.0]], []]])
    except (ValueError, TypeError) as e:
        if "residual" in str(e):
            pytest.skip(f"ntkbench.arch.spec.from_spec does not build residual blocks yet ({e})")
        raise
    return from_spec(WRN_BLOCKS)


@functools.lru_cache(maxsize=None)
def _nt_wrn(n: int) -> dict[str, np.ndarray]:
    """neural-tangents' float64 kernel and timings for WRN_BLOCKS, once per run for both dtypes."""
    x = torch.randn(n, *WRN_SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return nt_kernel(WRN_BLOCKS, x.numpy(), rounds=WRN_ROUNDS, batch_size=32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_wrn_blocks_vs_neural_tangents(benchmark, dtype):
    arch = _wrn_arch()
    x = torch.randn(N, *WRN_SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dtype)
    k = benchmark.pedantic(arch.kernel, args=(x,), rounds=WRN_ROUNDS, warmup_rounds=1)
    ours = N * N / benchmark.stats.stats.min
    benchmark.extra_info.update(n=N, dtype=str(dtype).removeprefix("torch."), entries_per_s_ours=ours)
    if not nt_available():
        benchmark.extra_info["neural_tangents"] = "skipped: .venv-nt missing (run `make nt-env`)"
        print("\nneural-tangents comparison skipped: .venv-nt is missing; run `make nt-env`")
        return
    nt = _nt_wrn(N)
    theirs = N * N / float(nt["times"].min())
    benchmark.extra_info.update(entries_per_s_nt=theirs, ratio_entries_per_s_ours_over_nt=ours / theirs)
    print(f"\nwrn-blocks-8x8 {dtype}: ntkbench {ours:.4g} entries/s, neural-tangents (float64) {theirs:.4g} "
          f"entries/s, ours/nt {ours / theirs:.2f}")
    ref = torch.from_numpy(nt["ntk"])
    rel = float((k.ntk.double() - ref).abs().max() / ref.abs().max())
    assert rel < WRN_TOL[dtype], f"{dtype} NTK differs from neural-tangents by {rel:.2e} (relative to its max)"
