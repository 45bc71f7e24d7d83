"""Combinators and the layers of issue 14: structure, the finite modules, where an exact kernel
exists and where it is refused, and the exchange format. The kernels' values are checked against
neural-tangents in test_reference.py and against wide finite networks in test_monte_carlo.py;
here the checks are identities that hold exactly (up to float64 rounding, 1e-12 relative)."""

import pytest
import torch
import torch.nn.functional as F

from ntkbench.arch import (
    ABReLU, AvgPool, BatchNorm, Conv, Dense, Dropout, Elementwise, Erf, FanInConcat, FanInSum, FanOut, Flatten,
    Gelu, GlobalAvgPool, Identity, LayerNorm, LeakyReLU, MaxPool, ReLU, Sin, Tanh, parallel, residual, serial,
)
from ntkbench.arch.spec import from_spec, to_spec

G = torch.Generator().manual_seed(0)
X_IMG = torch.randn(5, 3, 8, 8, generator=G, dtype=torch.float64)
X_VEC = torch.randn(6, 7, generator=G, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_residual_with_identity_adds_the_input_kernel():
    """x + Dense(x): nngp = K0 + (w²K0 + b²) and ntk = ntk(Dense) + 0, by independence."""
    res = serial(residual(Dense(7, 1.3, 0.2)), Dense(1, 1.0, 0.0))
    plain = serial(Dense(7, 1.3, 0.2), Dense(1, 1.0, 0.0))
    k0 = X_VEC @ X_VEC.T / X_VEC.shape[1]
    inner = 1.3**2 * k0 + 0.2**2
    assert _rel(res.kernel(X_VEC).nngp, k0 + inner) < 1e-12
    assert _rel(res.kernel(X_VEC).ntk - res.kernel(X_VEC).nngp, plain.kernel(X_VEC).ntk - plain.kernel(X_VEC).nngp) < 1e-12


def test_fanout_parallel_faninsum_equals_residual():
    main = serial(ReLU(), Conv(4, 3, 1.4, 0.1), ReLU(), Conv(4, 3, 1.2, None, stride=2))
    short = Conv(4, 1, 1.0, None, stride=2)
    head = [GlobalAvgPool(), Dense(1, 1.0, 0.0)]
    a = serial(Conv(4, 3), residual(main, short), *head)
    b = serial(Conv(4, 3), FanOut(2), parallel(main, short), FanInSum(), *head)
    ka, kb = a.kernel(X_IMG), b.kernel(X_IMG)
    assert torch.equal(ka.nngp, kb.nngp) and torch.equal(ka.ntk, kb.ntk)


def test_a_sum_of_dependent_branches_has_no_exact_kernel_and_says_why():
    # x + LayerNorm(x) adds one Gaussian to a rescaled copy of itself: stax accepts it and is wrong.
    arch = serial(Dense(4), residual(LayerNorm()), ReLU(), Dense(1))
    assert arch.kernel_method((7,)) == "monte_carlo"
    with pytest.raises(ValueError, match=r"FanInSum: .*branches 0, 1 do not; pass method='monte_carlo'"):
        arch.kernel(X_VEC)
    # One branch that ends in its own affine layer makes the sum exact again.
    assert serial(Dense(4), residual(Dense(4)), ReLU(), Dense(1)).kernel_method((7,)) == "exact"


@pytest.mark.parametrize("before", [[ReLU()], [Dense(4), ReLU()], [Conv(4, 3), Flatten()],
                                    [FanOut(2), parallel(Dense(4), Dense(4)), FanInConcat()]])
def test_an_activation_needs_gaussian_pre_activations(before):
    """The kernel maps are expectations over Gaussian inputs with the kernel's covariance: raw
    inputs, an activation's output, Flatten's features and concatenated channels are not that."""
    shape = (3, 8, 8) if isinstance(before[0], Conv) else (7,)
    arch = serial(*before, Erf(), *([] if isinstance(before[-1], Flatten) or len(shape) == 1 else [Flatten()]), Dense(1))
    assert "an activation's kernel needs Gaussian pre-activations" in arch.no_kernel(shape)


def test_layernorm_needs_gaussian_inputs():
    ok = serial(Conv(4, 3), residual(serial(ReLU(), Conv(4, 3))), LayerNorm(), ReLU(), Flatten(), Dense(1))
    assert ok.kernel_method((3, 8, 8)) == "exact"
    bad = serial(Conv(4, 3), ReLU(), LayerNorm(), Flatten(), Dense(1))
    assert bad.kernel_method((3, 8, 8)) == "monte_carlo"
    with pytest.raises(ValueError, match=r"LayerNorm's kernel needs Gaussian inputs"):
        bad.kernel(X_IMG)


def test_layernorm_kernel_is_a_correlation_and_its_module_normalizes():
    arch = serial(Dense(4, 1.5, 0.3), LayerNorm(), Dense(1, 1.0, 0.0))
    k = arch.kernel(X_VEC)
    pre = serial(Dense(4, 1.5, 0.3), Dense(1, 1.0, 0.0)).kernel(X_VEC)
    q = pre.nngp.diagonal()  # Dense(1, 1, 0) leaves nngp = that of the first layer
    assert _rel(k.nngp, pre.nngp / (q[:, None] * q[None, :]).sqrt()) < 1e-12
    net = serial(Conv(6, 3), LayerNorm(), Flatten(), Dense(1)).module((3, 8, 8), 2)
    h = net[1](net[0](X_IMG.float()))
    assert h.mean(1).abs().max() < 1e-5 and (h.var(1, unbiased=False) - 1).abs().max() < 1e-4


def test_fanin_concat_averages_equal_width_branches_and_refuses_unequal_ones():
    two = serial(FanOut(2), parallel(Dense(4, 1.1, 0.1), Dense(4, 0.7, 0.2)), FanInConcat(), Dense(5), ReLU(), Dense(1))
    k = two.kernel(X_VEC)
    mid = serial(FanOut(2), parallel(Dense(4, 1.1, 0.1), Dense(4, 0.7, 0.2)), FanInConcat(), Dense(1, 1.0, 0.0))
    a, b = serial(Dense(4, 1.1, 0.1), Dense(1, 1.0, 0.0)), serial(Dense(4, 0.7, 0.2), Dense(1, 1.0, 0.0))
    assert _rel(mid.kernel(X_VEC).nngp, (a.kernel(X_VEC).nngp + b.kernel(X_VEC).nngp) / 2) < 1e-12
    assert torch.isfinite(k.ntk).all() and k.ntk.shape == (6, 6)
    assert two.module((7,), 3)(X_VEC.float()).shape == (6, 3)
    uneven = serial(FanOut(2), parallel(Dense(4), Dense(8)), FanInConcat(), Dense(1))
    assert "widths 4, 8" in uneven.no_kernel((7,))


def test_the_finite_residual_module_is_main_plus_shortcut():
    arch = serial(Conv(4, 3), residual(serial(ReLU(), Conv(4, 3, stride=2)), Conv(4, 3, stride=2)),
                  GlobalAvgPool(), Dense(2))
    net = arch.module((3, 8, 8), 2, generator=torch.Generator().manual_seed(1))
    x = X_IMG.float()
    h = net[0](x)
    fanout, par, fanin = net[1]
    main, short = par.branches
    expected = net[3](net[2](main(h) + short(h)))
    assert torch.allclose(net(x), expected, atol=1e-6)


@pytest.mark.parametrize("side, k, stride, pads", [(8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (8, 1, 2, (0, 0)),
                                                    (8, 4, 1, (1, 2)), (9, 3, 3, (0, 0))])
def test_strided_conv_pads_as_xla(side, k, stride, pads):
    net = serial(Conv(2, k, stride=stride), Flatten(), Dense(1)).module((1, side, side), 1)
    conv = net[0]
    x = torch.randn(2, 1, side, side, generator=G)
    w, b = conv.scaled()
    padded = F.pad(x, (pads[0], pads[1], pads[0], pads[1]))
    assert torch.allclose(conv(x), F.conv2d(padded, w, b, stride=stride), atol=1e-6)
    assert conv(x).shape[-1] == -(-side // stride)


def test_exact_kernels_do_not_depend_on_blocking():
    arch = serial(Conv(4, 3), residual(serial(Gelu(), Conv(4, 3, stride=2)), Conv(4, 1, stride=2)), LayerNorm(),
                  LeakyReLU(0.1), Conv(4, 3), AvgPool(2), Sin(1.0, 0.5, 0.2), Flatten(), Dense(1))
    full, blocked = arch.kernel(X_IMG), arch.kernel(X_IMG, block_size=2)
    assert _rel(blocked.ntk, full.ntk) < 1e-12 and torch.equal(full.ntk, full.ntk.T)
    cross = arch.kernel(X_IMG[:2], X_IMG)
    assert _rel(cross.ntk, full.ntk[:2]) < 1e-12


def test_kernel_method_by_layer():
    head = [Flatten(), Dense(1)]
    assert serial(Conv(4, 3), Tanh(), *head).kernel_method((3, 8, 8)) == "quadrature"
    for layer in (MaxPool(2), BatchNorm(), Dropout(0.1)):
        arch = serial(Conv(4, 3), ReLU(), layer, *head)
        assert arch.kernel_method((3, 8, 8)) == "monte_carlo"
        with pytest.raises(ValueError, match=rf"{type(layer).__name__}.*has no closed-form kernel; pass method='monte_carlo'"):
            arch.kernel(X_IMG)
        assert arch.module((3, 8, 8), 2)(X_IMG.float()).shape == (5, 2)


def test_structural_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 1 \(FanInSum\(\)\): FanInSum\(\) joins branches; put FanOut"):
        serial(Dense(3), FanInSum(), Dense(1)).shapes((4,))
    with pytest.raises(ValueError, match=r"parallel has 3 branches but receives 2 signals"):
        serial(FanOut(2), parallel(Dense(3), Dense(3), Dense(3)), FanInSum()).shapes((4,))
    with pytest.raises(ValueError, match=r"FanInSum needs branches of one shape"):
        serial(FanOut(2), parallel(Dense(3), Dense(4)), FanInSum()).shapes((4,))
    with pytest.raises(ValueError, match=r"ends in 2 branches; join them"):
        serial(FanOut(2), parallel(Dense(3), Dense(1))).kernel(X_VEC[:, :4])
    with pytest.raises(ValueError, match=r"n must be an int >= 2"):
        serial(FanOut(1))


def test_spec_round_trip_covers_every_exact_layer():
    arch = serial(Conv(1, 3, 1.4, 0.1, stride=2), residual(serial(ReLU(), Conv(1, 3), LayerNorm(), Gelu()),
                                                           Conv(1, 1, 1.0, None)),
                  residual(serial(Erf(), Conv(1, 3)), Identity()), LeakyReLU(0.2), ABReLU(-0.5, 1.5), Sin(2.0, 0.5, 0.1),
                  Tanh(), Elementwise("softplus", deg=12), AvgPool(2), Flatten(), Dense(1, 1.0, 0.0))
    spec = to_spec(arch)
    assert spec[1][0] == "residual" and spec[2][2] == [] and ["tanh"] in spec
    assert ["elementwise", "softplus", 12] in spec and ["conv", 3, 1.4, 0.1, 2] == spec[0]
    again = from_spec(spec)
    assert to_spec(again) == spec and repr(again) == repr(arch)
    with pytest.raises(ValueError, match=r"has no entry in the exchange format"):
        to_spec(serial(Conv(1, 3), MaxPool(2), Flatten(), Dense(1)))
    with pytest.raises(ValueError, match=r"layer 0: unknown layer 'swish'; expected one of"):
        from_spec([["swish"]])
    with pytest.raises(ValueError, match=r"a residual entry is \['residual', MAIN, SHORTCUT\]"):
        from_spec([["residual", [["relu"]]]])
