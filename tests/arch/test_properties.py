"""Exact properties of the kernels and of the finite modules."""

import math

import pytest
import torch

from ntkbench.arch import AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, ReLU, get, list_archs, serial

ARCHS = {
    "fc-relu": (serial(Dense(8, 1.4, 0.1), ReLU(), Dense(8, 1.4, 0.1), ReLU(), Dense(1, 1.0, 0.1)), (7,)),
    "fc-erf": (serial(Dense(8, 1.2, 0.3), Erf(), Dense(1, 1.0, None)), (7,)),
    "cnn-flatten": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), Conv(4, 5, 1.4, None), Erf(), Flatten(), Dense(1)), (2, 6, 6)),
    "cnn-gap": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), Conv(4, 3, 1.4, 0.1), ReLU(), GlobalAvgPool(), Dense(1)), (2, 6, 6)),
    "cnn-pool": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), AvgPool(2), Conv(4, 3), ReLU(), Flatten(), Dense(1)), (3, 8, 8)),
}


def _x(shape, n, seed=0):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ARCHS)
def test_symmetric_psd_and_consistent_diagonal(name):
    arch, shape = ARCHS[name]
    x = _x(shape, 9)
    k, kxx = arch.kernel(x), arch.kernel(x, x)
    for kind in ("nngp", "ntk"):
        m = getattr(k, kind)
        assert torch.equal(m, m.T)  # computed as upper blocks mirrored: exactly symmetric
        # PSD up to rounding: eigenvalues >= -1e-12 · largest.
        eig = torch.linalg.eigvalsh(m)
        assert eig.min() >= -1e-12 * eig.max()
        torch.testing.assert_close(m, getattr(kxx, kind), rtol=1e-12, atol=0)
    # cov1 holds k(x, x) as computed for each input alone.
    torch.testing.assert_close(k.cov1, k.nngp.diagonal(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ARCHS)
def test_blocking_does_not_change_the_kernel(name):
    arch, shape = ARCHS[name]
    x1, x2 = _x(shape, 7), _x(shape, 5, seed=1)
    whole = arch.kernel(x1, x2)
    for block in (1, 3):
        torch.testing.assert_close(arch.kernel(x1, x2, block_size=block).ntk, whole.ntk, rtol=1e-13, atol=0)
        torch.testing.assert_close(arch.kernel(x1, block_size=block).nngp, arch.kernel(x1).nngp, rtol=1e-13, atol=0)


def test_relu_fc_closed_form_one_layer():
    # One hidden ReLU layer, no bias, w_std = 1: nngp = |x||x'|/(2π d) (sin θ + (π − θ) cos θ).
    x = _x((3,), 4)
    nngp = serial(Dense(1), ReLU(), Dense(1)).kernel(x).nngp
    n = x.norm(dim=1)
    cos = (x @ x.T / torch.outer(n, n)).clamp(-1, 1)
    theta = cos.arccos()
    expected = torch.outer(n, n) / (2 * math.pi * 3) * (theta.sin() + (math.pi - theta) * cos)
    torch.testing.assert_close(nngp, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ARCHS)
def test_cuda_matches_cpu(name):
    arch, shape = ARCHS[name]
    x = _x(shape, 6)
    cpu, gpu = arch.kernel(x), arch.kernel(x.cuda())
    assert gpu.ntk.device.type == "cuda"
    torch.testing.assert_close(gpu.ntk.cpu(), cpu.ntk, rtol=1e-10, atol=0)
    torch.testing.assert_close(gpu.nngp.cpu(), cpu.nngp, rtol=1e-10, atol=0)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_module_shapes_and_parameterizations_agree_in_distribution(parameterization):
    arch = serial(Conv(16, 3, 2.0, 0.5), ReLU(), Flatten(), Dense(32, 1.5, 0.2), ReLU(), Dense(1))
    net = arch.module((3, 5, 5), num_outputs=4, parameterization=parameterization,
                      generator=torch.Generator().manual_seed(0))
    assert net(torch.randn(2, 3, 5, 5)).shape == (2, 4)
    # The effective first-layer weight w_scale·W has std w_std/√fan_in in both parameterizations.
    weight, bias = net[0].scaled()
    assert abs(weight.std().item() - 2.0 / math.sqrt(27)) < 0.05 * 2.0 / math.sqrt(27)
    assert abs(bias.std().item() - 0.5) < 0.25


def test_ntk_parameterization_draws_unit_normals_and_scales_in_forward():
    net = serial(Dense(4096, 3.0, 0.5), ReLU(), Dense(1)).module((64,), 1, generator=torch.Generator().manual_seed(0))
    layer = net[0]
    assert abs(layer.weight.std().item() - 1.0) < 0.01
    assert layer.w_scale == pytest.approx(3.0 / 8.0)
    assert layer.b_scale == 0.5


@pytest.mark.parametrize("name", list_archs())
def test_every_named_architecture_builds_a_module_and_a_kernel(name):
    small = {"wrn": {"depth": 10, "widen": 1}, "resnet": {"width": 2}}
    arch = get(name, **small.get(name, {"channels": 4} if "myrtle" in name or name == "cnn" else {"width": 8}))
    x = _x((1, 8, 8), 3)
    assert arch.module((1, 8, 8), 10)(x.float()).shape == (3, 10)
    k = arch.kernel(x)
    assert k.nngp.shape == k.ntk.shape == (3, 3)
    assert torch.isfinite(k.ntk).all()
