"""One Triton pass per (Conv or Dense, then ReLU or Erf) pair of layers on CUDA.

For a batch of input pairs, with pair tensors nngp Σ and ntk Θ (see ``kernel.py`` for the
layouts), the pass computes, per output position pair (i, j):

    s(i, j) = w_std²/k² · Σ_δ Σ(i+δ, j+δ) + b_std²                (the affine layer, k×k window)
    t(i, j) = s(i, j)   + w_std²/k² · Σ_δ Θ(i+δ, j+δ)
    Σ'(i, j) = E[φ(u)φ(v)],   Θ'(i, j) = E[φ'(u)φ'(v)] · t(i, j),
    (u, v) ~ N(0, [[q1(i), s], [s, q2(j)]])                        (Jacot et al. 2018; Lee et al. 2019)

with the arc-cosine forms for ReLU (Cho & Saul 2009) and the arcsine forms for erf (Williams
1997) of ``kernel.relu_map`` and ``kernel.erf_map``. For a Dense layer k = 1 and there is no
window. Read with the following affine layer this is the familiar Σ' = w²·E[φφ] + b²,
Θ' = Σ' + w²·E[φ'φ']·Θ: the same operations, grouped so that the window sum comes before φ.

Why the window sum is fused and in this order: the window sum is linear and φ is not, so summing
first evaluates the arccos once per output; fusing φ before the next layer's window would
evaluate it k² = 9 times. Counted per position pair for a 3×3 Conv and a ReLU in float32, the
pure-torch path makes 81 reads or writes of 4 bytes, 324 bytes: the window sums of Σ and Θ with
their scaling (a clone and two shifted adds along each axis, 2 × 18), the affine update (7), the
ReLU map's eleven elementwise passes (35) and Θ' (3). The fused pass reads Σ and Θ once from DRAM
(the 9 neighbours come from L2: they lie within three rows of the same pair) and writes Σ' and
Θ': 16 bytes. At 4.2 TB/s that is 262·10⁹ pairs/s against the 76·10⁹/s of the arccos map
itself, so the fused pass is bound by the map, while the torch path is bound by memory at
≈ 13·10⁹/s: fusing pays ≈ 6× (a model: no GPU measured it here). AvgPool, GlobalAvgPool and
Flatten read a pair tensor once and write a smaller one; they stay in torch.

The self terms cov1, cov2 (a factor of the batch smaller than the pair tensors) are updated by
the torch code, so the variances q1, q2 are bitwise those of the reference path.

Accuracy: the kernel repeats the torch path's operations in its order (the window sum by
columns of rows, as ``kernel.box_sum``; correctly rounded sqrt and division), so the outputs
differ from it by the last bits of acos/asin and of fused multiply-adds. On CUDA acos and asin
are libdevice's. Triton's CPU interpreter cannot call libdevice (``create_extern_elementwise``
raises NotImplementedError there), so under ``TRITON_INTERPRET=1`` they are computed from
tl.sin/tl.cos: a first guess from Abramowitz & Stegun 4.4.45 (|error| ≤ 7·10⁻⁵) refined by one
rotation, θ + atan(r) with r = tan(φ − θ) and atan(r) ≈ r − r³/3 (error ≤ r⁵/5 < 10⁻²⁰).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ntkbench.arch.activations import Activation
from ntkbench.arch.kernel import Kernel, box_sum, full_to_diag, relu_map, variances
from ntkbench.arch.layers import Affine

BLOCK = 1024
# Read once, as Triton reads it when it decorates the kernels below.
INTERPRETED = triton.knobs.runtime.interpret
MODES = {"none": 0, "diag": 1, "full": 2}


def check(device: torch.device, dtype: torch.dtype) -> None:
    """Raise ValueError unless Triton can run on ``device`` in ``dtype``."""
    if device.type != "cuda" and not INTERPRETED:
        raise ValueError(f"fused=True runs Triton kernels, which need CUDA tensors (or TRITON_INTERPRET=1 "
                         f"for the CPU interpreter), got {device}; pass fused=False for the torch path")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"fused kernels compute in float32 or float64, got {dtype}")


def affine_nonlinearity(k: Kernel, affine: Affine, act: Activation) -> Kernel:
    """``act.kernel(affine.kernel(k))``, with the pair tensors updated in one Triton pass, for
    layers that declare themselves ``fusable``: an affine layer with a symmetric stride-1 window
    and an activation whose map is ReLU's or erf's (the two the kernel below implements)."""
    size = affine.window
    w_var, b_var = affine.w_std**2, (affine.b_std or 0.0) ** 2
    cov1 = _affine_self(k.cov1, size, k.spatial, w_var, b_var)
    cov2 = cov1 if k.cov2 is k.cov1 else _affine_self(k.cov2, size, k.spatial, w_var, b_var)
    _, self1, self2 = variances(Kernel(k.nngp, k.ntk, cov1, cov2, k.spatial))
    fn = act.map()
    out1 = fn(cov1, *self1)[0]
    out2 = out1 if cov2 is cov1 else fn(cov2, *self2)[0]
    nngp, ntk = _pairs(k.nngp, k.ntk, _diag(cov1), _diag(cov2), k.spatial, size, w_var, b_var, fn is relu_map)
    return Kernel(nngp, ntk, out1, out2, k.spatial)


def _affine_self(cov: torch.Tensor, size: int, spatial: str, w_var: float, b_var: float) -> torch.Tensor:
    """The self-term update of ``Conv.kernel``/``Dense.kernel``, in the same operations."""
    if spatial != "none":
        cov = box_sum(cov, size, spatial).mul_(1.0 / size**2)
    return cov * w_var + b_var


def _diag(cov: torch.Tensor) -> torch.Tensor:
    """The variances q(x_i) as a contiguous (N, positions) tensor."""
    d = full_to_diag(cov) if cov.dim() == 5 else cov
    return d.reshape(len(d), -1).contiguous()


def _pairs(nngp: torch.Tensor, ntk: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, spatial: str, size: int,
           w_var: float, b_var: float, relu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    nngp, ntk = nngp.contiguous(), ntk.contiguous()
    n1, n2 = nngp.shape[:2]
    h, w = (nngp.shape[2], nngp.shape[3]) if spatial != "none" else (1, 1)
    rows, cols = (n1, n2) if spatial == "none" else (n1 * n2, nngp[0, 0].numel())
    out_nngp, out_ntk = torch.empty_like(nngp), torch.empty_like(ntk)
    # Scalars go through memory so that float64 runs keep them in float64 (Triton types float
    # arguments as fp32); in float32 they round as torch rounds a Python scalar.
    params = torch.tensor([1.0 / size**2, w_var, b_var], dtype=nngp.dtype, device=nngp.device)
    grid = (rows, triton.cdiv(cols, BLOCK))
    if grid[1] > 65535:  # CUDA's limit on the second grid dimension
        raise ValueError(f"{cols} position pairs per input pair exceed the fused kernel's {65535 * BLOCK}; "
                         "pass fused=False")
    _affine_act_kernel[grid](nngp, ntk, q1, q2, params, out_nngp, out_ntk, n2, cols,
                             MODE=MODES[spatial], H=h, W=w, R=size // 2, RELU=relu,
                             LIBDEVICE=not INTERPRETED, BLOCK=BLOCK)
    return out_nngp, out_ntk


@triton.jit
def _affine_act_kernel(nngp_ptr, ntk_ptr, q1_ptr, q2_ptr, params_ptr, nngp_out, ntk_out, n2, cols,
                       MODE: tl.constexpr, H: tl.constexpr, W: tl.constexpr, R: tl.constexpr,
                       RELU: tl.constexpr, LIBDEVICE: tl.constexpr, BLOCK: tl.constexpr):
    """One program: BLOCK position pairs of one input pair (MODE 1, 2) or BLOCK pairs of one row
    of input pairs (MODE 0, vectors)."""
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < cols
    base = row.to(tl.int64) * cols
    w_var = tl.load(params_ptr + 1)
    b_var = tl.load(params_ptr + 2)
    if MODE == 0:  # vectors: row is x, col is x'
        q1 = tl.load(q1_ptr + row)
        q2 = tl.load(q2_ptr + col, mask=mask, other=1.0)
        s = tl.load(nngp_ptr + base + col, mask=mask, other=0.0)
        t = tl.load(ntk_ptr + base + col, mask=mask, other=0.0)
    else:
        HW: tl.constexpr = H * W
        a = row // n2
        b = row % n2
        if MODE == 1:  # same-position pairs: col = (i, j)
            q1 = tl.load(q1_ptr + a * HW + col, mask=mask, other=1.0)
            q2 = tl.load(q2_ptr + b * HW + col, mask=mask, other=1.0)
            i1 = col // W
            j1 = col % W
            i2 = i1
            j2 = j1
            SY: tl.constexpr = W
            SX: tl.constexpr = 1
        else:  # all position pairs: col = ((i1, j1), (i2, j2))
            p1 = col // HW
            p2 = col % HW
            q1 = tl.load(q1_ptr + a * HW + p1, mask=mask, other=1.0)
            q2 = tl.load(q2_ptr + b * HW + p2, mask=mask, other=1.0)
            i1 = p1 // W
            j1 = p1 % W
            i2 = p2 // W
            j2 = p2 % W
            SY: tl.constexpr = HW * W + W
            SX: tl.constexpr = HW + 1
        scale = tl.load(params_ptr)
        s = _window_sum(nngp_ptr + base + col, mask, i1, j1, i2, j2, H, W, SY, SX, R) * scale
        t = _window_sum(ntk_ptr + base + col, mask, i1, j1, i2, j2, H, W, SY, SX, R) * scale
    s = s * w_var + b_var
    t = s + w_var * t
    if RELU:
        norm = _sqrt(q1 * q2)
        c = tl.where(norm > 0, _div(s, norm), 0.0)
        c = tl.minimum(tl.maximum(c, -1.0), 1.0)
        if LIBDEVICE:
            theta = libdevice.acos(c)
        else:
            theta = _acos(c)
        dot = _div(3.141592653589793 - theta, 6.283185307179586)
        nngp = _div(_sqrt(1.0 - c * c) * norm, 6.283185307179586) + dot * s
    else:
        prod = (2.0 * q1 + 1.0) * (2.0 * q2 + 1.0)
        z = tl.minimum(tl.maximum(_div(2.0 * s, _sqrt(prod)), -1.0), 1.0)
        if LIBDEVICE:
            nngp = libdevice.asin(z) * 0.6366197723675814
        else:
            nngp = _asin(z) * 0.6366197723675814
        dot = _div(tl.full(prod.shape, 1.0, prod.dtype), _sqrt(prod - 4.0 * s * s)) * 1.2732395447351628
    tl.store(nngp_out + base + col, nngp, mask=mask)
    tl.store(ntk_out + base + col, dot * t, mask=mask)


@triton.jit
def _window_sum(ptr, mask, i1, j1, i2, j2, H: tl.constexpr, W: tl.constexpr, SY: tl.constexpr, SX: tl.constexpr,
                R: tl.constexpr):
    """Σ_δ t(i+δ, j+δ) over the (2R+1)² offsets with zero padding, in ``box_sum``'s order:
    columns dx = 0, −R..−1, 1..R, each the sum of its rows dy = 0, −R..−1, 1..R."""
    acc = _window_column(ptr, mask, i1, j1, i2, j2, 0, H, W, SY, SX, R)
    for n in tl.static_range(1, R + 1):
        acc += _window_column(ptr, mask, i1, j1, i2, j2, n - R - 1, H, W, SY, SX, R)
    for n in tl.static_range(1, R + 1):
        acc += _window_column(ptr, mask, i1, j1, i2, j2, n, H, W, SY, SX, R)
    return acc


@triton.jit
def _window_column(ptr, mask, i1, j1, i2, j2, DX: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                   SY: tl.constexpr, SX: tl.constexpr, R: tl.constexpr):
    ok = mask & (j1 + DX >= 0) & (j1 + DX < W) & (j2 + DX >= 0) & (j2 + DX < W)
    acc = tl.load(ptr + DX * SX, mask=ok, other=0.0)
    for n in tl.static_range(1, R + 1):
        acc += _window_load(ptr, ok, i1, i2, n - R - 1, DX, H, SY, SX)
    for n in tl.static_range(1, R + 1):
        acc += _window_load(ptr, ok, i1, i2, n, DX, H, SY, SX)
    return acc


@triton.jit
def _window_load(ptr, ok, i1, i2, DY: tl.constexpr, DX: tl.constexpr, H: tl.constexpr, SY: tl.constexpr,
                 SX: tl.constexpr):
    ok = ok & (i1 + DY >= 0) & (i1 + DY < H) & (i2 + DY >= 0) & (i2 + DY < H)
    return tl.load(ptr + DY * SY + DX * SX, mask=ok, other=0.0)


@triton.jit
def _sqrt(x):
    """Correctly rounded square root (tl.sqrt is approximate in float32 and exact in float64)."""
    if x.dtype == tl.float32:
        return tl.sqrt_rn(x)
    return tl.sqrt(x)


@triton.jit
def _div(x, y):
    """Correctly rounded division (``/`` is approximate in float32 and exact in float64)."""
    if x.dtype == tl.float32:
        return tl.div_rn(x, y)
    return x / y


@triton.jit
def _acos(c):
    """arccos(c) for c in [−1, 1] from sin and cos (for the interpreter, see the module doc)."""
    a = tl.abs(c)
    guess = _sqrt(1.0 - a) * (1.5707288 + a * (-0.2121144 + a * (0.0742610 + a * -0.0187293)))
    guess = tl.where(c < 0, 3.141592653589793 - guess, guess)
    return _rotate(_sqrt((1.0 - c) * (1.0 + c)), c, guess)


@triton.jit
def _asin(z):
    """arcsin(z) for z in [−1, 1] from sin and cos (for the interpreter, see the module doc)."""
    a = tl.abs(z)
    guess = 1.5707963267948966 - _sqrt(1.0 - a) * (1.5707288 + a * (-0.2121144 + a * (0.0742610 + a * -0.0187293)))
    guess = tl.where(z < 0, -guess, guess)
    return _rotate(z, _sqrt((1.0 - z) * (1.0 + z)), guess)


@triton.jit
def _rotate(y, x, theta):
    """atan2(y, x) for x² + y² = 1 from a guess θ: θ + atan(r), r = (y cos θ − x sin θ)/(x cos θ + y sin θ)."""
    cos_t = tl.cos(theta)
    sin_t = tl.sin(theta)
    r = (y * cos_t - x * sin_t) / (x * cos_t + y * sin_t)
    return theta + (r - r * r * r / 3.0)
