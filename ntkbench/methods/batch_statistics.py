"""Training and evaluation modes, and the rule for BatchNorm in a linearization.

``nn`` trains the network in training mode (BatchNorm normalizes with each minibatch's
statistics and updates its running ones, Dropout drops) and predicts in evaluation mode (running
statistics, no dropout). A linearization f(x; θ0) + J(x; θ0)(θ − θ0) (``taylor``, ``entk``, the
eNTK diagnostics of ``nn``) is a per-sample function, which batch statistics are not, so it is
taken of the network in evaluation mode, with one rule (``fix_batch_statistics``): BatchNorm's
statistics are those of the training inputs at the linearization point (θ0, or θ_k after
``at_epoch=k``), held fixed.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from ntkbench.arch import Network

Params = dict[str, Tensor]
BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
# Layers whose training mode is not a per-sample function: batch statistics, random masks.
MODE_DEPENDENT = (*BATCH_NORMS, torch.nn.Dropout)


class _Reached(Exception):
    """Stops a forward pass at the BatchNorm whose input statistics are being gathered."""


def fix_batch_statistics(net: Network, params: Params, x: Tensor, batch_size: int = 1024) -> Network:
    """The BatchNorm rule of every linearization: ``net`` in evaluation mode, each BatchNorm's
    running mean and variance set to the exact mean and biased variance of its input over the
    training inputs ``x`` at ``params``, given the BatchNorms before it. The network then
    computes on any input what training mode computes on ``x`` as one batch (without dropout),
    and the statistics stay fixed under θ ↦ f(x; θ): they are buffers, not parameters, and
    evaluation mode never updates them, so ``functional_call``, ``jvp`` and ``vmap(jacrev)`` see
    constants.

    When ``x`` fits in one chunk of ``batch_size`` this is one forward pass, each BatchNorm fixed
    as the pass reaches it. Otherwise each BatchNorm's input depends on the statistics of the
    ones before it, so they are gathered in order, one pass over ``x`` per BatchNorm, in chunks,
    stopped at that BatchNorm, with float64 sums merged across chunks (Chan, Golub & LeVeque
    1979): memory is one chunk's activations, never the whole set's. A network without
    BatchNorm is only put in evaluation mode. Returns ``net``.
    """
    net.eval()
    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    if norms and len(x) <= batch_size:
        def fix(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
            _set(module, _Moments().add(inputs[0]))

        handles = [norm.register_forward_pre_hook(fix) for norm in norms]
        try:
            with torch.no_grad():
                functional_call(net, params, (x,))
        finally:
            for handle in handles:
                handle.remove()
        return net
    for norm in norms:
        moments = _Moments()

        def gather(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
            moments.add(inputs[0])
            raise _Reached

        handle = norm.register_forward_pre_hook(gather)
        try:
            with torch.no_grad():
                for chunk in x.split(batch_size):
                    try:
                        functional_call(net, params, (chunk,))
                    except _Reached:
                        pass
        finally:
            handle.remove()
        _set(norm, moments)
    return net


class _Moments:
    """Per-channel count, mean and sum of squared deviations in float64, merged chunk by chunk."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, z: Tensor) -> _Moments:
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


def _set(norm: torch.nn.Module, moments: _Moments) -> None:
    norm.running_mean.copy_(moments.mean)
    norm.running_var.copy_(moments.m2 / moments.count)


def check_evaluation_mode(net: Network) -> None:
    """Raise unless ``net``'s BatchNorm and Dropout layers are in evaluation mode: a per-sample
    function (vmap over inputs, jvp through a minibatch) can use neither batch statistics nor
    random masks."""
    if any(m.training for m in net.modules() if isinstance(m, MODE_DEPENDENT)):
        raise ValueError("a linearization of a network with BatchNorm or Dropout needs it in evaluation mode with "
                         "fixed statistics (batch_statistics.fix_batch_statistics); it is in training mode")
