"""Monte Carlo against finite networks built from the same description.

NNGP: the output covariance over S random initializations (each with O i.i.d. readout units)
converges to the NNGP kernel as the width grows (Lee et al. 2018). eNTK: J Jᵀ of one network,
with J from torch.func, converges to the NTK (Jacot et al. 2018).

Errors are relative Frobenius norms. Tolerances: a 1/width bias plus Monte Carlo noise of about
√(2/(S·O)) for the NNGP; fluctuations of order c/√width (c ≈ 3 measured here) for the eNTK, which
we average over 3 seeds. We assert the large-width error is below a few times its expected
size, and that widening by 16x or more cuts the error at least 2x (the theory gives 4x or more).
All seeds are fixed, so the tests are deterministic.
"""

import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from ntkbench.arch import Conv, Dense, GlobalAvgPool, ReLU, serial


def _fc(width: int):
    return serial(Dense(width, 1.4, 0.1), ReLU(), Dense(width, 1.4, 0.1), ReLU(), Dense(1, 1.4, 0.1))


def _cnn_gap(channels: int):
    return serial(Conv(channels, 3, 1.4, 0.1), ReLU(), Conv(channels, 3, 1.4, 0.1), ReLU(), GlobalAvgPool(),
                  Dense(1, 1.4, 0.1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def output_covariance(arch, x: torch.Tensor, inits: int, outputs: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f = torch.stack([arch.module(tuple(x.shape[1:]), outputs, generator=g).double()(x) for _ in range(inits)])
    return torch.einsum("sno,smo->nm", f, f) / (inits * outputs)


def empirical_ntk(arch, x: torch.Tensor, seed: int) -> torch.Tensor:
    net = arch.module(tuple(x.shape[1:]), 1, generator=torch.Generator().manual_seed(seed)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = vmap(jacrev(lambda p, xi: functional_call(net, p, (xi[None],))[0, 0]), in_dims=(None, 0))(params, x)
    j = torch.cat([v.reshape(len(x), -1) for v in jac.values()], dim=1)
    return j @ j.T


X_VEC = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
X_IMG = torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make, x, widths, tol", [
    (_fc, X_VEC, (4, 512), 0.03),
    (_cnn_gap, X_IMG, (1, 128), 0.04),
], ids=["fc", "cnn-gap"])
def test_output_covariance_approaches_nngp(make, x, widths, tol):
    nngp = make(1).kernel(x).nngp
    small, large = (_rel(output_covariance(make(w), x, inits=400, outputs=128), nngp) for w in widths)
    assert large < tol
    assert large < small / 2


@pytest.mark.parametrize("make, x, widths, tol", [
    (_fc, X_VEC, (64, 2048), 0.15),
    (_cnn_gap, X_IMG, (16, 512), 0.1),
], ids=["fc", "cnn-gap"])
def test_empirical_ntk_approaches_ntk(make, x, widths, tol):
    ntk = make(1).kernel(x).ntk
    small, large = (sum(_rel(empirical_ntk(make(w), x, s), ntk) for s in range(3)) / 3 for w in widths)
    assert large < tol
    assert large < small / 2
