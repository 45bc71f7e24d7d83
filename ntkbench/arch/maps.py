"""Kernel maps of more activations: closed forms for GELU, ABReLU (LeakyReLU) and Sin, and 2-D
Gauss–Hermite quadrature for any elementwise function.

Every map has the signature of ``kernel.relu_map``: ``fn(s12, q1, q2) -> (E[φ(u)φ(v)], E[φ'(u)φ'(v)])``
for (u, v) ~ N(0, [[q1, s12], [s12, q2]]). The arguments broadcast against each other; the results
have their broadcast shape and dtype (float64 is the reference, float32 works). The second
expectation is ∂/∂s12 of the first (Price's theorem), which the closed forms below satisfy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Tensor = torch.Tensor
KernelMap = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def gelu_map(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    """φ(x) = x·Φ(x), the exact (erf) GELU, as stax.Gelu (Tsuchida et al. 2021, "Avoiding kernel
    fixed points: computing with ELU and GELU infinite networks", arXiv:2002.08517). With
    P = (1 + q1)(1 + q2), Δ = √(P − s12²) ≥ √(1 + q1 + q2) > 0 and θ = arcsin(s12/√P) = atan2(s12, Δ):

    E[φ(u)φ(v)]   = s12/4 + (s12·θ + (s12² + q1q2·Δ²)/(P·Δ)) / (2π)
    E[φ'(u)φ'(v)] = 1/4 + θ/(2π) + s12/(2πΔ) · (1 + 1/Δ² + (1 − q1q2)/P).

    Δ never vanishes, so both are smooth everywhere, including q → 0 and |ρ| = 1.
    """
    prod = (1 + q1) * (1 + q2)
    qq = q1 * q2
    delta2 = prod - s12 * s12
    delta = delta2.sqrt()
    theta = torch.atan2(s12, delta)
    nngp = s12 / 4 + (s12 * theta + (s12 * s12 + qq * delta2) / (prod * delta)) / (2 * math.pi)
    dot = 0.25 + theta / (2 * math.pi) + s12 / (2 * math.pi * delta) * (1 + 1 / delta2 + (1 - qq) / prod)
    return nngp, dot


def abrelu_map(a: float, b: float) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The map of φ(x) = a·min(x, 0) + b·max(x, 0); LeakyReLU(α) is ABReLU(α, 1), ReLU is (0, 1),
    |x| is (−1, 1). Writing φ(x) = b·relu(x) − a·relu(−x) and using the arc-cosine kernel of
    order 1 and 0 (Cho & Saul 2009) for the four sign combinations, with cos θ = s12/√(q1q2):

    E[φ'(u)φ'(v)] = (a² + b²)/2 − (a − b)²·θ/(2π)
    E[φ(u)φ(v)]   = (a − b)²·√(q1q2)·sin θ/(2π) + s12 · E[φ'(u)φ'(v)]

    (as stax.ABRelu; Tsuchida et al. 2018, arXiv:1711.09090, for LeakyReLU). Where q1q2 = 0 the
    angle is taken as π/2, as in ``relu_map``, giving nngp = 0 and a finite E[φ'φ'].
    """
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"abrelu_map needs finite slopes a and b, got a={a!r}, b={b!r}")
    half_sum, factor = (a * a + b * b) / 2, (a - b) ** 2 / (2 * math.pi)

    def abrelu(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        norm = (q1 * q2).sqrt()
        cos = torch.nan_to_num_(s12 / norm, nan=0.0).clamp_(-1.0, 1.0)
        dot = cos.arccos().mul_(-factor).add_(half_sum)
        nngp = cos.square_().neg_().add_(1.0).sqrt_().mul_(norm).mul_(factor).addcmul_(dot, s12)
        return nngp, dot

    abrelu.__name__ = f"abrelu_map({a}, {b})"
    return abrelu


def sin_map(a: float, b: float, c: float) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The map of φ(x) = a·sin(b·x + c), as stax.Sin. From sin A sin B = (cos(A − B) − cos(A + B))/2
    and E[cos(Z + d)] = e^{−Var Z/2}·cos d for Gaussian Z, with S± = e^{−b²(q1 + q2 ∓ 2 s12)/2}:

    E[φ(u)φ(v)]   = a²/2 · (S+ − cos(2c)·S−)   = a² · (sin²c·C + cos²c·D)
    E[φ'(u)φ'(v)] = a²b²/2 · (S+ + cos(2c)·S−) = a²b² · (cos²c·C + sin²c·D),

    C = (S+ + S−)/2, D = (S+ − S−)/2 = −sign(s12)·max(S+, S−)·expm1(−2b²|s12|)/2. The second forms
    are what is computed: S+ − S− cancels for small s12 (at q = 1e-6, c = 0, the first form loses
    five digits), expm1 does not, and S± ≤ 1 cannot overflow.
    """
    a, b, c = float(a), float(b), float(c)
    if not all(math.isfinite(v) for v in (a, b, c)):
        raise ValueError(f"sin_map needs finite a, b, c, got a={a!r}, b={b!r}, c={c!r}")
    a2, b2, sin2, cos2 = a * a, b * b, math.sin(c) ** 2, math.cos(c) ** 2

    def sin(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        total = q1 + q2
        plus = torch.exp(-b2 / 2 * (total - 2 * s12))
        minus = torch.exp(-b2 / 2 * (total + 2 * s12))
        even = (plus + minus) / 2
        odd = torch.maximum(plus, minus) * torch.expm1(-2 * b2 * s12.abs()) * s12.sign() / -2
        return a2 * (sin2 * even + cos2 * odd), a2 * b2 * (cos2 * even + sin2 * odd)

    sin.__name__ = f"sin_map({a}, {b}, {c})"
    return sin


CHUNK_ELEMENTS = 1 << 22
"""Elements of one (deg, deg, chunk) quadrature buffer; a few such buffers are alive at a time
(about 300 MB at its peak in float64, measured, whatever the size of the pair tensor)."""


def quadrature_map(fn: Callable[[Tensor], Tensor], deg: int, *,
                   chunk_elements: int = CHUNK_ELEMENTS) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The map of an elementwise torch function ``fn`` by 2-D Gauss–Hermite quadrature of degree
    ``deg``, as stax.ElementwiseNumerical. With (x_i, w_i) the ``deg`` Gauss–Hermite nodes and weights
    (weight e^{−x²}), m = s12/√q1 and the conditional variance r = max(q2 − m², 0):

    u_i  = √(2 q1)·x_i,    v_ij = √2·(m·x_i + √r·x_j)
    E[φ(u)φ(v)]   ≈ Σ_ij w_i w_j φ(u_i) φ(v_ij) / π
    E[φ'(u)φ'(v)] ≈ Σ_ij w_i w_j φ'(u_i) φ'(v_ij) / π,   φ' = d/dz of Σ fn(z) by autograd.

    The rule is exact when φ(u)φ(v) is a polynomial of degree ≤ 2·deg − 1 in each node variable.
    For smooth φ the error falls faster than any power of ``deg`` (stax suggests 25 to start; erf at
    50 is within 1e-8 for q ≤ 1) and grows with q. A kink in φ costs O(1/deg) and a jump in φ'
    O(1/√deg) (ReLU: 0.13·√(q1q2)/deg and 0.21/√deg at even deg; an odd deg puts a node on the kink
    and doubles both). With the same nodes and parameterisation as stax.ElementwiseNumerical, the
    two agree to rounding (1e-15 in float64 where checked).

    q1 is clamped at the dtype's tiny and r at 0, so q → 0 and |ρ| = 1 (or just above, by rounding)
    give no NaN; at q1 = q2 = 0 the result is (φ(0)², φ'(0)²), e.g. E[φ'φ'] = 0 for ReLU, where
    ``relu_map`` takes the ρ = 0 limit 1/4. The pairs are processed ``chunk_elements // deg²`` at a
    time, so memory is a few (deg, deg, chunk) buffers beyond the inputs and outputs, whatever the
    size of the pair tensor.
    """
    if not isinstance(deg, int) or deg < 1:
        raise ValueError(f"quadrature degree must be a positive int, got {deg!r}")
    x_np, w_np = np.polynomial.hermite.hermgauss(deg)
    chunk = max(1, chunk_elements // deg**2)

    def quadrature(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        shape = torch.broadcast_shapes(s12.shape, q1.shape, q2.shape)
        dtype = torch.promote_types(torch.promote_types(s12.dtype, q1.dtype), q2.dtype)
        flat = [t.to(dtype).expand(shape).reshape(-1) for t in (s12, q1, q2)]
        x = torch.as_tensor(x_np * math.sqrt(2.0), dtype=dtype, device=s12.device)
        w = torch.as_tensor(w_np, dtype=dtype, device=s12.device)
        nodes = (x, torch.outer(w, w) / math.pi)
        nngp, dot = torch.empty_like(flat[0]), torch.empty_like(flat[0])
        for lo in range(0, flat[0].numel(), chunk):
            part = [t[lo: lo + chunk] for t in flat]
            nngp[lo: lo + chunk], dot[lo: lo + chunk] = _integrate(fn, nodes, *part)
        return nngp.view(shape), dot.view(shape)

    quadrature.__name__ = f"quadrature_map({getattr(fn, '__name__', fn)}, deg={deg})"
    return quadrature


def _integrate(fn: Callable[[Tensor], Tensor], nodes: tuple[Tensor, Tensor],
               s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    x, weights = nodes                                                          # x is √2 × the nodes
    root1 = q1.clamp(min=torch.finfo(q1.dtype).tiny).sqrt()
    m = s12 / root1
    r = (q2 - m * m).clamp_(min=0.0).sqrt_()
    u = x[:, None] * root1                                                      # (deg, n)
    v = (x[:, None] * m)[:, None, :] + (x[:, None] * r)[None, :, :]             # (deg, deg, n)
    fu, du = _value_and_derivative(fn, u)
    fv, dv = _value_and_derivative(fn, v)
    nngp = torch.einsum("ij,ijn->n", weights, fu[:, None] * fv)
    dot = torch.einsum("ij,ijn->n", weights, du[:, None] * dv)
    return nngp, dot


def _value_and_derivative(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """fn(z) and its elementwise derivative, the gradient of Σ fn(z), under any grad mode."""
    with torch.inference_mode(False), torch.enable_grad():
        z = (z.clone() if z.is_inference() else z.detach()).requires_grad_(True)  # inference tensors refuse grad
        y = fn(z)
        if y.shape != z.shape:
            raise ValueError(f"quadrature_map needs an elementwise fn (output shape = input shape), "
                             f"{getattr(fn, '__name__', fn)} turned {tuple(z.shape)} into {tuple(y.shape)}")
        if not y.requires_grad:
            return y.detach(), torch.zeros_like(z)
        (grad,) = torch.autograd.grad(y, z, torch.ones_like(y), allow_unused=True)
    return y.detach(), torch.zeros_like(z) if grad is None else grad


def quadrature_error(fn: Callable[[Tensor], Tensor], deg: int, s12: Tensor, q1: Tensor, q2: Tensor) -> float:
    """max |map at deg − map at 2·deg| over both expectations and every entry: the error at ``deg``
    reported against a reference computed at twice the degree.

    For smooth φ the reference's own error is negligible and this is the error (within 1% for erf
    at deg 16 and 25). If the error falls only as deg^−p, as for kinked φ, it is (1 − 2^−p) of the
    error: between 0.29 (p = 1/2, ReLU's E[φ'φ']) and 0.5 (p = 1), an underestimate.
    """
    low = quadrature_map(fn, deg)(s12, q1, q2)
    high = quadrature_map(fn, 2 * deg)(s12, q1, q2)
    return max(float((lo - hi).abs().max()) for lo, hi in zip(low, high))
