"""``taylor``: the network's first-order Taylor expansion, trained like ``nn``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ntkbench.methods.base import RunContext, check_inputs, register_method
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
    drops f(x; θ0).
    """

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
    al. 2020, "Deep learning versus kernel learning").
    """

    linearizes: ClassVar[str] = "nn"

    at_epoch: int = 0
    centered: bool = False

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> ForwardPredictor:
        check_inputs(x, labels, num_classes)
        ctx = ctx or RunContext()
        net, params = init_network(self, x, num_classes)
        params0 = pretrain(self, net, params, x, labels, num_classes, self.at_epoch, ctx)
        # The linear model's tangent kernel never changes; only the weights' distance is tracked.
        diagnostics = training_diagnostics(net, params0, x, labels, num_classes, self, ctx, track_kernel=False)
        leaves = trainable(params0, x, self)
        step = linearized_forward(net, layout(params0, x, self), self.centered)
        params = train(lambda batch: step(leaves, batch), leaves, x, labels, num_classes, self, ctx, on_epoch=diagnostics)
        return ForwardPredictor(linearized_forward(net, params0, self.centered), params)
