"""The kernel state that flows through the layers, and the spatial operations on it.

Conventions are those of neural-tangents' stax (Novak et al. 2020, "Neural Tangents: Fast and
Easy Infinite Neural Networks in Python"): the input kernel is averaged over channels,
``K0(x, x') = x · x' / C``, and every affine layer divides its weight variance by the fan-in.

A pair tensor holds one covariance per pair of inputs and, for images, per pair of positions.
Its trailing ``spatial`` dimensions depend on what the readout needs:

- ``"none"``: vectors; a pair tensor is (N1, N2).
- ``"diag"``: images read out by Flatten; only same-position covariances K(x_i, x'_i) matter,
  so a pair tensor is (N1, N2, H, W). A k×k conv then costs O(HW·k²) per pair.
- ``"full"``: images read out through pooling; all position pairs, (N1, N2, H, W, H, W).

``cov1``/``cov2`` are the same quantity for each input with itself: (N,), (N, H, W) or
(N, H, W, H, W). They hold the variances q(x_i) = K(x, x)_ii that the nonlinearities need.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Kernel:
    """Infinite-width kernels of a batch of input pairs.

    ``nngp`` is the output covariance at initialization (Neal 1996; Lee et al. 2018) and ``ntk``
    the neural tangent kernel (Jacot et al. 2018). After a full architecture both are (N1, N2).
    ``nngp_se`` and ``ntk_se`` are None for exact kernels; a Monte Carlo estimate
    (``arch.monte_carlo``) sets them to the standard error of each entry, (N1, N2).
    """

    nngp: Tensor
    ntk: Tensor
    cov1: Tensor
    cov2: Tensor
    spatial: str = "none"
    nngp_se: Tensor | None = None
    ntk_se: Tensor | None = None


def input_kernel(x1: Tensor, x2: Tensor, spatial: str) -> Kernel:
    """K0(x, x')_{ij} = Σ_c x_c(i) x'_c(j) / C, with ntk = 0 before the first layer; for
    ``x2 is x1`` the pairs (x, x) are exactly their self terms (see ``exact_self_pairs``)."""
    if spatial == "none":
        d = x1.shape[1]
        nngp = x1 @ x2.T / d
        cov1 = (x1 * x1).sum(1) / d
        cov2 = cov1 if x2 is x1 else (x2 * x2).sum(1) / d
    elif spatial == "diag":
        c = x1.shape[1]
        nngp = torch.einsum("nchw,mchw->nmhw", x1, x2) / c
        cov1 = (x1 * x1).sum(1) / c
        cov2 = cov1 if x2 is x1 else (x2 * x2).sum(1) / c
    else:
        c = x1.shape[1]
        nngp = torch.einsum("nchw,mcij->nmhwij", x1, x2) / c
        cov1 = torch.einsum("nchw,ncij->nhwij", x1, x1) / c
        cov2 = cov1 if x2 is x1 else torch.einsum("nchw,ncij->nhwij", x2, x2) / c
    k = Kernel(nngp, torch.zeros_like(nngp), cov1, cov2, spatial)
    return exact_self_pairs(k) if x2 is x1 else k


def exact_self_pairs(k: Kernel) -> Kernel:
    """Set nngp(x, x) to the self term cov1(x) in place, for a block of inputs with themselves.

    Both hold the same quantity, but reach it through differently ordered sums (a matrix product,
    a pooling mean over other strides), so they can differ in the last bit; the arccos then turns
    cos θ = 1 − ε into θ ≈ √(2ε) (1e-8 in float64, 3e-4 in float32), and the kernel's diagonal
    would depend on the block shapes. Kept equal, cos θ = 1 and θ = 0 exactly.
    """
    k.nngp.diagonal(dim1=0, dim2=1).copy_(k.cov1.movedim(0, -1))
    return k


def map_tensors(k: Kernel, fn: Callable[[Tensor, int], Tensor]) -> Kernel:
    """Apply a linear spatial map to nngp, ntk, cov1 and cov2. ``fn(t, n_batch)`` gets each
    tensor and the number of its leading batch dimensions (2 for pairs, 1 for self terms)."""
    cov1 = fn(k.cov1, 1)
    cov2 = cov1 if k.cov2 is k.cov1 else fn(k.cov2, 1)
    return replace(k, nngp=fn(k.nngp, 2), ntk=fn(k.ntk, 2), cov1=cov1, cov2=cov2)


def box_sum(t: Tensor, kernel_size: int, spatial: str) -> Tensor:
    """Σ_δ t(i+δ, j+δ) over the k×k window offsets δ, with zero padding ('SAME').

    This is the covariance map of a stride-1 convolution: each output position pair sees the
    input position pairs shifted by the same offset. It is separable, so it runs as k shifted
    adds along the rows and then k along the columns, never a loop over positions.
    """
    if spatial == "diag":
        return _shift_sum(_shift_sum(t, kernel_size, (-2,)), kernel_size, (-1,))
    return _shift_sum(_shift_sum(t, kernel_size, (-4, -2)), kernel_size, (-3, -1))


def _shift_sum(t: Tensor, kernel_size: int, dims: tuple[int, ...]) -> Tensor:
    out = t.clone()
    size = t.shape[dims[0]]
    for shift in range(-(kernel_size // 2), kernel_size // 2 + 1):
        lo, hi = max(0, -shift), min(size, size - shift)
        if shift == 0 or lo >= hi:
            continue
        dst, src = [slice(None)] * t.dim(), [slice(None)] * t.dim()
        for d in dims:
            dst[d], src[d] = slice(lo, hi), slice(lo + shift, hi + shift)
        out[tuple(dst)] += t[tuple(src)]
    return out


def same_padding(n: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """XLA's (and stax's) 'SAME' padding of one axis of size n, as (before, after):

    out = ceil(n / s),  total = max((out − 1)·s + k − n, 0),  before = total // 2,  after = total − before.

    An odd total puts the extra zero after (8 inputs, k = 3, s = 2: (0, 1)), unlike torch's symmetric
    ``padding=k//2``, which for stride > 1 reads other windows.
    """
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel_size - n, 0)
    return total // 2, total - total // 2


def window_sum(t: Tensor, kernel_size: int, stride: int, spatial: str) -> Tensor:
    """Σ_δ t(s·i − p + δ, s·j − p + δ) over the k×k window offsets δ ∈ {0..k−1}², zero outside,
    with p the 'SAME' padding before (``same_padding``) on each axis.

    This is the covariance map of a convolution with stride s: output positions i, j see the input
    positions s·i − p + δ, s·j − p + δ through the same weight δ. Output spatial size ceil(n / s).
    ``spatial`` is "diag" (..., H, W) or "full" (..., H, W, H, W); in "full" both positions of a pair
    shift by the same δ on each axis. Separable: k strided slices per axis, no loop over positions.
    For s = 1 and odd k it is ``box_sum`` (the same tensor, bit for bit).
    """
    if stride == 1 and kernel_size % 2 == 1:
        return box_sum(t, kernel_size, spatial)
    rows, cols = ((-2,), (-1,)) if spatial == "diag" else ((-4, -2), (-3, -1))
    return _strided_sum(_strided_sum(t, kernel_size, stride, rows), kernel_size, stride, cols)


def _strided_sum(t: Tensor, kernel_size: int, stride: int, dims: tuple[int, ...]) -> Tensor:
    n = t.shape[dims[0]]
    before, after = same_padding(n, kernel_size, stride)
    out = -(-n // stride)
    shape = list(t.shape)
    for d in dims:
        shape[d] = n + before + after
    padded = t.new_zeros(shape)
    inner = [slice(None)] * t.dim()
    for d in dims:
        inner[d] = slice(before, before + n)
    padded[tuple(inner)] = t
    total = None
    for delta in range(kernel_size):
        window = [slice(None)] * t.dim()
        for d in dims:
            window[d] = slice(delta, delta + stride * (out - 1) + 1, stride)
        part = padded[tuple(window)]
        total = part.clone() if total is None else total.add_(part)
    return total


def avg_pool_full(t: Tensor, window: int, n_batch: int) -> Tensor:
    """K'(I, J) = mean over i ∈ I, j ∈ J of K(i, j) for non-overlapping w×w windows ('VALID')."""
    h, w = t.shape[-4], t.shape[-3]
    ho, wo = h // window, w // window
    t = t[..., : ho * window, : wo * window, : ho * window, : wo * window]
    batch = t.shape[:n_batch]
    t = t.reshape(*batch, ho, window, wo, window, ho, window, wo, window)
    dims = [n_batch + 1, n_batch + 3, n_batch + 5, n_batch + 7]
    return t.mean(dim=dims)


