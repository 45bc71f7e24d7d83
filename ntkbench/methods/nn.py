"""``nn``: the finite network, trained. The simplest method: copy this file to add one."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ntkbench.methods.base import RunContext, check_inputs, register_method
from ntkbench.methods.training import (
    Forward,
    Params,
    TrainOptions,
    batched,
    init_network,
    network_forward,
    train_network,
    training_diagnostics,
)


@dataclass
class ForwardPredictor:
    """Scores ``forward(params, x)``, computed in batches without gradients."""

    forward: Forward
    params: Params

    def predict(self, x: Tensor) -> Tensor:
        return batched(lambda chunk: self.forward(self.params, chunk), x)


@register_method("nn")
@dataclass
class NN(TrainOptions):
    """f(x; θ) of ``arch.module``, trained from θ0 with the shared loop (see ``TrainOptions``) in
    training mode, and predicting in evaluation mode: BatchNorm with the running statistics of
    training, Dropout off (``methods.batch_statistics``)."""

    def fit(self, x: Tensor, labels: Tensor, num_classes: int, ctx: RunContext | None = None) -> ForwardPredictor:
        check_inputs(x, labels, num_classes)
        net, params = init_network(self, x, num_classes)
        ctx = ctx or RunContext()
        diagnostics = training_diagnostics(net, params, x, labels, num_classes, self, ctx, track_kernel=True)
        params, buffers = train_network(net, params, x, labels, num_classes, self, ctx, on_epoch=diagnostics)
        return ForwardPredictor(network_forward(net, buffers), params)
