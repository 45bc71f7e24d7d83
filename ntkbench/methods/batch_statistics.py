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
from ntkbench.arch.normalization import BATCH_NORMS
from ntkbench.arch.normalization import fix_batch_statistics as fix_statistics

Params = dict[str, Tensor]
# Layers whose training mode is not a per-sample function: batch statistics, random masks.
MODE_DEPENDENT = (*BATCH_NORMS, torch.nn.Dropout)


def fix_batch_statistics(net: Network, params: Params, x: Tensor, batch_size: int = 1024) -> Network:
    """The BatchNorm rule of every linearization: ``net`` in evaluation mode, each BatchNorm's
    running mean and variance set to the exact mean and biased variance of its input over the
    training inputs ``x`` at ``params``, given the BatchNorms before it
    (``arch.normalization.fix_batch_statistics``, in chunks of ``batch_size``). The network then
    computes on any input what training mode computes on ``x`` as one batch (without dropout),
    and the statistics stay fixed under θ ↦ f(x; θ): they are buffers, not parameters, and
    evaluation mode never updates them, so ``functional_call``, ``jvp`` and ``vmap(jacrev)`` see
    constants. A network without BatchNorm is only put in evaluation mode. Returns ``net``."""
    net.eval()
    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    fix_statistics(norms, lambda start, stop: functional_call(net, params, (x[start:stop],)), len(x), batch_size)
    return net


def check_evaluation_mode(net: Network) -> None:
    """Raise unless ``net``'s BatchNorm and Dropout layers are in evaluation mode: a per-sample
    function (vmap over inputs, jvp through a minibatch) can use neither batch statistics nor
    random masks."""
    if any(m.training for m in net.modules() if isinstance(m, MODE_DEPENDENT)):
        raise ValueError("a linearization of a network with BatchNorm or Dropout needs it in evaluation mode with "
                         "fixed statistics (batch_statistics.fix_batch_statistics); it is in training mode")
