"""Normalization layers: ``LayerNorm`` (exact kernel on Gaussian inputs) and ``BatchNorm``
(finite only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ntkbench.arch.kernel import Kernel, variances
from ntkbench.arch.layers import Layer, Node, Shape

EPS = 1e-12  # stax.LayerNorm's default


class LayerNormModule(nn.Module):
    """(x − mean_c x) / √(var_c x + eps) over the channels (features for vectors), per position;
    no learned scale or shift, as stax's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + EPS).sqrt()


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Normalize over channels (or features) at each position. For Gaussian inputs of infinite
    width the channel mean tends to 0 and the channel variance to q(x_i), so

    nngp'(x_i, x'_j) = nngp(x_i, x'_j) / √(q(x_i) q(x'_j)),   ntk' likewise

    (stax.LayerNorm; Novak et al. 2020). The kernel exists only where the inputs are Gaussian:
    right after Dense or Conv, or a sum or fixed linear map of such. Elsewhere (after a
    nonlinearity) the channel mean does not vanish and stax refuses it, as ``kernel`` does."""

    spec_name: ClassVar = "layernorm"
    linear: ClassVar = True  # a deterministic rescaling in the limit: a Gaussian signal stays one

    def trace(self, node: Node) -> Node:
        out = super().trace(node)
        if not node.gaussian and out.no_kernel is None:
            out = Node(out.shape, False, False, "LayerNorm's kernel needs Gaussian inputs (right after Dense or Conv, "
                                                "or a sum of such), as stax's does; its input here is not",
                       out.quadrature)
        return out

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return LayerNormModule()

    def kernel(self, k: Kernel) -> Kernel:
        pair, self1, self2 = variances(k)
        scale = (pair[0] * pair[1]).rsqrt()
        cov1 = k.cov1 * (self1[0] * self1[1]).rsqrt()
        cov2 = cov1 if k.cov2 is k.cov1 else k.cov2 * (self2[0] * self2[1]).rsqrt()
        return Kernel(k.nngp * scale, k.ntk * scale, cov1, cov2, k.spatial)


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalization over the batch (and positions) per channel, with a learned scale and
    shift (γ = 1, β = 0 at initialization), as ``torch.nn.BatchNorm1d``/``2d``: batch statistics
    in training, running statistics in evaluation. Finite only: the output of one input depends
    on the others in its batch, so there is no closed-form kernel of a pair."""

    kernel_kind: ClassVar = "monte_carlo"

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Reached(Exception):
    """Stops a forward pass at the BatchNorm whose input statistics are being gathered."""


def fix_batch_statistics(norms: list[nn.Module], forward: Callable[[int, int], object], n: int, chunk: int) -> None:
    """Set each BatchNorm of ``norms`` (in the network's order) to the exact per-channel mean and
    biased variance of its input over n inputs, given the BatchNorms before it, as a training
    step normalizes one batch: in evaluation mode the network then computes on any input what
    training mode computes on those n as one batch. ``forward(start, stop)`` runs the network on
    inputs start:stop.

    When n fits in one ``chunk`` this is one forward pass, each BatchNorm set as the pass reaches
    it. Otherwise each BatchNorm's input depends on the statistics of the ones before it, so they
    are gathered in order, one chunked pass per BatchNorm stopped at it, with float64 sums merged
    across chunks (Chan, Golub & LeVeque 1979): memory stays one chunk's activations."""
    if not norms:
        return
    with torch.no_grad():
        if n <= chunk:
            handles = [norm.register_forward_pre_hook(lambda m, args: _set(m, _Moments().add(args[0]))) for norm in norms]
            try:
                forward(0, n)
            finally:
                for handle in handles:
                    handle.remove()
            return
        for norm in norms:
            moments = _Moments()

            def gather(module: nn.Module, args: tuple[torch.Tensor, ...], moments: _Moments = moments) -> None:
                moments.add(args[0])
                raise _Reached

            handle = norm.register_forward_pre_hook(gather)
            try:
                for start in range(0, n, chunk):
                    try:
                        forward(start, min(n, start + chunk))
                    except _Reached:
                        pass
            finally:
                handle.remove()
            _set(norm, moments)


class _Moments:
    """Per-channel count, mean and sum of squared deviations in float64, merged chunk by chunk."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, z: torch.Tensor) -> _Moments:
        z = z.double()
        dims = [0, *range(2, z.dim())]
        n = z.numel() // z.shape[1]
        mean = z.mean(dims)
        m2 = (z - mean.view(-1, *([1] * (z.dim() - 2)))).square().sum(dims)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total
        return self


def _set(norm: nn.Module, moments: _Moments) -> None:
    if moments.count < 2:
        raise ValueError("BatchNorm needs more than one value per channel in its batch (as in training); got "
                         f"{moments.count}: pass more training inputs")
    norm.running_mean.copy_(moments.mean)
    norm.running_var.copy_(moments.m2 / moments.count)
