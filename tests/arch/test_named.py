"""Named architectures: wrn is neural-tangents' README WideResnet, resnet is a pre-activation
ResNet-18, shapes at 32×32 and 64×64, finite forward passes, the kernel path per norm, and one-line
errors for bad options."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ntkbench.arch import (AvgPool, BatchNorm, Conv, Dense, Flatten, GlobalAvgPool, Identity, LayerNorm, ReLU, get,
                           list_archs, residual, serial)
from ntkbench.arch.named import activations
from ntkbench.arch.spec import to_spec


def nt_wide_resnet(block_size, k):
    """neural-tangents' README example, line by line, in our layers (stax.Conv defaults:
    W_std=1, b_std=None; padding 'SAME'); its AvgPool((8, 8)) + Flatten is GlobalAvgPool here
    (equal on 32×32, see the kernel test below)."""
    def block(channels, strides=1, channel_mismatch=False):
        main = serial(ReLU(), Conv(channels, 3, 1.0, None, strides), ReLU(), Conv(channels, 3, 1.0, None))
        shortcut = Identity() if not channel_mismatch else Conv(channels, 3, 1.0, None, strides)
        return residual(main, shortcut)

    def group(n, channels, strides=1):
        return [block(channels, strides, channel_mismatch=True)] + [block(channels, 1) for _ in range(n - 1)]

    return serial(Conv(16, 3, 1.0, None), *group(block_size, 16 * k), *group(block_size, 32 * k, 2),
                  *group(block_size, 64 * k, 2), GlobalAvgPool(), Dense(1, 1.0, 0.0))


# The same network in the exchange format, as benchmarks/make_nt_reference.py sends it to stax
# (widths are not part of the format).
MAIN = [["relu"], ["conv", 3, 1.0, None], ["relu"], ["conv", 3, 1.0, None]]
MAIN_STRIDED = [["relu"], ["conv", 3, 1.0, None, 2], ["relu"], ["conv", 3, 1.0, None]]
WRN_10_SPEC = [
    ["conv", 3, 1.0, None],
    ["residual", MAIN, [["conv", 3, 1.0, None]]],
    ["residual", MAIN_STRIDED, [["conv", 3, 1.0, None, 2]]],
    ["residual", MAIN_STRIDED, [["conv", 3, 1.0, None, 2]]],
    ["gap"],
    ["dense", 1.0, 0.0],
]


@pytest.mark.parametrize("depth, widen", [(10, 1), (16, 4), (28, 2)])
def test_wrn_without_norm_is_the_neural_tangents_readme_network(depth, widen):
    assert get("wrn", depth=depth, widen=widen).layers == nt_wide_resnet((depth - 4) // 6, widen).layers


def test_wrn_exchange_format_entry():
    assert to_spec(get("wrn", depth=10, widen=1)) == WRN_10_SPEC
    blocks = to_spec(get("wrn", depth=16, widen=1))[1:-2]
    assert blocks == [WRN_10_SPEC[1], ["residual", MAIN, []], WRN_10_SPEC[2], ["residual", MAIN, []],
                      WRN_10_SPEC[3], ["residual", MAIN, []]]


def test_global_pool_is_neural_tangents_avgpool_8_and_flatten_on_32x32():
    # The last map of a 32×32 input is 8×8, so AvgPool(8) leaves one position: the same mean.
    arch = get("wrn", depth=10, widen=1)
    readme = serial(*arch.layers[:-2], AvgPool(8), Flatten(), arch.layers[-1])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, theirs = arch.kernel(x), readme.kernel(x)
    torch.testing.assert_close(ours.ntk, theirs.ntk, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.nngp, theirs.nngp, rtol=1e-12, atol=0)


NT_EXTRA = Path(__file__).resolve().parent / "nt_extra.npz"


@pytest.mark.parametrize("case, block_size", [("wrn_readme_b1_16x16", 1), ("wrn_readme_b2_8x8", 2)])
def test_wrn_kernel_equals_neural_tangents_readme_wide_resnet(case, block_size):
    # neural-tangents 0.6.5 computed these (benchmarks/make_nt_reference.py) for its README's
    # WideResnet(block_size, k=1) on 16×16 and 8×8 inputs, whose AvgPool + Flatten over the last
    # 4×4 or 2×2 map is our global pool. Both float64; we see ~1e-15 and allow 1e-6 (test_reference).
    with np.load(NT_EXTRA) as z:
        if f"{case}/ntk" not in z.files:
            pytest.skip(f"{case} is not in {NT_EXTRA.name}")
        x1, x2, nngp, ntk = (torch.from_numpy(z[f"{case}/{key}"]) for key in ("x1", "x2", "nngp", "ntk"))
    k = get("wrn", depth=6 * block_size + 4, widen=1).kernel(x1, x2)
    assert float((k.nngp - nngp).abs().max() / nngp.abs().max()) < 1e-6
    assert float((k.ntk - ntk).abs().max() / ntk.abs().max()) < 1e-6


def test_wrn_norms_go_before_each_activation_and_before_the_readout():
    for norm, cls in (("layernorm", LayerNorm), ("batchnorm", BatchNorm)):
        arch = get("wrn", depth=10, widen=1, norm=norm)
        first = arch.layers[1]
        assert first.main.layers == (cls(), ReLU(), Conv(16, 3, 1.0, None), cls(), ReLU(), Conv(16, 3, 1.0, None))
        assert first.shortcut == Conv(16, 3, 1.0, None)
        assert arch.layers[-4:-2] == (cls(), ReLU())


def test_resnet_is_preactivation_resnet18():
    arch = get("resnet", width=8, norm="batchnorm")
    blocks = [layer for layer in arch.layers if hasattr(layer, "main")]
    assert len(blocks) == 8  # 4 stages of 2 basic blocks
    convs = [layer for block in blocks for layer in (*block.main.layers, block.shortcut) if isinstance(layer, Conv)]
    assert len(convs) == 16 + 3  # two 3×3 per block, a 1×1 shortcut where the shape changes
    assert [c for c in convs if c.kernel_size == 1] == [Conv(w, 1, 1.0, None, 2) for w in (16, 32, 64)]
    shapes = arch.shapes((3, 32, 32))
    assert [shapes[i + 1] for i, layer in enumerate(arch.layers) if hasattr(layer, "main")][1::2] == [
        (8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    # a shape-changing block shares its pre-activation: Norm → ReLU → residual(strided main, 1×1)
    i = arch.layers.index(blocks[2])
    assert arch.layers[i - 2:i] == (BatchNorm(), ReLU()) and blocks[2].main.layers[0] == Conv(16, 3, 1.0, None, 2)


@pytest.mark.parametrize("name, options, size, last_map", [
    ("wrn", {"depth": 10, "widen": 1}, 32, (64, 8, 8)),
    ("wrn", {"depth": 10, "widen": 1}, 64, (64, 16, 16)),
    ("wrn", {"depth": 10, "widen": 2, "readout": "flatten"}, 64, (128, 16, 16)),
    ("resnet", {"width": 4}, 32, (32, 4, 4)),
    ("resnet", {"width": 4, "stem_stride": 2}, 64, (32, 4, 4)),
])
def test_shapes_at_32_and_64(name, options, size, last_map):
    arch = get(name, **options)
    shapes = arch.shapes((3, size, size))
    assert shapes[-3] == last_map  # before the readout (GlobalAvgPool or Flatten) and the Dense
    assert shapes[-1] == (1,)
    net = arch.module((3, size, size), 10, generator=torch.Generator().manual_seed(0))
    assert net(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("norm", ["none", "layernorm", "batchnorm"])
@pytest.mark.parametrize("name", ["wrn", "resnet"])
def test_finite_forward_pass_in_training_and_evaluation(name, norm):
    arch = get(name, norm=norm, **({"depth": 10, "widen": 1} if name == "wrn" else {"width": 4}))
    net = arch.module((3, 32, 32), 10, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.isfinite(net.train()(x)).all() and torch.isfinite(net.eval()(x)).all()


@pytest.mark.parametrize("norm, method", [("none", "exact"), ("layernorm", "exact"), ("batchnorm", "monte_carlo")])
def test_kernel_method_per_norm(norm, method):
    # LayerNorm's exact kernel needs Gaussian inputs; in the pre-activation position each one
    # follows a Conv or a sum of a Conv and a shortcut, so the whole network keeps it.
    assert get("wrn", depth=10, widen=1, norm=norm).kernel_method((3, 32, 32)) == method
    assert get("resnet", width=4, norm=norm).kernel_method((3, 32, 32)) == method
    assert get("resnet", width=4, norm=norm, stem_stride=2).kernel_method((3, 64, 64)) == method


@pytest.mark.parametrize("activation", activations())
def test_every_activation_name_builds_and_runs(activation):
    x = torch.randn(3, 1, 8, 8)
    for name, options in (("mlp", {"depth": 1, "width": 8}), ("cnn", {"depth": 1, "channels": 4}),
                          ("wrn", {"depth": 10, "widen": 1}), ("resnet", {"width": 2})):
        net = get(name, activation=activation, **options).module((1, 8, 8), 3)
        assert torch.isfinite(net(x)).all()


@pytest.mark.parametrize("name", list_archs())
def test_every_architecture_builds_with_its_defaults(name):
    arch = get(name)
    net = arch.module((3, 16, 16), 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize("name, options, message", [
    ("wrn", {"depth": 12}, "option arch.depth must be 6n + 4 for n >= 1 blocks per group (10, 16, 22, 28, ...), got 12"),
    ("wrn", {"depth": 4}, "option arch.depth must be 6n + 4"),
    ("wrn", {"depth": 10.0}, "option arch.depth must be int, got 10.0"),
    ("wrn", {"widen": 0}, "option arch.widen must be a finite number >= 1, got 0"),
    ("wrn", {"norm": "bn"}, "option arch.norm must be one of 'none', 'layernorm', 'batchnorm', got 'bn'"),
    ("wrn", {"readout": "avg"}, "option arch.readout must be one of 'gap', 'flatten', got 'avg'"),
    ("wrn", {"w_std": -1.0}, "option arch.w_std must be a finite number >= 0, got -1.0"),
    ("wrn", {"blocks": 2}, "unknown option(s) 'blocks' for architecture 'wrn'"),
    ("resnet", {"stem_stride": 3}, "option arch.stem_stride must be one of 1, 2, got 3"),
    ("resnet", {"width": 0}, "option arch.width must be a finite number >= 1, got 0"),
    ("cnn", {"activation": "swish"}, "option arch.activation must be one of " + ", ".join(activations())),
    ("mlp", {"activation": "abrelu"}, "option arch.activation must be one of"),
])
def test_bad_options_raise_one_line(name, options, message):
    with pytest.raises(ValueError) as info:
        get(name, **options)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
