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

    Each BatchNorm's input depends on the statistics of the ones before it, so they are gathered
    in order, one pass over ``x`` per BatchNorm (in chunks of ``batch_size``, stopped at that
    BatchNorm), with float64 sums merged across chunks (Chan et al. 1979). Memory is one
    chunk's activations, never the whole set's. A network without BatchNorm is only put in
    evaluation mode. Returns ``net``.
    """
    net.eval()
    for norm in [m for m in net.modules() if isinstance(m, BATCH_NORMS)]:
        count, mean, m2 = 0, 0.0, 0.0

        def gather(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
            nonlocal count, mean, m2
            z = inputs[0].double()
            dims = [0, *range(2, z.dim())]
            n = z.numel() // z.shape[1]
            chunk_mean = z.mean(dims)
            chunk_m2 = (z - chunk_mean.view(-1, *([1] * (z.dim() - 2)))).square().sum(dims)
            delta, total = chunk_mean - mean, count + n
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta.square() * (count * n / total)
            count = total
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
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(m2 / count)
    return net


def check_evaluation_mode(net: Network) -> None:
    """Raise unless ``net``'s BatchNorm and Dropout layers are in evaluation mode: a per-sample
    function (vmap over inputs, jvp through a minibatch) can use neither batch statistics nor
    random masks."""
    if any(m.training for m in net.modules() if isinstance(m, MODE_DEPENDENT)):
        raise ValueError("a linearization of a network with BatchNorm or Dropout needs it in evaluation mode with "
                         "fixed statistics (batch_statistics.fix_batch_statistics); it is in training mode")
