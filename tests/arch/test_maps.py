"""Kernel maps of ntkbench.arch.maps against independent references.

The reference integrates E[g(u)h(v)] in numpy, independently of the maps' formulas and of
Gauss–Hermite: u = √q1·z1, v = m·z1 + σ·z2 with z standard normal, m = s12/√q1 and
σ = √(q2 − m²), by Gauss–Legendre on [−L, L] split where the integrand has a kink or jump (z1 = 0,
and v = 0 for each z1), so every piece is smooth and the rule converges to machine precision
(160 and 320 nodes agree to 1e-12, the rounding of the sums). Closed forms must agree with it to 1e-10 relative to the
kernel's scale, at ρ = ±1 and at small q.

Quadrature is checked against the closed forms of ReLU and erf. Its error "follows from the
degree": Gauss–Hermite nodes near the origin are spaced about π/√(2·deg) apart, so a kink in the
integrand (ReLU's φ) costs O(1/deg) and a jump (ReLU's φ' = step) O(1/√deg), while a smooth
integrand (erf) converges faster than any power.
"""

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import erf as np_erf

from ntkbench.arch.kernel import erf_map, relu_map
from ntkbench.arch.maps import abrelu_map, gelu_map, quadrature_error, quadrature_map, sin_map

L = 12.0  # N(0, 1) puts mass 4e-33 beyond ±12


@functools.cache
def _legendre(nodes):
    return np.polynomial.legendre.leggauss(nodes)


def _pieces(lo, hi, nodes):
    """Gauss–Legendre nodes and weights on [lo, hi] (arrays of endpoints broadcast)."""
    x, w = _legendre(nodes)
    lo, hi = np.asarray(lo, float)[..., None], np.asarray(hi, float)[..., None]
    return (hi - lo) / 2 * x + (hi + lo) / 2, (hi - lo) / 2 * w


def _gauss(z, w):
    return (w * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))


def reference(g, h, s12, q1, q2, nodes=160):
    """E[g(u) h(v)] for (u, v) ~ N(0, [[q1, s12], [s12, q2]]), q1 > 0, by split Gauss–Legendre."""
    z1, w1 = (np.concatenate(p) for p in zip(_pieces(-L, 0.0, nodes), _pieces(0.0, L, nodes)))
    m = s12 / math.sqrt(q1)
    sigma = math.sqrt(max(q2 - m * m, 0.0))
    if sigma == 0.0:
        inner = h(m * z1)
    else:
        kink = np.clip(-m * z1 / sigma, -L, L)
        parts = [_pieces(np.full_like(z1, -L), kink, nodes), _pieces(kink, np.full_like(z1, L), nodes)]
        inner = sum((_gauss(z2, w2) * h(m * z1[:, None] + sigma * z2)).sum(1) for z2, w2 in parts)
    return float((_gauss(z1, w1) * g(math.sqrt(q1) * z1) * inner).sum())


def _np_abrelu(a, b):
    return (lambda x: np.where(x > 0, b * x, a * x)), (lambda x: np.where(x > 0, b, a) + 0 * x)


def _np_gelu():
    cdf = lambda x: (1 + np_erf(x / math.sqrt(2))) / 2  # noqa: E731
    return (lambda x: x * cdf(x)), (lambda x: cdf(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))


def _np_sin(a, b, c):
    return (lambda x: a * np.sin(b * x + c)), (lambda x: a * b * np.cos(b * x + c))


CLOSED = {
    "gelu": (gelu_map, _np_gelu()),
    "relu": (abrelu_map(0, 1), _np_abrelu(0, 1)),
    "leaky_relu_0.1": (abrelu_map(0.1, 1), _np_abrelu(0.1, 1)),
    "abs": (abrelu_map(-1, 1), _np_abrelu(-1, 1)),
    "abrelu_-0.4_1.3": (abrelu_map(-0.4, 1.3), _np_abrelu(-0.4, 1.3)),
    "abrelu_2_-0.5": (abrelu_map(2, -0.5), _np_abrelu(2, -0.5)),
    "sin": (sin_map(1, 1, 0), _np_sin(1, 1, 0)),
    "sin_1.3_0.8_0.4": (sin_map(1.3, 0.8, 0.4), _np_sin(1.3, 0.8, 0.4)),
    "cos_0.5_2_-1": (sin_map(0.5, 2.0, -1.0 + math.pi / 2), _np_sin(0.5, 2.0, -1.0 + math.pi / 2)),
}
VARIANCES = [(1.0, 1.0), (0.3, 1.7), (2.5, 0.4), (1e-6, 1e-6), (1e-6, 1.0)]
RHOS = [-1.0, -0.8, -0.3, 0.0, 0.5, 0.9, 0.999, 1.0]


def _grid(variances=VARIANCES, rhos=RHOS, dtype=torch.float64):
    pts = list(itertools.product(variances, rhos))
    q1 = torch.tensor([v[0] for v, _ in pts], dtype=torch.float64)
    q2 = torch.tensor([v[1] for v, _ in pts], dtype=torch.float64)
    rho = torch.tensor([r for _, r in pts], dtype=torch.float64)
    return (rho * (q1 * q2).sqrt()).to(dtype), q1.to(dtype), q2.to(dtype)


