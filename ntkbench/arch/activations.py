"""Elementwise nonlinearities. Each maps the kernel through the expectations over the layer's
Gaussian pre-activations (Jacot et al. 2018; Lee et al. 2019):

    nngp' = E[φ(u)φ(v)],   ntk' = ntk · E[φ'(u)φ'(v)],   (u, v) ~ N(0, [[q1, Σ12], [Σ12, q2]]),

in closed form where one exists (``kernel.relu_map``, ``kernel.erf_map``, ``arch.maps``), and by
Gauss–Hermite quadrature for any other function (``Elementwise``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ntkbench.arch.kernel import Kernel, apply_nonlinearity, erf_map, relu_map
from ntkbench.arch.layers import Cost, Function, Layer, Node, Shape
from ntkbench.arch.maps import abrelu_map, gelu_map, quadrature_map, sin_map

# A kernel map: (Σ12, q1, q2) -> (E[φ(u)φ(v)], E[φ'(u)φ'(v)]), as ``kernel.relu_map``.
MapFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# Floating-point operations of one map evaluation besides its transcendental functions (the
# variances, cosine, clamp, the two expectations and the ntk product of ``kernel.relu_map``).
MAP_FLOPS = 16
# Functions ``Elementwise`` knows by name, so that the layer has an exchange-format entry.
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "softplus": F.softplus, "sigmoid": torch.sigmoid, "silu": F.silu, "erf": torch.erf,
    "relu": torch.relu,
}
DEFAULT_DEG = 25


class Activation(Layer):
    """φ applied elementwise; subclasses give φ (``function``) and its kernel map (``map``).

    The map is an expectation over Gaussian pre-activations, so the kernel exists only where the
    input is Gaussian with the covariance the kernel carries: after Dense or Conv, or a sum,
    pooling or LayerNorm of such; not after another activation, a Flatten (its features have
    different covariances) or a channel concatenation, nor on raw inputs."""

    def trace(self, node: Node) -> Node:
        out = super().trace(node)
        if not node.gaussian and out.no_kernel is None:
            out = replace(out, no_kernel=f"{self}: an activation's kernel needs Gaussian pre-activations (right after "
                                         "Dense or Conv, or a sum or pooling of such); its input here is not")
        return out

    @abstractmethod
    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """φ, elementwise on tensors."""

    @abstractmethod
    def map(self) -> MapFn:
        """The kernel map (Σ12, q1, q2) -> (E[φ(u)φ(v)], E[φ'(u)φ'(v)])."""

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return Function(self.function())

    def kernel(self, k: Kernel) -> Kernel:
        return apply_nonlinearity(k, self.map())

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        return Cost(MAP_FLOPS * elements_in, 4.0 * elements_in, float(elements_in))


@dataclass(frozen=True)
class ReLU(Activation):
    """φ(u) = max(u, 0); kernel by the arc-cosine expectations (see ``kernel.relu_map``)."""

    spec_name: ClassVar = "relu"
    fusable: ClassVar = "activation"

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.relu

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.ReLU()

    def map(self) -> MapFn:
        return relu_map


@dataclass(frozen=True)
class Erf(Activation):
    """φ(u) = erf(u); kernel by the arcsine expectations (see ``kernel.erf_map``)."""

    spec_name: ClassVar = "erf"
    fusable: ClassVar = "activation"

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.erf

    def map(self) -> MapFn:
        return erf_map


@dataclass(frozen=True)
class Gelu(Activation):
    """φ(u) = u·Φ(u) with Φ the standard normal CDF (the exact, erf form of GELU; Hendrycks &
    Gimpel 2016); kernel in closed form (``maps.gelu_map``)."""

    spec_name: ClassVar = "gelu"

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return F.gelu

    def map(self) -> MapFn:
        return gelu_map


@dataclass(frozen=True)
class ABReLU(Activation):
    """φ(u) = a·min(u, 0) + b·max(u, 0); kernel from the arc-cosine kernel (``maps.abrelu_map``)."""

    a: float
    b: float
    spec_name: ClassVar = "abrelu"

    def check(self) -> None:
        for key in ("a", "b"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        a, b = self.a, self.b
        return lambda x: a * torch.clamp(x, max=0) + b * torch.clamp(x, min=0)

    def map(self) -> MapFn:
        return abrelu_map(self.a, self.b)


@dataclass(frozen=True)
class Abs(Activation):
    """φ(u) = |u|: the map of ``ABReLU(−1, 1)``."""

    spec_name: ClassVar = "abs"

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.abs

    def map(self) -> MapFn:
        return abrelu_map(-1.0, 1.0)


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """φ(u) = u for u > 0, α·u otherwise: the map of ``ABReLU(alpha, 1)``."""

    alpha: float = 0.01
    spec_name: ClassVar = "leaky_relu"

    def check(self) -> None:
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return partial(F.leaky_relu, negative_slope=self.alpha)

    def map(self) -> MapFn:
        return abrelu_map(self.alpha, 1.0)


@dataclass(frozen=True)
class Sin(Activation):
    """φ(u) = a·sin(b·u + c); kernel in closed form (``maps.sin_map``)."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    spec_name: ClassVar = "sin"

    def check(self) -> None:
        for key in ("a", "b", "c"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        a, b, c = self.a, self.b, self.c
        return lambda x: a * torch.sin(b * x + c)

    def map(self) -> MapFn:
        return sin_map(self.a, self.b, self.c)


@dataclass(frozen=True)
class Elementwise(Activation):
    """Any elementwise φ, given as a callable or a name in ``FUNCTIONS``: its NNGP map by 2-D
    Gauss–Hermite quadrature of degree ``deg`` and E[φ'φ'] with φ' from autograd, as
    neural-tangents' ``stax.ElementwiseNumerical`` (``maps.quadrature_map``). Exchange-format
    entries: ``["elementwise", name, deg]``, and ``["tanh"]`` for tanh at the default degree."""

    fn: Callable[[torch.Tensor], torch.Tensor] | str
    deg: int = DEFAULT_DEG
    kernel_kind: ClassVar = "quadrature"
    spec_name: ClassVar = "elementwise"
    spec_aliases: ClassVar = ("tanh",)

    def check(self) -> None:
        if isinstance(self.fn, str) and self.fn not in FUNCTIONS:
            raise ValueError(f"unknown function {self.fn!r}; choose one of {', '.join(FUNCTIONS)} or pass a callable")
        if not isinstance(self.fn, str) and not callable(self.fn):
            raise ValueError(f"fn must be a callable or a name, got {self.fn!r}")
        if not isinstance(self.deg, int) or isinstance(self.deg, bool) or self.deg < 2:
            raise ValueError(f"deg must be an int >= 2, got {self.deg!r}")

    @property
    def name(self) -> str | None:
        if isinstance(self.fn, str):
            return self.fn
        return next((name for name, fn in FUNCTIONS.items() if fn is self.fn), None)

    def __repr__(self) -> str:
        return f"Elementwise({self.name or self.fn!r}, deg={self.deg})"

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return FUNCTIONS[self.fn] if isinstance(self.fn, str) else self.fn

    def map(self) -> MapFn:
        return quadrature_map(self.function(), self.deg)

    def spec(self) -> list:
        if self.name is None:
            raise ValueError(f"{self!r} has no exchange-format entry: name its function, one of {', '.join(FUNCTIONS)}")
        if self.name == "tanh" and self.deg == DEFAULT_DEG:
            return ["tanh"]
        return ["elementwise", self.name, self.deg]

    @classmethod
    def from_spec(cls, entry: list, width: int) -> Layer:
        return cls("tanh") if entry[0] == "tanh" else cls(*entry[1:])

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        # deg² evaluations of φ and of φ' per element, each counted as one map
        return Cost(MAP_FLOPS * elements_in * self.deg**2, 4.0 * elements_in, 2.0 * elements_in * self.deg**2)


def Tanh(deg: int = DEFAULT_DEG) -> Elementwise:  # noqa: N802 (a layer constructor, named as the others)
    """φ = tanh by quadrature: ``Elementwise("tanh", deg)``."""
    return Elementwise("tanh", deg)
