"""The fused Triton pass (``arch.fused``) against the pure-torch path, its reference.

Without a GPU the kernels run in Triton's CPU interpreter. Triton reads TRITON_INTERPRET when
it decorates a kernel, at import, so the interpreted tests run in a subprocess started by
``test_under_the_triton_interpreter`` and are skipped in the outer run.

Tolerances, as max |fused − torch| / max |torch|: the pass repeats the torch path's operations in
its order, with correctly rounded sqrt and division, so only acos/asin (the interpreter's own,
see ``fused``) and NumPy's rounding differ. Measured: at most 2.7e-16 in float64 and 2.2e-7 in
float32 (a couple of float32 roundings, ε = 1.2e-7); we allow 1e-13 and 2e-6.
"""

import os
import subprocess
import sys

import pytest
import torch

from ntkbench.arch import AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, Kernel, ReLU, serial

pytest.importorskip("triton", reason="the fused kernels need Triton (shipped with CUDA builds of torch)")
from ntkbench.arch.fused import affine_nonlinearity  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
in_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs in the subprocess of test_under_the_triton_interpreter")
TOL = {torch.float64: 1e-13, torch.float32: 2e-6}
ARCHS = {
    "fc-relu": (serial(Dense(8, 1.4, 0.1), ReLU(), Dense(8, 1.4, 0.1), ReLU(), Dense(1, 1.0, 0.1)), (7,)),
    "fc-erf": (serial(Dense(8, 1.2, 0.3), Erf(), Dense(1, 1.0, None)), (7,)),
    "cnn-flatten": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), Conv(4, 5, 1.4, None), Erf(), Flatten(), Dense(1)), (2, 6, 5)),
    "cnn-gap": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), Conv(4, 1, 1.3, 0.2), ReLU(), GlobalAvgPool(), Dense(1)), (2, 5, 6)),
    "cnn-pool": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), AvgPool(2), Conv(4, 3), ReLU(), Flatten(), Dense(1)), (2, 6, 6)),
}


def _x(shape, n, seed=0):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@in_interpreter
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ARCHS)
def test_fused_matches_torch(name, dtype):
    arch, shape = ARCHS[name]
    x1, x2 = _x(shape, 3), _x(shape, 2, seed=1)
    for args in ((x1,), (x1, x2)):
        fused = arch.kernel(*args, dtype=dtype, fused=True)
        torch_path = arch.kernel(*args, dtype=dtype, fused=False)
        for kind in ("nngp", "ntk", "cov1", "cov2"):
            assert _rel(getattr(fused, kind), getattr(torch_path, kind)) < TOL[dtype], kind


@in_interpreter
@pytest.mark.parametrize("act", [ReLU(), Erf()], ids=["relu", "erf"])
def test_acos_and_asin_over_their_whole_range(act):
    # One Dense + act step on pairs with variances q and covariances s spanning cos θ (ReLU) or
    # 2s/(2q + 1) (erf) over [-1, 1], endpoints included; erf's ntk is infinite at ±1, so it
    # stops one part in 1e12 short of them.
    end = 1.0 if isinstance(act, ReLU) else 1 - 1e-12
    s = torch.cat([torch.linspace(-end, end, 4001, dtype=torch.float64),
                   torch.tensor([-end, end - 1e-15, -end + 1e-15, 1e-300, 0.0], dtype=torch.float64)])
    q = 1.0 if isinstance(act, ReLU) else 0.5
    k = Kernel(s[None, :].clone(), torch.ones(1, len(s), dtype=torch.float64), torch.full((1,), q, dtype=torch.float64),
               torch.full((len(s),), q, dtype=torch.float64), "none")
    dense = Dense(1, 1.0, None)
    fused, torch_path = affine_nonlinearity(k, dense, act), act.kernel(dense.kernel(k))
    torch.testing.assert_close(fused.nngp, torch_path.nngp, rtol=0, atol=4e-16)
    torch.testing.assert_close(fused.ntk, torch_path.ntk, rtol=4e-15, atol=4e-16)


@pytest.mark.skipif(INTERPRETED, reason="compiles the CUDA kernel, which the interpreter replaces")
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
@pytest.mark.parametrize("mode, relu", [(0, True), (1, False), (2, True)], ids=["vectors-relu", "diag-erf", "full-relu"])
def test_kernel_compiles_for_sm90_without_a_gpu(mode, relu, dtype):
    # The interpreter runs the kernel's Python; this runs Triton's compiler down to a cubin for
    # H100/H200 (sm_90), with libdevice's acos/asin and the static branches the interpreter skips.
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from ntkbench.arch.fused import BLOCK, _affine_act_kernel

    pointers = ("nngp_ptr", "ntk_ptr", "q1_ptr", "q2_ptr", "params_ptr", "nngp_out", "ntk_out")
    constants = dict(MODE=mode, H=32 if mode else 1, W=32 if mode else 1, R=1 if mode else 0, RELU=relu,
                     LIBDEVICE=True, BLOCK=BLOCK)
    signature = {**{name: f"*{dtype}" for name in pointers}, "n2": "i32", "cols": "i32",
                 **{name: "constexpr" for name in constants}}
    compiled = compile(ASTSource(_affine_act_kernel, signature, constexprs=constants), target=GPUTarget("cuda", 90, 32))
    assert len(compiled.asm["cubin"]) > 0


@pytest.mark.skipif(INTERPRETED, reason="the outer test")
def test_under_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="checks the error without CUDA or the interpreter")
def test_fused_on_the_cpu_without_the_interpreter_is_an_error():
    arch, shape = ARCHS["cnn-gap"]
    with pytest.raises(ValueError, match=r"fused=True runs Triton kernels, which need CUDA tensors .* got cpu"):
        arch.kernel(_x(shape, 2), fused=True)


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED, reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ARCHS)
def test_cuda_fused_matches_cpu_torch(name, dtype):
    # On CUDA acos/asin are libdevice's, Triton contracts multiply-adds into FMAs and cuBLAS sums
    # the input kernel in its own order: a few more roundings than the interpreter's 2.2e-7.
    arch, shape = ARCHS[name]
    x = _x(shape, 6)
    gpu, cpu = arch.kernel(x.cuda(), dtype=dtype), arch.kernel(x, dtype=dtype, fused=False)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for kind in ("nngp", "ntk"):
        assert _rel(getattr(gpu, kind).cpu(), getattr(cpu, kind)) < tol, kind