@pytest.mark.parametrize("name", ["abrelu_-0.4_1.3", "gelu", "sin_1.3_0.8_0.4"])
def test_the_reference_integrator_is_converged(name):
    f, df = CLOSED[name][1]
    for s12, q1, q2 in zip(*(t.tolist() for t in _grid())):
        for g in (f, df):
            coarse, fine = reference(g, g, s12, q1, q2), reference(g, g, s12, q1, q2, nodes=320)
            assert abs(coarse - fine) <= 1e-12 * (abs(fine) + math.sqrt(q1 * q2))


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_form_matches_numerical_integration(name):
    fn, (f, df) = CLOSED[name]
    s12, q1, q2 = _grid()
    nngp, dot = fn(s12, q1, q2)
    for i, (s, a, b) in enumerate(zip(s12.tolist(), q1.tolist(), q2.tolist())):
        ref_nngp, ref_dot = reference(f, f, s, a, b), reference(df, df, s, a, b)
        scale = math.sqrt(a * b)
        assert abs(nngp[i].item() - ref_nngp) <= 1e-10 * (abs(ref_nngp) + scale), (name, s, a, b)
        assert abs(dot[i].item() - ref_dot) <= 1e-10 * (abs(ref_dot) + 1.0), (name, s, a, b)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_dot_is_the_derivative_of_nngp_in_the_covariance(name):
    # Price's theorem: E[φ'(u)φ'(v)] = ∂E[φ(u)φ(v)]/∂s12, here by central differences (step h =
    # 1e-5·√(q1q2): truncation ~h², rounding ~1e-16/h), away from |ρ| = 1 where arccos is singular
    fn = CLOSED[name][0]
    s12, q1, q2 = _grid(VARIANCES[:3], [-0.8, -0.3, 0.0, 0.5, 0.9])
    h = 1e-5 * (q1 * q2).sqrt()
    slope = (fn(s12 + h, q1, q2)[0] - fn(s12 - h, q1, q2)[0]) / (2 * h)
    dot = fn(s12, q1, q2)[1]
    assert bool(((slope - dot).abs() <= 1e-7 * (dot.abs() + 1)).all())


def test_abrelu_0_1_is_relu_map():
    s12, q1, q2 = _grid()
    for ours, theirs in zip(abrelu_map(0, 1)(s12, q1, q2), relu_map(s12, q1, q2)):
        torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-15)


def _all_maps():
    return [fn for fn, _ in CLOSED.values()] + [quadrature_map(torch.tanh, 10), quadrature_map(torch.relu, 9)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_maps_stay_finite_at_zero_variance_and_unit_correlation(dtype):
    zero, one = torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)
    cases = [(zero, zero, zero), (zero, zero, one), (zero, one, zero), (one, one, one), (-one, one, one),
             (2 * one, 2 * one, 2 * one), (torch.tensor(1e-30, dtype=dtype),) * 3]
    for fn in _all_maps():
        for s12, q1, q2 in cases:
            for out in fn(s12, q1, q2):
                assert out.dtype == dtype and bool(torch.isfinite(out).all()), (fn.__name__, s12, q1, q2)


def test_float32_agrees_with_float64():
    s12, q1, q2 = _grid(VARIANCES[:3])
    for fn in _all_maps():
        for lo, hi in zip(fn(*(t.float() for t in (s12, q1, q2))), fn(s12, q1, q2)):
            assert lo.dtype == torch.float32
            torch.testing.assert_close(lo.double(), hi, rtol=2e-5, atol=2e-5)


def test_maps_broadcast_pair_tensors():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(2, 4, 5, 5, generator=g,
                                                                                  dtype=torch.float64)
    s12 = torch.einsum("nchw,mchw->nmhw", x1, x2) / 4
    q1, q2 = (x1 * x1).sum(1)[:, None] / 4, (x2 * x2).sum(1)[None] / 4
    for fn in _all_maps():
        nngp, dot = fn(s12, q1, q2)
        assert nngp.shape == dot.shape == (3, 2, 5, 5)
        one = fn(s12[1, 0, 2, 3], q1[1, 0, 2, 3], q2[0, 0, 2, 3])
        torch.testing.assert_close(nngp[1, 0, 2, 3], one[0], rtol=1e-13, atol=1e-15)


# Measured over the grid (q > 0, rho up to 0.999): ReLU's nngp error is 0.13·√(q1q2)/deg for even
# deg and 0.26·√(q1q2)/deg for odd (the centre node x = 0 sits on the kink, where relu'(0) = 0),
# its E[φ'φ'] error 0.21/√deg (even) and 0.62/√deg (odd). The bounds leave a margin over those.
@pytest.mark.parametrize("deg", [8, 16, 25, 50])
def test_quadrature_of_relu_is_within_its_degree_bound(deg):
    s12, q1, q2 = _grid()
    nngp, dot = quadrature_map(torch.relu, deg)(s12, q1, q2)
    exact_nngp, exact_dot = relu_map(s12, q1, q2)
    assert bool(((nngp - exact_nngp).abs() <= 0.4 * (q1 * q2).sqrt() / deg).all())
    assert bool(((dot - exact_dot).abs() <= 1.0 / math.sqrt(deg)).all())


