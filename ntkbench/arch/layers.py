"""Layers of the architecture language. Each layer holds, side by side, its finite
``torch.nn.Module`` and its infinite-width kernel update, as neural-tangents' stax layers hold
``(init_fn, apply_fn, kernel_fn)``, and declares what the rest of the package needs to know
about it, so that adding a layer is one class:

- ``input_kind``: "vector" (d,), "image" (C, H, W) or "any";
- ``kernel_kind``: "exact" (closed form), "quadrature" (numerical, see ``Elementwise``) or
  "monte_carlo" (no kernel: only ``arch.kernel(..., method="monte_carlo")`` covers it);
- ``positions``: "local" (a same-position covariance stays one: convolutions, nonlinearities),
  "pool" (mixes positions: the kernel then needs all position pairs) or "flatten";
- ``spec_name`` (and ``spec_aliases``), ``spec`` and ``from_spec``: its entry in the exchange
  format (``arch.spec``);
- ``linear``: a fixed linear map, which keeps a Gaussian (and independent) signal one;
- ``cost``: floating-point operations and pair-tensor traffic per kernel entry (``Cost``);
- ``fusable``: whether the fused Triton path (``arch.fused``) covers it, as "affine" or
  "activation" of a fused pair;
- ``readout``: the network's last such layer produces its outputs (its width becomes the
  number of outputs).

Shapes are per sample, without the batch dimension: ``(d,)`` for vectors, ``(C, H, W)`` for
images. A layer's ``check`` and ``out_shape`` raise ``ValueError`` with a message that the
enclosing ``serial`` prefixes with the layer's position.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ntkbench.arch.kernel import Kernel, map_tensors, same_padding, window_sum

Shape = tuple[int, ...]
PARAMETERIZATIONS = ("ntk", "standard")
KernelKind = Literal["exact", "quadrature", "monte_carlo"]
# Layers by exchange-format name, filled by ``Layer.__init_subclass__`` from ``spec_name``.
SPEC_LAYERS: dict[str, type[Layer]] = {}


@dataclass(frozen=True)
class Cost:
    """Work of one kernel entry: floating-point operations besides transcendental maps, pair-tensor
    elements read or written (multiply by the item size for bytes), and map evaluations."""

    flops: float = 0.0
    elements: float = 0.0
    maps: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.elements + other.elements, self.maps + other.maps)


@dataclass(frozen=True)
class Node:
    """What flows between layers when an architecture is traced for one per-sample input shape.

    ``gaussian``: the signal is jointly Gaussian in the infinite-width limit (an affine layer's
    output, a sum of such, or a fixed linear map of one). ``fresh``: it ends in an affine layer
    whose weights no other branch shares, so it is independent of every other branch.
    ``no_kernel``: why the exact kernel does not exist from here on (None: it does).
    ``quadrature``: a layer on the way computes its kernel numerically.
    """

    shape: Shape
    gaussian: bool = False
    fresh: bool = False
    no_kernel: str | None = None
    quadrature: bool = False


class Layer(ABC):
    """A layer maps a per-sample shape, builds its finite module, and updates a kernel."""

    input_kind: ClassVar[Literal["vector", "image", "any"]] = "any"
    kernel_kind: ClassVar[KernelKind] = "exact"
    positions: ClassVar[Literal["local", "pool", "flatten"]] = "local"
    spec_name: ClassVar[str | None] = None
    spec_aliases: ClassVar[tuple[str, ...]] = ()
    linear: ClassVar[bool] = False
    fusable: ClassVar[Literal["affine", "activation"] | None] = None
    readout: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("spec_name"):
            for name in (cls.spec_name, *cls.spec_aliases):
                SPEC_LAYERS[name] = cls

    def check(self) -> None:
        """Raise ValueError for invalid hyperparameters; most layers have none."""

    def out_shape(self, shape: Shape) -> Shape:
        if self.input_kind == "vector" and len(shape) != 1:
            raise ValueError(f"{type(self).__name__} expects a vector input (d,), got shape {shape}; "
                             "add Flatten() or GlobalAvgPool() before it")
        if self.input_kind == "image" and len(shape) != 3:
            raise ValueError(f"{type(self).__name__} expects an image input (C, H, W), got shape {shape}")
        return shape

    def trace(self, node: Node) -> Node:
        """The node after this layer (see ``Node``): shape, Gaussianity and kernel availability."""
        no_kernel = node.no_kernel
        if no_kernel is None and self.kernel_kind == "monte_carlo":
            no_kernel = f"{self} has no closed-form kernel"
        return Node(self.out_shape(node.shape), node.gaussian and self.linear, node.fresh and self.linear, no_kernel,
                    node.quadrature or self.kernel_kind == "quadrature")

    def spec(self) -> list:
        """This layer's exchange-format entry: its name, then its fields in order."""
        if self.spec_name is None:
            raise ValueError(f"{self} has no entry in the exchange format (arch.spec)")
        return [self.spec_name, *(getattr(self, f.name) for f in fields(self))]  # type: ignore[arg-type]

    @classmethod
    def from_spec(cls, entry: list, width: int) -> Layer:
        """The layer of an exchange-format entry; layers with a width get ``width``."""
        return cls(*entry[1:])

    def with_width(self, width: int) -> Layer:
        """The same layer with every hidden width (Dense units, Conv channels) set to ``width``."""
        return self

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        """The work per kernel entry, given pair-tensor elements per entry before and after the
        layer. The default is a linear map that reads nngp and ntk once and writes them once."""
        return Cost(2.0 * elements_in, 2.0 * (elements_in + elements_out))

    def traced_cost(self, node: Node | tuple[Node, ...], elements: Callable[[Shape], int]) -> Cost:
        """The cost from a traced ``node``, with ``elements(shape)`` pair-tensor elements per entry
        for a shape; a fan-out or fan-in only copies or adds pair tensors."""
        out = self.trace(node)
        if isinstance(node, tuple) or isinstance(out, tuple):
            ins = node if isinstance(node, tuple) else (node,)
            return Cost(0.0, 2.0 * sum(elements(n.shape) for n in ins))
        return self.cost(elements(node.shape), elements(out.shape))

    @abstractmethod
    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        """The finite layer for inputs of per-sample ``shape``; ``width`` overrides a Dense's."""

    def kernel(self, k: Kernel) -> Kernel:
        """The infinite-width kernel after this layer."""
        raise ValueError(f"{self} has no closed-form kernel; pass method='monte_carlo' to arch.kernel "
                         "(or kernel_method=monte_carlo to the ntk and nngp methods)")


