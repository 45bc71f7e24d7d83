"""Pooling and readouts: AvgPool and GlobalAvgPool (exact kernels over all position pairs),
Flatten (same-position covariances), and MaxPool (finite only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ntkbench.arch.kernel import Kernel, avg_pool_full, full_to_diag, map_tensors
from ntkbench.arch.layers import Cost, Function, Layer, Node, Shape


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average over non-overlapping window×window patches (stride = window, 'VALID')."""

    window: int
    input_kind: ClassVar = "image"
    positions: ClassVar = "pool"
    spec_name: ClassVar = "avgpool"
    linear: ClassVar = True

    def check(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")

    def out_shape(self, shape: Shape) -> Shape:
        super().out_shape(shape)
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

    input_kind: ClassVar = "image"
    positions: ClassVar = "pool"
    spec_name: ClassVar = "gap"
    linear: ClassVar = True

    def out_shape(self, shape: Shape) -> Shape:
        super().out_shape(shape)
        return (shape[0],)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return Function(lambda x: x.mean(dim=(2, 3)))

    def kernel(self, k: Kernel) -> Kernel:
        k = map_tensors(k, lambda t, _: t.mean(dim=(-4, -3, -2, -1)))
        return replace(k, spatial="none")


@dataclass(frozen=True)
class Flatten(Layer):
    """Concatenate channels and positions; the next Dense's fan-in is C·H·W, so the kernel is
    the mean of same-position covariances: nngp'(x, x') = mean_i nngp(x_i, x'_i)."""

    positions: ClassVar = "flatten"
    spec_name: ClassVar = "flatten"
    linear: ClassVar = True

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def trace(self, node: Node) -> Node:
        # The features of different positions have different covariances: not one Gaussian
        # signal with this kernel any more (an activation or LayerNorm may not follow, as in stax).
        return replace(super().trace(node), gaussian=False)

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        return Cost() if elements_in == 1 else super().cost(elements_in, elements_out)  # vectors: nothing to do

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.Flatten()

    def kernel(self, k: Kernel) -> Kernel:
        if k.spatial == "none":
            return k
        if k.spatial == "full":
            k = replace(map_tensors(k, lambda t, _: full_to_diag(t)), spatial="diag")
        return replace(map_tensors(k, lambda t, _: t.mean(dim=(-2, -1))), spatial="none")




@dataclass(frozen=True)
class MaxPool(Layer):
    """Maximum over window×window patches with stride ``stride`` (default ``window``), 'VALID'.
    Finite only: the maximum of correlated Gaussians has no closed-form kernel."""

    window: int
    stride: int | None = None
    input_kind: ClassVar = "image"
    kernel_kind: ClassVar = "monte_carlo"
    positions: ClassVar = "pool"

    def check(self) -> None:
        for key in ("window", "stride"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive int, got {value!r}")

    def out_shape(self, shape: Shape) -> Shape:
        super().out_shape(shape)
        if min(shape[1:]) < self.window:
            raise ValueError(f"MaxPool window {self.window} is larger than the {shape[1]}x{shape[2]} input")
        s = self.stride or self.window
        return (shape[0], (shape[1] - self.window) // s + 1, (shape[2] - self.window) // s + 1)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.MaxPool2d(self.window, stride=self.stride or self.window)