def test_quadrature_of_erf_at_degree_50_is_within_1e_8():
    # seen: 5e-11 (nngp) and 1.5e-9 (E[φ'φ']) for q <= 1; the error grows with q (erf(√(2q)·x) is
    # steeper in node units): 3e-7 at q = 2.5, which the next test covers
    s12, q1, q2 = _grid([(1.0, 1.0), (0.3, 1.0), (0.1, 0.5), (1e-6, 1e-6), (1e-6, 1.0)])
    for ours, exact in zip(quadrature_map(torch.erf, 50)(s12, q1, q2), erf_map(s12, q1, q2)):
        assert float((ours - exact).abs().max()) < 1e-8


def _error(fn, exact_map, deg, s12, q1, q2):
    quad = quadrature_map(fn, deg)(s12, q1, q2)
    return max(float((a - b).abs().max()) for a, b in zip(quad, exact_map(s12, q1, q2)))


def test_quadrature_error_falls_with_degree():
    s12, q1, q2 = _grid()
    erf = [_error(torch.erf, erf_map, deg, s12, q1, q2) for deg in (10, 20, 40, 80)]
    assert all(hi > 4 * lo for hi, lo in zip(erf, erf[1:])), erf          # spectral: seen 19x, 370x, 1.4e5x
    relu = [_error(torch.relu, relu_map, deg, s12, q1, q2) for deg in (8, 16, 32, 64)]
    assert all(hi > 1.2 * lo for hi, lo in zip(relu, relu[1:])), relu     # 1/deg to 1/√deg: seen 1.65x


def test_quadrature_error_estimates_the_error_against_a_higher_degree():
    s12, q1, q2 = _grid(VARIANCES[:3])
    for deg in (16, 25):
        # smooth φ: the degree-2·deg reference is far more accurate, so the estimate is the error
        true = _error(torch.erf, erf_map, deg, s12, q1, q2)
        assert 0.9 * true <= quadrature_error(torch.erf, deg, s12, q1, q2) <= 1.1 * true
    for deg in (16, 32):
        # error ∝ deg^-p: the estimate is (1 − 2^-p) of the error: 0.29 to 0.5 for ReLU (seen 0.45)
        true = _error(torch.relu, relu_map, deg, s12, q1, q2)
        assert 0.25 * true <= quadrature_error(torch.relu, deg, s12, q1, q2) <= true


def test_quadrature_chunks_bound_what_fn_sees():
    seen = []

    def tanh(z):
        seen.append(z.numel())
        return torch.tanh(z)

    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64), torch.randn(5, 3, 6, 6, generator=g,
                                                                                  dtype=torch.float64)
    s12 = torch.einsum("nchw,mchw->nmhw", x1, x2) / 3
    q1, q2 = (x1 * x1).sum(1)[:, None] / 3, (x2 * x2).sum(1)[None] / 3
    deg = 25
    whole = quadrature_map(torch.tanh, deg, chunk_elements=deg**2 * s12.numel())(s12, q1, q2)
    chunked = quadrature_map(tanh, deg, chunk_elements=deg**2 * 50)(s12, q1, q2)
    assert max(seen) <= deg**2 * 50 < deg**2 * s12.numel()
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


def test_quadrature_under_no_grad_and_inference_mode():
    s12, q1, q2 = _grid(VARIANCES[:2])
    expected = quadrature_map(torch.tanh, 12)(s12, q1, q2)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            got = quadrature_map(torch.tanh, 12)(s12, q1, q2)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


def test_quadrature_of_a_constant_and_of_a_line():
    s12, q1, q2 = _grid()
    nngp, dot = quadrature_map(lambda z: torch.full_like(z, 3.0), 5)(s12, q1, q2)
    torch.testing.assert_close(nngp, torch.full_like(s12, 9.0), rtol=1e-14, atol=0)  # Σw_i w_j = π, rounded
    assert bool((dot == 0.0).all())
    nngp, dot = quadrature_map(lambda z: 2 * z + 1, 5)(s12, q1, q2)  # E[(2u+1)(2v+1)] = 4·s12 + 1
    torch.testing.assert_close(nngp, 4 * s12 + 1, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dot, torch.full_like(s12, 4.0), rtol=1e-13, atol=1e-13)


def test_quadrature_rejects_bad_input():
    with pytest.raises(ValueError, match="positive int"):
        quadrature_map(torch.tanh, 0)
    with pytest.raises(ValueError, match="elementwise"):
        quadrature_map(lambda z: z.sum(-1), 4)(*_grid(VARIANCES[:1]))
