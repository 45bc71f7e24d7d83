"""The strided-convolution covariance map ``window_sum`` and XLA's 'SAME' padding.

Two independent references: a brute-force loop over every output position and window offset
(exact, compared to 1e-12 in float64), and the empirical covariance of a real strided convolution
(``F.pad`` + ``F.conv2d(stride=s)``) over many random weights, a Monte Carlo check whose tolerance
is stated with the test.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntkbench.arch.kernel import box_sum, input_kernel, same_padding, window_sum


@pytest.mark.parametrize(("n", "k", "s", "expected"), [
    (8, 3, 2, (0, 1)), (8, 3, 1, (1, 1)), (7, 3, 2, (1, 1)), (8, 4, 2, (1, 1)), (8, 2, 1, (0, 1)),
    (8, 1, 3, (0, 0)), (5, 5, 3, (1, 2)), (4, 5, 3, (2, 2)), (2, 5, 1, (2, 2)), (1, 4, 2, (1, 2)),
])
def test_same_padding_is_xlas(n, k, s, expected):
    # out = ceil(n/s), total = max((out-1)s + k - n, 0), the extra zero after: the values
    # lax.padtype_to_pads gives for 'SAME'
    assert same_padding(n, k, s) == expected


def _brute(t: np.ndarray, k: int, s: int, spatial: str) -> np.ndarray:
    """Σ_δ t(s·i − p + δ, s·j − p + δ) by a loop over every output entry and offset."""
    h, w = t.shape[-2:]
    (ph, _), (pw, _) = same_padding(h, k, s), same_padding(w, k, s)
    ho, wo = -(-h // s), -(-w // s)

    def inside(r, c):
        return 0 <= r < h and 0 <= c < w

    if spatial == "diag":
        out = np.zeros(t.shape[:-2] + (ho, wo))
        for a, b, dh, dw in itertools.product(range(ho), range(wo), range(k), range(k)):
            r, c = s * a - ph + dh, s * b - pw + dw
            if inside(r, c):
                out[..., a, b] += t[..., r, c]
        return out
    out = np.zeros(t.shape[:-4] + (ho, wo, ho, wo))
    for a, b, c, d in itertools.product(range(ho), range(wo), range(ho), range(wo)):
        for dh, dw in itertools.product(range(k), range(k)):
            r1, c1, r2, c2 = s * a - ph + dh, s * b - pw + dw, s * c - ph + dh, s * d - pw + dw
            if inside(r1, c1) and inside(r2, c2):
                out[..., a, b, c, d] += t[..., r1, c1, r2, c2]
    return out


@pytest.mark.parametrize("spatial", ["diag", "full"])
@pytest.mark.parametrize("size", [(5, 4), (6, 7)])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_window_sum_matches_a_brute_force_loop(k, s, size, spatial):
    g = torch.Generator().manual_seed(100 * k + 10 * s + size[0])
    shape = (2, 3, *size) if spatial == "diag" else (2, 1, *size, *size)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    ours = window_sum(t, k, s, spatial)
    ref = _brute(t.numpy(), k, s, spatial)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spatial", ["diag", "full"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_stride_one_odd_kernel_is_box_sum_exactly(k, spatial):
    g = torch.Generator().manual_seed(k)
    shape = (2, 3, 6, 5) if spatial == "diag" else (2, 3, 6, 5, 6, 5)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    assert torch.equal(window_sum(t, k, 1, spatial), box_sum(t, k, spatial))


def test_window_sum_keeps_dtype_and_works_in_float32():
    t = torch.randn(2, 2, 8, 8)
    out = window_sum(t, 3, 2, "diag")
    assert out.dtype == torch.float32 and out.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(out.numpy(), _brute(t.double().numpy(), 3, 2, "diag"), rtol=0, atol=1e-5)


# Monte Carlo: each of the O output channels of a conv with i.i.d. N(0, 1/(C k²)) weights is an
# independent draw of the pre-activation field, so the channel average of y_n(i) y_m(i) estimates
# window_sum(K0)/k² (K0 = Σ_c x_c x'_c / C). Per entry the estimate has standard deviation
# √((q_n q_m + K_nm²)/O) ≤ √(2 q_n q_m / O); we allow 6 of them (64–128 entries per case, so a
# false alarm has probability ~1e-7) and require the symmetric-padding network to miss somewhere.
O = 40_000


@pytest.mark.parametrize(("size", "k", "s"), [((8, 8), 3, 2), ((8, 7), 4, 2), ((7, 9), 2, 3), ((8, 8), 5, 3),
                                              ((6, 6), 2, 1)])
def test_window_sum_is_the_covariance_of_a_strided_conv(size, k, s):
    g = torch.Generator().manual_seed(7)
    n, c = 4, 3
    x = torch.randn(n, c, *size, generator=g, dtype=torch.float64)
    (pt, pb), (pl, pr) = same_padding(size[0], k, s), same_padding(size[1], k, s)
    weight = torch.randn(O, c, k, k, generator=g, dtype=torch.float64) / math.sqrt(c * k * k)
    y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight, stride=s)
    empirical = torch.einsum("nohw,mohw->nmhw", y, y) / O

    exact = window_sum(input_kernel(x, x, "diag").nngp, k, s, "diag") / k**2
    assert empirical.shape == exact.shape
    q = torch.diagonal(exact, dim1=0, dim2=1).movedim(-1, 0)
    bound = 6 * torch.sqrt(2 * q[:, None] * q[None, :] / O)
    assert bool(((empirical - exact).abs() <= bound).all())

    symmetric = F.conv2d(x, weight, stride=s, padding=k // 2)
    if symmetric.shape[-2:] == y.shape[-2:]:
        cov = torch.einsum("nohw,mohw->nmhw", symmetric, symmetric) / O
        assert bool(((cov - exact).abs() > bound).any())
