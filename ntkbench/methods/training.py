"""One training loop for every method that trains parameters (``nn``, ``taylor``, and ``entk``
or ``taylor`` linearized after k epochs). Methods differ only in the forward function."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ntkbench.arch import Network, Serial
from ntkbench.methods.base import RunContext, centered_one_hot

Params = dict[str, Tensor]
Forward = Callable[[Params, Tensor], Tensor]


@dataclass
class TrainOptions:
    """Options of the shared loop. Defaults suit the NTK parameterization on small data."""

    arch: Serial
    seed: int = 0
    epochs: int = 40
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    loss: Literal["mse", "cross_entropy"] = "mse"
    parameterization: Literal["ntk", "standard"] = "ntk"
    flip: bool = False


def init_network(opts: TrainOptions, x: Tensor, num_classes: int) -> tuple[Network, Params]:
    """The finite network at θ0, seeded by ``opts.seed``, on the inputs' device."""
    generator = torch.Generator().manual_seed(opts.seed)
    net = opts.arch.module(tuple(x.shape[1:]), num_classes, opts.parameterization, generator).to(x.device)
    return net, {k: v.detach() for k, v in net.named_parameters()}


def train(forward: Forward, params: Params, x: Tensor, labels: Tensor, num_classes: int, opts: TrainOptions,
          ctx: RunContext, prefix: str = "") -> Params:
    """Minimize the loss of ``forward(params, x)`` by minibatch SGD (momentum) or Adam.

    MSE: ½ mean_i ‖f(x_i) − (e_{y_i} − 1/C)‖²; cross-entropy on the logits otherwise. The
    learning rate follows a cosine decay over all steps (or stays constant). The loss and
    accuracy of each epoch are logged as step metrics ``{prefix}train_loss``/``train_accuracy``.
    ``flip`` mirrors each image of a batch left-right with probability ½ (augmentation).
    Returns new parameter tensors; ``params`` are not modified.
    """
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    if opts.optimizer == "sgd":
        optim = torch.optim.SGD(params.values(), lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    else:
        optim = torch.optim.Adam(params.values(), lr=opts.lr, weight_decay=opts.weight_decay)
    n = len(x)
    steps_per_epoch = math.ceil(n / opts.batch_size)
    total = max(1, opts.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, (lambda t: 0.5 * (1 + math.cos(math.pi * t / total))) if opts.schedule == "cosine" else (lambda t: 1.0))
    targets = centered_one_hot(labels, num_classes, x.dtype)
    generator = torch.Generator().manual_seed(opts.seed + 1)
    for epoch in tqdm(range(opts.epochs), desc=prefix + "epochs", disable=not sys.stderr.isatty(), leave=False):
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.int64)
        for idx in torch.randperm(n, generator=generator).to(x.device).split(opts.batch_size):
            batch = x[idx]
            if opts.flip and batch.dim() == 4:
                mirror = (torch.rand(len(idx), generator=generator) < 0.5).to(x.device)
                batch = torch.where(mirror[:, None, None, None], batch.flip(-1), batch)
            out = forward(params, batch)
            if opts.loss == "mse":
                loss = 0.5 * (out - targets[idx]).square().sum(1).mean()
            else:
                loss = torch.nn.functional.cross_entropy(out, labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == labels[idx]).sum()
        ctx.log_metric(prefix + "train_loss", float(loss_sum) / n, step=epoch)
        ctx.log_metric(prefix + "train_accuracy", float(correct) / n, step=epoch)
    return {k: v.detach() for k, v in params.items()}


def pretrain(opts: TrainOptions, net: Network, params: Params, x: Tensor, labels: Tensor, num_classes: int,
             epochs: int, ctx: RunContext) -> Params:
    """θ_k: ``epochs`` epochs of ordinary training (their own schedule), logged as ``nn_*``."""
    if epochs == 0:
        return params
    return train(network_forward(net), params, x, labels, num_classes, replace(opts, epochs=epochs), ctx, "nn_")


def network_forward(net: Network) -> Forward:
    return lambda params, x: torch.func.functional_call(net, params, (x,))


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1024) -> Tensor:
    """``fn`` over row batches of ``x`` without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(chunk) for chunk in x.split(batch_size)])