def check_std(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class _Affine(nn.Module):
    """y = w_scale · W x + b_scale · b, shared by Dense and Conv.

    NTK parameterization: W, b ~ N(0, 1), w_scale = w_std/√fan_in, b_scale = b_std.
    Standard parameterization: W ~ N(0, w_std²/fan_in), b ~ N(0, b_std²), both scales 1.
    """

    def __init__(self, weight_shape: Shape, fan_in: int, w_std: float, b_std: float | None,
                 parameterization: str, generator: torch.Generator | None) -> None:
        super().__init__()
        ntk = parameterization == "ntk"
        self.w_scale = w_std / math.sqrt(fan_in) if ntk else 1.0
        self.weight = nn.Parameter(torch.empty(weight_shape).normal_(0.0, 1.0 if ntk else w_std / math.sqrt(fan_in), generator=generator))
        self.b_scale = (b_std if ntk else 1.0) if b_std is not None else 0.0
        self.bias = None
        if b_std is not None:
            self.bias = nn.Parameter(torch.empty(weight_shape[0]).normal_(0.0, 1.0 if ntk else b_std, generator=generator))

    def scaled(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = None if self.bias is None else self.bias * self.b_scale
        return self.weight * self.w_scale, bias


class DenseModule(_Affine):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.scaled())


class ConvModule(_Affine):
    """A k×k convolution with stride s and XLA's 'SAME' padding (``kernel.same_padding``):
    asymmetric where the total is odd, so it is stax's network, not torch's ``padding=k//2``."""

    def __init__(self, weight_shape: Shape, fan_in: int, w_std: float, b_std: float | None, parameterization: str,
                 generator: torch.Generator | None, stride: int, padding: tuple[int, int, int, int]) -> None:
        super().__init__(weight_shape, fan_in, w_std, b_std, parameterization, generator)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        return F.conv2d(F.pad(x, self.padding), weight, bias, stride=self.stride)


class Affine(Layer):
    """A layer with fresh weights: z = w_std/√fan_in · W x + b_std · b over a ``window`` of
    positions. Its output is Gaussian and independent of other branches. Kernel:

    nngp' = w_std² · S(nngp) + b_std²,   ntk' = nngp' + w_std² · S(ntk),

    where S is the identity for Dense and the window mean for Conv."""

    w_std: float
    b_std: float | None

    def trace(self, node: Node) -> Node:
        return Node(self.out_shape(node.shape), True, True, node.no_kernel, node.quadrature)

    @property
    def window(self) -> int:
        return 1

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        # window sums of nngp and ntk (k−1 adds per axis each), their scaling, the affine update
        return Cost(elements_out * (4 * (self.window - 1) + 6), 4.0 * elements_out)


def affine_kernel(k: Kernel, w_std: float, b_std: float | None) -> Kernel:
    b2 = 0.0 if b_std is None else b_std**2
    w2 = w_std**2
    nngp = k.nngp * w2 + b2
    cov1 = k.cov1 * w2 + b2
    cov2 = cov1 if k.cov2 is k.cov1 else k.cov2 * w2 + b2
    return Kernel(nngp, torch.add(nngp, k.ntk, alpha=w2), cov1, cov2, k.spatial)


@dataclass(frozen=True)
class Dense(Affine):
    """Fully connected: z = w_std/√d · W x + b_std · b. Kernel (NTK parameterization):

    nngp' = w_std² · nngp + b_std²,   ntk' = nngp' + w_std² · ntk.
    """

    width: int
    w_std: float = 1.0
    b_std: float | None = None
    input_kind: ClassVar = "vector"
    spec_name: ClassVar = "dense"
    fusable: ClassVar = "affine"
    readout: ClassVar = True

    def check(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive int, got {self.width!r}")
        check_std("w_std", self.w_std)
        check_std("b_std", self.b_std)

    def out_shape(self, shape: Shape) -> Shape:
        super().out_shape(shape)
        return (self.width,)

    def spec(self) -> list:
        return ["dense", self.w_std, self.b_std]

    @classmethod
    def from_spec(cls, entry: list, width: int) -> Layer:
        return cls(width, *entry[1:])

    def with_width(self, width: int) -> Layer:
        return replace(self, width=width)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        out = width or self.width
        return DenseModule((out, shape[0]), shape[0], self.w_std, self.b_std, parameterization, generator)

    def kernel(self, k: Kernel) -> Kernel:
        return affine_kernel(k, self.w_std, self.b_std)


@dataclass(frozen=True)
class Conv(Affine):
    """k×k convolution with stride s and zero 'SAME' padding as XLA computes it (output side
    ⌈n/s⌉, padding split with the extra one after), fan_in = C·k². Kernel:

    nngp'(i, j) = w_std²/k² · Σ_δ nngp(s·i − p + δ, s·j − p + δ) + b_std²,
    ntk'(i, j)  = nngp'(i, j) + w_std²/k² · Σ_δ ntk(s·i − p + δ, s·j − p + δ)

    (Novak et al. 2019; Arora et al. 2019), zero outside the image.
    """

    channels: int
    kernel_size: int
    w_std: float = 1.0
    b_std: float | None = None
    stride: int = 1
    input_kind: ClassVar = "image"
    spec_name: ClassVar = "conv"

    def check(self) -> None:
        for key in ("channels", "kernel_size", "stride"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        check_std("w_std", self.w_std)
        check_std("b_std", self.b_std)

    @property
    def fusable(self) -> Literal["affine"] | None:  # type: ignore[override]
        """The fused pass sums symmetric stride-1 windows only."""
        return "affine" if self.stride == 1 and self.kernel_size % 2 == 1 else None

    @property
    def window(self) -> int:
        return self.kernel_size

    def out_shape(self, shape: Shape) -> Shape:
        super().out_shape(shape)
        return (self.channels, -(-shape[1] // self.stride), -(-shape[2] // self.stride))

    def spec(self) -> list:
        return ["conv", self.kernel_size, self.w_std, self.b_std] + ([self.stride] if self.stride != 1 else [])

    @classmethod
    def from_spec(cls, entry: list, width: int) -> Layer:
        return cls(width, *entry[1:])

    def with_width(self, width: int) -> Layer:
        return replace(self, channels=width)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        c, k = shape[0], self.kernel_size
        (top, bottom), (left, right) = (same_padding(n, k, self.stride) for n in shape[1:])
        return ConvModule((self.channels, c, k, k), c * k * k, self.w_std, self.b_std, parameterization, generator,
                          self.stride, (left, right, top, bottom))

    def kernel(self, k: Kernel) -> Kernel:
        scale, spatial, size, stride = 1.0 / self.kernel_size**2, k.spatial, self.kernel_size, self.stride
        summed = map_tensors(k, lambda t, _: window_sum(t, size, stride, spatial).mul_(scale))
        return affine_kernel(summed, self.w_std, self.b_std)


class Function(nn.Module):
    """A module applying a fixed function (an activation or a reshaping)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass(frozen=True)
class Dropout(Layer):
    """Zero each unit with probability ``rate`` in training and scale the rest by 1/(1 − rate);
    the identity in evaluation. Finite only."""

    rate: float = 0.5
    kernel_kind: ClassVar = "monte_carlo"

    def check(self) -> None:
        if not isinstance(self.rate, (int, float)) or not 0 <= self.rate < 1:
            raise ValueError(f"rate must be a number in [0, 1), got {self.rate!r}")

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.Dropout(self.rate)
