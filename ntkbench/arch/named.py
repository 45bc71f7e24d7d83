"""Named architectures, registered with ``@register_arch`` and built by ``get(name, **options)``."""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable

from ntkbench.arch.activations import Activation, ReLU
from ntkbench.arch.layers import SPEC_LAYERS, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Layer
from ntkbench.arch.serial import Serial, serial
from ntkbench.options import check_range, check_type
from ntkbench.registry import Registry, unknown_message

ARCHS: Registry[Callable[..., Serial]] = Registry("architecture")
register_arch = ARCHS.register


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


def activations() -> list[str]:
    """Names of the activations an architecture option can take: every activation layer's
    exchange-format name, built with its default arguments."""
    return sorted(name for name, cls in SPEC_LAYERS.items() if issubclass(cls, Activation) and name != "elementwise")


def _activation(name: str) -> Layer:
    if name not in activations():
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(activations())}")
    cls = SPEC_LAYERS[name]
    return cls.from_spec([name], 1)


@register_arch("mlp")
def mlp(depth: int = 3, width: int = 512, activation: str = "relu", w_std: float = math.sqrt(2), b_std: float | None = 0.1) -> Serial:
    """``depth`` hidden Dense layers of ``width`` units, each followed by ``activation``, then a
    Dense readout. Inputs are flattened first, so images work too."""
    _check_sizes(w_std, b_std, depth=depth, width=width)
    hidden = [layer for _ in range(depth) for layer in (Dense(width, w_std, b_std), _activation(activation))]
    return serial(Flatten(), *hidden, Dense(1, w_std, b_std))


@register_arch("cnn")
def cnn(depth: int = 3, channels: int = 64, kernel_size: int = 3, readout: str = "gap", activation: str = "relu",
        w_std: float = math.sqrt(2), b_std: float | None = 0.1) -> Serial:
    """``depth`` stride-1 'SAME' convolutions with ``activation``, then a Flatten or global
    average pooling readout and a Dense layer (the CNN-V / CNN-GAP of Novak et al. 2019)."""
    _check_sizes(w_std, b_std, depth=depth, channels=channels, kernel_size=kernel_size)
    readouts = {"flatten": Flatten, "gap": GlobalAvgPool}
    if readout not in readouts:
        raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(readouts)}")
    convs = [layer for _ in range(depth) for layer in (Conv(channels, kernel_size, w_std, b_std), _activation(activation))]
    return serial(*convs, readouts[readout](), Dense(1, w_std, b_std))


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
