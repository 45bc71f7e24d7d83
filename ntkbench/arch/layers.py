"""Layers of the architecture language. Each layer holds, side by side, its finite
``torch.nn.Module`` and its infinite-width kernel update, as neural-tangents' stax layers hold
``(init_fn, apply_fn, kernel_fn)``.

Shapes are per sample, without the batch dimension: ``(d,)`` for vectors, ``(C, H, W)`` for
images. A layer's ``check`` and ``out_shape`` raise ``ValueError`` with a message that the
enclosing ``serial`` prefixes with the layer's position.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ntkbench.arch.kernel import (
    Kernel,
    apply_nonlinearity,
    avg_pool_full,
    box_sum,
    erf_map,
    full_to_diag,
    map_tensors,
    relu_map,
)

Shape = tuple[int, ...]
PARAMETERIZATIONS = ("ntk", "standard")


class Layer(ABC):
    """A layer maps a per-sample shape, builds its finite module, and updates a kernel."""

    def check(self) -> None:
        """Raise ValueError for invalid hyperparameters; most layers have none."""

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    @abstractmethod
    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        """The finite layer for inputs of per-sample ``shape``; ``width`` overrides a Dense's."""

    @abstractmethod
    def kernel(self, k: Kernel) -> Kernel:
        """The infinite-width kernel after this layer."""


def _check_std(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _need_vector(layer: Layer, shape: Shape) -> None:
    if len(shape) != 1:
        raise ValueError(
            f"{type(layer).__name__} expects a vector input (d,), got shape {shape}; "
            "add Flatten() or GlobalAvgPool() before it"
        )


def _need_image(layer: Layer, shape: Shape) -> None:
    if len(shape) != 3:
        raise ValueError(f"{type(layer).__name__} expects an image input (C, H, W), got shape {shape}")


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
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected: z = w_std/√d · W x + b_std · b. Kernel (NTK parameterization):

    nngp' = w_std² · nngp + b_std²,   ntk' = nngp' + w_std² · ntk.
    """

    width: int
    w_std: float = 1.0
    b_std: float | None = None

    def check(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive int, got {self.width!r}")
        _check_std("w_std", self.w_std)
        _check_std("b_std", self.b_std)

    def out_shape(self, shape: Shape) -> Shape:
        _need_vector(self, shape)
        return (self.width,)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        out = width or self.width
        return DenseModule((out, shape[0]), shape[0], self.w_std, self.b_std, parameterization, generator)

    def kernel(self, k: Kernel) -> Kernel:
        return _affine_kernel(k, self.w_std, self.b_std)


@dataclass(frozen=True)
class Conv(Layer):
    """k×k convolution, stride 1, zero 'SAME' padding, fan_in = C·k². Kernel:

    nngp'(i, j) = w_std²/k² · Σ_δ nngp(i+δ, j+δ) + b_std²,
    ntk'(i, j)  = nngp'(i, j) + w_std²/k² · Σ_δ ntk(i+δ, j+δ)   (Novak et al. 2019; Arora et al. 2019).
    """

    channels: int
    kernel_size: int
    w_std: float = 1.0
    b_std: float | None = None

    def check(self) -> None:
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"channels must be a positive int, got {self.channels!r}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int ('SAME' padding), got {self.kernel_size!r}")
        _check_std("w_std", self.w_std)
        _check_std("b_std", self.b_std)

    def out_shape(self, shape: Shape) -> Shape:
        _need_image(self, shape)
        return (self.channels, shape[1], shape[2])

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        c, k = shape[0], self.kernel_size
        return ConvModule((self.channels, c, k, k), c * k * k, self.w_std, self.b_std, parameterization, generator)

    def kernel(self, k: Kernel) -> Kernel:
        scale, spatial = 1.0 / self.kernel_size**2, k.spatial
        summed = map_tensors(k, lambda t, _: box_sum(t, self.kernel_size, spatial).mul_(scale))
        return _affine_kernel(summed, self.w_std, self.b_std)


def _affine_kernel(k: Kernel, w_std: float, b_std: float | None) -> Kernel:
    b2 = 0.0 if b_std is None else b_std**2
    w2 = w_std**2
    nngp = k.nngp * w2 + b2
    cov1 = k.cov1 * w2 + b2
    cov2 = cov1 if k.cov2 is k.cov1 else k.cov2 * w2 + b2
    return Kernel(nngp, torch.add(nngp, k.ntk, alpha=w2), cov1, cov2, k.spatial)


class _Elementwise(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass(frozen=True)
class ReLU(Layer):
    """φ(u) = max(u, 0); kernel by the arc-cosine expectations (see ``kernel.relu_map``)."""

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.ReLU()

    def kernel(self, k: Kernel) -> Kernel:
        return apply_nonlinearity(k, relu_map)


@dataclass(frozen=True)
class Erf(Layer):
    """φ(u) = erf(u); kernel by the arcsine expectations (see ``kernel.erf_map``)."""

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return _Elementwise(torch.erf)

    def kernel(self, k: Kernel) -> Kernel:
        return apply_nonlinearity(k, erf_map)


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average over non-overlapping window×window patches (stride = window, 'VALID')."""

    window: int

    def check(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")

    def out_shape(self, shape: Shape) -> Shape:
        _need_image(self, shape)
        if min(shape[1:]) < self.window:
            raise ValueError(f"AvgPool window {self.window} is larger than the {shape[1]}x{shape[2]} input")
        return (shape[0], shape[1] // self.window, shape[2] // self.window)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.AvgPool2d(self.window, stride=self.window)

    def kernel(self, k: Kernel) -> Kernel:
        return map_tensors(k, lambda t, n_batch: avg_pool_full(t, self.window, n_batch))


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over all positions: nngp'(x, x') = mean_{i,j} nngp(x_i, x'_j), likewise ntk."""

    def out_shape(self, shape: Shape) -> Shape:
        _need_image(self, shape)
        return (shape[0],)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return _Elementwise(lambda x: x.mean(dim=(2, 3)))

    def kernel(self, k: Kernel) -> Kernel:
        k = map_tensors(k, lambda t, _: t.mean(dim=(-4, -3, -2, -1)))
        return replace(k, spatial="none")


@dataclass(frozen=True)
class Flatten(Layer):
    """Concatenate channels and positions; the next Dense's fan-in is C·H·W, so the kernel is
    the mean of same-position covariances: nngp'(x, x') = mean_i nngp(x_i, x'_i)."""

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.Flatten()

    def kernel(self, k: Kernel) -> Kernel:
        if k.spatial == "none":
            return k
        if k.spatial == "full":
            k = replace(map_tensors(k, lambda t, _: full_to_diag(t)), spatial="diag")
        return replace(map_tensors(k, lambda t, _: t.mean(dim=(-2, -1))), spatial="none")
