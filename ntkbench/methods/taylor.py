"""``taylor``: the network's first-order Taylor expansion, trained like ``nn``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ntkbench.methods.base import RunContext, check_inputs, register_method
from ntkbench.methods.batch_statistics import check_evaluation_mode, fix_batch_statistics
from ntkbench.methods.nn import ForwardPredictor
from ntkbench.methods.training import (
    Forward,
    Params,
    TrainOptions,
    init_network,
    layout,
    pretrain,
    train,
    trainable,
    training_diagnostics,
)
from ntkbench.arch import Network


def linearized_forward(net: Network, params0: Params, centered: bool) -> Forward:
    """f_lin(x; θ) = f(x; θ0) + J(x; θ0)(θ − θ0)   (Lee et al. 2019, "Wide neural networks of
    any depth evolve as linear models under gradient descent").

    J(θ − θ0) is one forward-mode product (``torch.func.jvp``), which also returns f(x; θ0); J is
    never materialized, so a step costs a small constant times an ``nn`` step. ``centered``
    drops f(x; θ0). ``net`` must be in evaluation mode, BatchNorm's statistics fixed
    (``batch_statistics.fix_batch_statistics``), so that f is a per-sample function.
    """
    check_evaluation_mode(net)

    def forward(params: Params, x: Tensor) -> Tensor:
        delta = {k: params[k] - params0[k] for k in params0}
        f0, jvp = torch.func.jvp(lambda p: torch.func.functional_call(net, p, (x,)), (params0,), (delta,))
        return jvp if centered else f0 + jvp

    return forward


@register_method("taylor")
@dataclass
class Taylor(TrainOptions):
    """The linearized network, trained with the same optimizer, loss and schedule as ``nn``.

    ``at_epoch=k`` first trains ``nn`` for k epochs and expands around θ_k (Fort et
    al. 2020, "Deep learning versus kernel learning"). The expansion is of the network in
    evaluation mode, BatchNorm's statistics those of the training inputs at θ0 (or θ_k), held
    fixed (``batch_statistics``).
    """

    linearizes: ClassVar[str] = "nn"

    at_epoch: int = 0
    centered: bool = False

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> ForwardPredictor:
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        net, params = init_network(self, x, num_classes)
        params0 = pretrain(self, net, params, x, labels, num_classes, self.at_epoch, ctx)
        fix_batch_statistics(net, params0, x)
        # The linear model's tangent kernel never changes; only the weights' distance is tracked.
        diagnostics = training_diagnostics(net, params0, x, labels, num_classes, self, ctx, track_kernel=False)
        leaves = trainable(params0, x, self)
        step = linearized_forward(net, layout(params0, x, self), self.centered)
        params = train(lambda batch: step(leaves, batch), leaves, x, labels, num_classes, self, ctx, on_epoch=diagnostics)
        return ForwardPredictor(linearized_forward(net, params0, self.centered), params)