def full_to_diag(t: Tensor) -> Tensor:
    """(..., H, W, H, W) → (..., H, W): keep the same-position covariances."""
    h, w = t.shape[-2], t.shape[-1]
    return t.reshape(*t.shape[:-4], h * w, h * w).diagonal(dim1=-2, dim2=-1).reshape(*t.shape[:-4], h, w)


def variances(k: Kernel) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The variances q(x_i), q(x'_j), broadcast against nngp, cov1 and cov2 respectively."""
    if k.spatial != "full":
        return (k.cov1[:, None], k.cov2[None, :]), (k.cov1, k.cov1), (k.cov2, k.cov2)
    d1, d2 = full_to_diag(k.cov1), full_to_diag(k.cov2)
    n1, h, w = d1.shape
    n2 = d2.shape[0]
    pair = (d1.view(n1, 1, h, w, 1, 1), d2.view(1, n2, 1, 1, h, w))
    self1 = (d1.view(n1, h, w, 1, 1), d1.view(n1, 1, 1, h, w))
    self2 = (d2.view(n2, h, w, 1, 1), d2.view(n2, 1, 1, h, w))
    return pair, self1, self2


def relu_map(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    """Arc-cosine kernel of order 1 (Cho & Saul 2009), for φ = ReLU and (u, v) ~ N(0, Σ):

    E[φ(u)φ(v)]   = √(q1 q2) · (sin θ + (π − θ) cos θ) / (2π)
    E[φ'(u)φ'(v)] = (π − θ) / (2π),      cos θ = Σ12 / √(q1 q2).
    """
    norm = (q1 * q2).sqrt()
    cos = torch.nan_to_num_(s12 / norm, nan=0.0).clamp_(-1.0, 1.0)
    dot = cos.arccos().neg_().add_(math.pi).div_(2 * math.pi)
    nngp = cos.square_().neg_().add_(1.0).sqrt_().mul_(norm).div_(2 * math.pi).addcmul_(dot, s12)
    return nngp, dot


def erf_map(s12: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    """Arcsine kernel of φ = erf (Williams 1997), for (u, v) ~ N(0, Σ):

    E[φ(u)φ(v)]   = (2/π) · arcsin(2Σ12 / √((1 + 2q1)(1 + 2q2)))
    E[φ'(u)φ'(v)] = (4/π) / √((1 + 2q1)(1 + 2q2) − 4Σ12²).
    """
    prod = (2 * q1 + 1) * (2 * q2 + 1)
    nngp = (2 * s12 / prod.sqrt()).clamp_(-1.0, 1.0).arcsin_().mul_(2 / math.pi)
    dot = (prod - 4 * s12 * s12).rsqrt_().mul_(4 / math.pi)
    return nngp, dot


def apply_nonlinearity(k: Kernel, fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]) -> Kernel:
    """nngp' = E[φ(u)φ(v)],  ntk' = ntk · E[φ'(u)φ'(v)]  (Jacot et al. 2018, Lee et al. 2019)."""
    pair, self1, self2 = variances(k)
    nngp, dot = fn(k.nngp, *pair)
    cov1 = fn(k.cov1, *self1)[0]
    cov2 = cov1 if k.cov2 is k.cov1 else fn(k.cov2, *self2)[0]
    return Kernel(nngp, dot.mul_(k.ntk), cov1, cov2, k.spatial)
