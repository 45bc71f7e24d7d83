"""Named architectures, registered with ``@register_arch`` and built by ``get(name, **options)``.

Options are type-checked against each builder's annotations (``resolve``) and range-checked by
the builder, so a bad value raises one line naming ``arch.<option>``. Widths are NTK
parameterization throughout (``arch.layers``); the last Dense's width becomes the number of
classes when the network is built (``Serial.module``).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from typing import Literal

from ntkbench.arch.activations import FUNCTIONS, Activation, Elementwise, ReLU
from ntkbench.arch.combinators import Identity, residual
from ntkbench.arch.layers import SPEC_LAYERS, Conv, Dense, Layer
from ntkbench.arch.pooling import AvgPool, Flatten, GlobalAvgPool
from ntkbench.arch.normalization import BatchNorm, LayerNorm
from ntkbench.arch.serial import Serial, serial
from ntkbench.options import check_range, check_type
from ntkbench.registry import Registry, unknown_message

ARCHS: Registry[Callable[..., Serial]] = Registry("architecture")
register_arch = ARCHS.register

Readout = Literal["gap", "flatten"]
Norm = Literal["none", "layernorm", "batchnorm"]
READOUTS: dict[str, type[Layer]] = {"gap": GlobalAvgPool, "flatten": Flatten}
NORMS: dict[str, type[Layer] | None] = {"none": None, "layernorm": LayerNorm, "batchnorm": BatchNorm}


def get(name: str, **options) -> Serial:
    """Build the registered architecture ``name``; unknown names or options raise with the choices."""
    return ARCHS.get(name)(**resolve(name, **options))


def resolve(name: str, **options) -> dict[str, object]:
    """Every option of architecture ``name``: the given ones type-checked against the builder's
    annotations (ints become floats where a float is declared, so ``w_std=2`` and ``w_std=2.0``
    are one architecture), the rest at their defaults. Unknown names or options raise with the
    choices; ranges are checked by the builder."""
    builder = ARCHS.get(name)
    valid = inspect.signature(builder).parameters
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(unknown_message(f"unknown option(s) {{}} for architecture {name!r}", unknown, list(valid),
                                         "Valid options"))
    hints = typing.get_type_hints(builder)
    return {key: check_type(f"arch.{key}", options[key], hints[key]) if key in options else p.default
            for key, p in valid.items()}


def _check_sizes(w_std: float, b_std: float | None, **sizes: int) -> None:
    """Each of ``sizes`` (depth, width, channels, ...) >= 1, and the weight and bias stds >= 0."""
    for key, value in sizes.items():
        check_range(f"arch.{key}", value, 1)
    check_range("arch.w_std", w_std, 0)
    check_range("arch.b_std", b_std, 0)


def list_archs(pattern: str = "*") -> list[str]:
    return ARCHS.list(pattern)


def _builds(name: str) -> bool:
    try:
        SPEC_LAYERS[name].from_spec([name], 1)
    except (TypeError, ValueError):  # a layer whose arguments have no defaults (abrelu: a, b)
        return False
    return True


def activations() -> list[str]:
    """Names an ``activation`` option takes: every activation layer's exchange-format name that
    builds from the name alone (``abrelu`` needs a and b, so it is not one; ``leaky_relu`` is
    ABReLU(0.01, 1)), then the functions ``Elementwise`` knows by name (``FUNCTIONS``: softplus,
    sigmoid, silu, ...), whose kernels are computed by quadrature."""
    exact = {name for name, cls in SPEC_LAYERS.items() if issubclass(cls, Activation) and _builds(name)}
    return sorted(exact | set(FUNCTIONS))


def _activation(name: str) -> Layer:
    """The activation layer called ``name`` (see ``activations``): the closed-form layer where
    one has that name, else ``Elementwise(name)``."""
    if name not in activations():
        raise ValueError(f"option arch.activation must be one of {', '.join(activations())}, got {name!r}")
    return SPEC_LAYERS[name].from_spec([name], 1) if name in SPEC_LAYERS else Elementwise(name)


def _choice(name: str, value: str, choices: dict[str, object]) -> None:
    if value not in choices:
        raise ValueError(f"option arch.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@register_arch("mlp")
def mlp(depth: int = 3, width: int = 512, activation: str = "relu", w_std: float = math.sqrt(2), b_std: float | None = 0.1) -> Serial:
    """``depth`` hidden Dense layers of ``width`` units, each followed by ``activation``, then a
    Dense readout. Inputs are flattened first, so images work too."""
    _check_sizes(w_std, b_std, depth=depth, width=width)
    hidden = [layer for _ in range(depth) for layer in (Dense(width, w_std, b_std), _activation(activation))]
    return serial(Flatten(), *hidden, Dense(1, w_std, b_std))


@register_arch("cnn")
def cnn(depth: int = 3, channels: int = 64, kernel_size: int = 3, readout: Readout = "gap", activation: str = "relu",
        w_std: float = math.sqrt(2), b_std: float | None = 0.1) -> Serial:
    """``depth`` stride-1 'SAME' convolutions with ``activation``, then a Flatten or global
    average pooling readout and a Dense layer (the CNN-V / CNN-GAP of Novak et al. 2019)."""
    _check_sizes(w_std, b_std, depth=depth, channels=channels, kernel_size=kernel_size)
    _choice("readout", readout, READOUTS)
    convs = [layer for _ in range(depth) for layer in (Conv(channels, kernel_size, w_std, b_std), _activation(activation))]
    return serial(*convs, READOUTS[readout](), Dense(1, w_std, b_std))


def _myrtle(blocks: tuple[int, int, int], channels: int, w_std: float, b_std: float | None) -> Serial:
    """Myrtle networks (Shankar et al. 2020, "Neural Kernels Without Tangents"): 3×3 conv-ReLU
    stages separated by 2×2 average pooling. The paper's closing three 2×2 poolings of the 8×8
    map of a 32×32 image equal one global average pool, which also fits other image sizes."""
    _check_sizes(w_std, b_std, channels=channels)

    def stage(n: int) -> list[Layer]:
        return [layer for _ in range(n) for layer in (Conv(channels, 3, w_std, b_std), ReLU())]

    return serial(*stage(blocks[0]), AvgPool(2), *stage(blocks[1]), AvgPool(2), *stage(blocks[2]),
                  GlobalAvgPool(), Dense(1, w_std, b_std))


@register_arch("myrtle5")
def myrtle5(channels: int = 128, w_std: float = math.sqrt(2), b_std: float | None = None) -> Serial:
    return _myrtle((2, 1, 1), channels, w_std, b_std)


@register_arch("myrtle7")
def myrtle7(channels: int = 128, w_std: float = math.sqrt(2), b_std: float | None = None) -> Serial:
    return _myrtle((2, 2, 2), channels, w_std, b_std)


@register_arch("myrtle10")
def myrtle10(channels: int = 128, w_std: float = math.sqrt(2), b_std: float | None = None) -> Serial:
    return _myrtle((3, 3, 3), channels, w_std, b_std)


def _norm_relu(norm: str, activation: str) -> list[Layer]:
    """The pre-activation: ``Norm → φ`` (just φ for norm="none")."""
    cls = NORMS[norm]
    return ([cls()] if cls else []) + [_activation(activation)]


@register_arch("wrn")
def wrn(depth: int = 16, widen: int = 4, readout: Readout = "gap", norm: Norm = "none", activation: str = "relu",
        w_std: float = 1.0, b_std: float | None = None) -> Serial:
    """Wide ResNet WRN-``depth``-``widen`` (Zagoruyko & Komodakis 2016, "Wide residual
    networks"), default WRN-16-4. With ``norm="none"`` it is exactly the network of
    neural-tangents' README (``WideResnet(block_size=n, k=widen, num_classes)``):

        Conv(16, 3) → 3 groups of n = (depth − 4)/6 blocks, widths 16k, 32k, 64k, strides 1, 2, 2
        → AvgPool to 1×1 (``GlobalAvgPool``; ``readout="flatten"``: ``Flatten``) → Dense(C, 1, 0),

    a block being ``residual(main, shortcut)`` with main = φ → Conv(c, 3, s) → φ → Conv(c, 3)
    and shortcut = Identity, or Conv(c, 3, s) on the block's input for the first block of each
    group (stax's ``channel_mismatch=True``). Convolutions use ``w_std``, ``b_std`` (stax's
    defaults 1 and no bias); the readout is Dense(W_std=1, b_std=0) as neural-tangents'.
    On 32×32 inputs the final map is 8×8 and GlobalAvgPool equals its AvgPool((8, 8)) + Flatten;
    GlobalAvgPool fits any input size (64×64 ends at 16×16).

    ``norm="layernorm"`` or ``"batchnorm"`` puts a Norm before each φ, pre-activation order
    (Norm → φ → Conv) as WRN and He et al. 2016 ("Identity mappings in deep residual networks")
    do, and a final Norm → φ before the readout, as WRN has. LayerNorm keeps the exact kernel: each
    of its inputs is Gaussian in the limit (a Conv's output, or a sum of a Conv and a Gaussian
    shortcut). BatchNorm has none; the kernel methods then use Monte Carlo.
    """
    _check_sizes(w_std, b_std, depth=depth, widen=widen)
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"option arch.depth must be 6n + 4 for n >= 1 blocks per group (10, 16, 22, 28, ...), got {depth}")
    _choice("readout", readout, READOUTS)
    _choice("norm", norm, NORMS)
    n = (depth - 4) // 6

    def block(channels: int, stride: int, first: bool) -> Layer:
        """The group's first block has the group's stride and a Conv shortcut; the others neither."""
        stride = stride if first else 1
        main = serial(*_norm_relu(norm, activation), Conv(channels, 3, w_std, b_std, stride),
                      *_norm_relu(norm, activation), Conv(channels, 3, w_std, b_std))
        return residual(main, Conv(channels, 3, w_std, b_std, stride) if first else Identity())

    groups = [block(c, s, i == 0) for c, s in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)) for i in range(n)]
    final = _norm_relu(norm, activation) if norm != "none" else []
    return serial(Conv(16, 3, w_std, b_std), *groups, *final, READOUTS[readout](), Dense(1, 1.0, 0.0))


@register_arch("resnet")
def resnet(width: int = 16, readout: Readout = "gap", norm: Norm = "none", stem_stride: Literal[1, 2] = 1,
           activation: str = "relu", w_std: float = 1.0, b_std: float | None = None) -> Serial:
    """Pre-activation ResNet-18 (He et al. 2016, "Identity mappings in deep residual networks"),
    the CIFAR form (3×3 stem, no max pooling):

        Conv(w, 3, stem_stride) → 4 stages of 2 basic blocks, widths w, 2w, 4w, 8w, strides 1, 2, 2, 2
        → [Norm] → φ → GlobalAvgPool (or Flatten) → Dense(C, 1, 0).

    A basic block is ``residual(Norm → φ → Conv(c, 3) → Norm → φ → Conv(c, 3), Identity)``;
    where the shape changes (the first block of stages 2–4) the pre-activation is shared and
    the shortcut is a 1×1 convolution with the stride, as in the paper's code:
    ``Norm → φ → residual(Conv(c, 3, s) → Norm → φ → Conv(c, 3), Conv(c, 1, s))``.
    ``norm="none"`` drops the Norms (every kernel then exact, as for LayerNorm).

    ``width`` defaults to 16, not the paper's 64: 16 is a quarter of the channels and ~1/16 of
    the FLOPs and parameters (0.7M rather than 11M), which trains on a CPU. For 64×64 inputs
    (ImageNet64) pass ``stem_stride=2``: the stem halves them to 32×32, so the stages see the
    resolutions the CIFAR network sees (32, 16, 8, 4), where ImageNet's ResNet uses a 7×7
    stride-2 stem and a max pool.
    """
    _check_sizes(w_std, b_std, width=width)
    _choice("readout", readout, READOUTS)
    _choice("norm", norm, NORMS)
    _choice("stem_stride", stem_stride, {1: None, 2: None})

    def conv(channels: int, size: int = 3, stride: int = 1) -> Conv:
        return Conv(channels, size, w_std, b_std, stride)

    layers: list[Layer] = [conv(width, 3, stem_stride)]
    for stage, stride in enumerate((1, 2, 2, 2)):
        c = width * 2**stage
        if stride == 1:
            layers.append(residual(serial(*_norm_relu(norm, activation), conv(c), *_norm_relu(norm, activation), conv(c))))
        else:
            main = serial(conv(c, 3, stride), *_norm_relu(norm, activation), conv(c))
            layers += [*_norm_relu(norm, activation), residual(main, conv(c, 1, stride))]
        layers.append(residual(serial(*_norm_relu(norm, activation), conv(c), *_norm_relu(norm, activation), conv(c))))
    return serial(*layers, *_norm_relu(norm, activation), READOUTS[readout](), Dense(1, 1.0, 0.0))
