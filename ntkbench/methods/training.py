"""One training loop for every method that trains parameters (``nn``, ``taylor``, and ``entk``
or ``taylor`` linearized after k epochs). Methods differ only in the forward function. Training and
evaluation modes, and BatchNorm in a linearization: see ``ntkbench.methods.batch_statistics``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import Tensor
from torch.func import functional_call, grad, jacrev, vmap

from ntkbench import progress, signals
from ntkbench.arch import Network, Serial
from ntkbench.methods.base import AT_EPOCH, NonFiniteError, RunContext, centered_one_hot
from ntkbench.methods.batch_statistics import BATCH_NORMS, check_evaluation_mode, fix_batch_statistics
from ntkbench.options import check_range

Params = dict[str, Tensor]
Forward = Callable[[Params, Tensor], Tensor]


@dataclass
class TrainOptions:
    """Options of the shared loop. Defaults suit the NTK parameterization on small data.

    Throughput: ``channels_last`` stores image batches and 4-D weights NHWC (only for 4-D
    inputs), which cuDNN's convolutions prefer; ``amp="bf16"`` runs the forward under
    ``torch.autocast`` in bfloat16 (the loss and the weights stay float32); ``compile`` wraps
    the forward in ``torch.compile`` (the default inductor backend, on CPU too).
    """

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
    diagnostics_every: int = 20
    probe_size: int = 32
    channels_last: bool = True
    amp: Literal["off", "bf16"] = "off"
    compile: bool = False

    def __post_init__(self) -> None:
        """Ranges; a value outside raises one line naming the option (checked before any run)."""
        name = type(self).__name__.lower()
        check_range(f"{name}.epochs", self.epochs, 1)
        check_range(f"{name}.batch_size", self.batch_size, 1)
        check_range(f"{name}.lr", self.lr, 0, low_open=True)
        check_range(f"{name}.momentum", self.momentum, 0, 1, high_open=True)
        check_range(f"{name}.weight_decay", self.weight_decay, 0)
        check_range(f"{name}.diagnostics_every", self.diagnostics_every, 0)
        check_range(f"{name}.probe_size", self.probe_size, 1)
        if AT_EPOCH in (f.name for f in fields(self)):
            check_range(f"{name}.{AT_EPOCH}", getattr(self, AT_EPOCH), 0)


def init_network(opts: TrainOptions, x: Tensor, num_classes: int) -> tuple[Network, Params]:
    """The finite network at θ0, seeded by ``opts.seed``, on the inputs' device."""
    generator = torch.Generator().manual_seed(opts.seed)
    net = opts.arch.module(tuple(x.shape[1:]), num_classes, opts.parameterization, generator).to(x.device)
    return net, {k: v.detach() for k, v in net.named_parameters()}


def layout(params: Params, x: Tensor, opts: TrainOptions) -> Params:
    """``params`` with 4-D tensors in channels_last when ``opts.channels_last`` and x holds images."""
    if not (opts.channels_last and x.dim() == 4):
        return params
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in params.items()}


def trainable(params: Params, x: Tensor, opts: TrainOptions) -> Params:
    """Fresh leaf copies of ``params`` (in the training layout) for the loop to update in place."""
    return {k: torch.nn.Parameter(v.detach().clone()) for k, v in layout(params, x, opts).items()}


def bind(net: Network, leaves: Params) -> Network:
    """A copy of ``net`` whose parameters are the tensors ``leaves`` themselves, so that
    ``model(x)`` reads them directly (no ``functional_call`` re-binding at every step)."""
    model = copy.deepcopy(net)
    for name, leaf in leaves.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner), attr, leaf)
    return model


class Loader:
    """Minibatches of the rows of ``x`` on ``device``, in a given order.

    Data already on ``device`` is indexed there. Host data for a CUDA device is gathered on the
    host into one of two pinned staging buffers (``index_select(..., out=)``) and copied with
    ``non_blocking=True``, so the copy of one batch overlaps the computation of the previous one;
    each buffer's CUDA event keeps it from being refilled while its copy is still in flight. Any
    other combination copies the indexed rows with ``.to(device)``.
    """

    def __init__(self, x: Tensor, device: torch.device, batch_size: int) -> None:
        self.x, self.device, self.batch_size = x, device, batch_size
        self.pinned = x.device.type == "cpu" and device.type == "cuda"
        if self.pinned:
            self.buffers = [torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]

    def __call__(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """``(idx, x[idx])`` for the consecutive batches of the host permutation ``order``:
        ``idx`` on ``device`` (to index labels and targets there), the rows gathered where x
        lives (on the host for pinned loading) and delivered on ``device``."""
        on_device = order.to(self.device)
        source = on_device if self.x.device == self.device else order.to(self.x.device)
        for step, (idx, rows) in enumerate(zip(on_device.split(self.batch_size), source.split(self.batch_size))):
            if not self.pinned:
                yield idx, self.x[rows].to(self.device)
                continue
            slot = step % 2
            self.events[slot].synchronize()  # the copy issued two batches ago; long done unless the GPU lags
            staged = torch.index_select(self.x, 0, rows, out=self.buffers[slot][: len(rows)])
            batch = staged.to(self.device, non_blocking=True)
            self.events[slot].record()
            yield idx, batch


def train(model: Callable[[Tensor], Tensor], params: Params, x: Tensor, labels: Tensor, num_classes: int,
          opts: TrainOptions, ctx: RunContext, prefix: str = "",
          on_epoch: Callable[[int, Params], None] | None = None) -> Params:
    """Minimize the loss of ``model(x)`` over the leaf tensors ``params`` it reads, by
    minibatch SGD (momentum) or Adam, on the parameters' device.

    MSE: ½ mean_i ‖f(x_i) − (e_{y_i} − 1/C)‖²; cross-entropy on the logits otherwise. The
    learning rate follows a cosine decay over all steps (or stays constant). The loss and
    accuracy of each epoch are logged as step metrics ``{prefix}train_loss``/``train_accuracy``.
    ``flip`` mirrors each image of a batch left-right with probability ½ (augmentation).
    ``on_epoch(epoch, params)`` runs after each epoch (diagnostics). Returns the trained
    parameters, detached and contiguous.

    The inner loop never waits for the device: the shuffle and the flips are drawn once per
    epoch on the host and copied over, batches come from ``Loader``, and the loss and accuracy
    are summed on the device and read once per epoch.
    """
    device = next(iter(params.values())).device
    if opts.optimizer == "sgd":
        optim = torch.optim.SGD(params.values(), lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    else:
        optim = torch.optim.Adam(params.values(), lr=opts.lr, weight_decay=opts.weight_decay)
    n = len(x)
    steps_per_epoch = math.ceil(n / opts.batch_size)
    total = max(1, opts.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, (lambda t: 0.5 * (1 + math.cos(math.pi * t / total))) if opts.schedule == "cosine" else (lambda t: 1.0))
    labels = labels.to(device)
    targets = centered_one_hot(labels, num_classes, x.dtype)
    loader = Loader(x, device, opts.batch_size)
    forward = torch.compile(model) if opts.compile else model
    images = x.dim() == 4
    memory_format = torch.channels_last if opts.channels_last and images else torch.contiguous_format
    generator = torch.Generator().manual_seed(opts.seed + 1)
    for epoch in progress.steps(range(opts.epochs), prefix + "epochs"):
        order = torch.randperm(n, generator=generator)
        mirror = (torch.rand(n, generator=generator) < 0.5).to(device) if opts.flip and images else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for idx, batch in loader(order):
            if mirror is not None:
                batch = torch.where(mirror[idx][:, None, None, None], batch.flip(-1), batch)
            batch = batch.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.amp == "bf16"):
                out = forward(batch)
            out = out.to(targets.dtype)
            if opts.loss == "mse":
                loss = 0.5 * (out - targets[idx]).square().sum(1).mean()
            else:
                loss = torch.nn.functional.cross_entropy(out, labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            signals.check()
            loss_sum.add_(loss.detach(), alpha=len(idx))
            correct += (out.detach().argmax(1) == labels[idx]).sum()
        epoch_loss = float(loss_sum) / n
        ctx.log_metric(prefix + "train_loss", epoch_loss, step=epoch)
        ctx.log_metric(prefix + "train_accuracy", float(correct) / n, step=epoch)
        if not math.isfinite(epoch_loss):
            raise NonFiniteError(f"{prefix}train_loss is {epoch_loss} at epoch {epoch}: training diverged "
                                 f"(lr {opts.lr}); expected a finite loss, try a smaller lr")
        if on_epoch:
            with torch.no_grad():
                on_epoch(epoch, {k: v.detach() for k, v in params.items()})
    return {k: v.detach().contiguous() for k, v in params.items()}


def train_network(net: Network, params: Params, x: Tensor, labels: Tensor, num_classes: int, opts: TrainOptions,
                  ctx: RunContext, prefix: str = "",
                  on_epoch: Callable[[int, Params], None] | None = None) -> tuple[Params, Params]:
    """``train`` of the network itself from ``params``: a copy of the module bound to fresh
    leaves, in training mode (minibatch statistics; running statistics start at mean 0,
    variance 1 whatever ``net`` holds, and are updated with BatchNorm's momentum). Returns the
    trained parameters and buffers (the running statistics, for evaluation mode)."""
    leaves = trainable(params, x, opts)
    model = bind(net, leaves).train()
    for norm in (m for m in model.modules() if isinstance(m, BATCH_NORMS)):
        norm.reset_running_stats()
    params = train(model, leaves, x, labels, num_classes, opts, ctx, prefix, on_epoch)
    return params, {k: v.detach().clone() for k, v in model.named_buffers()}


def pretrain(opts: TrainOptions, net: Network, params: Params, x: Tensor, labels: Tensor, num_classes: int,
             epochs: int, ctx: RunContext) -> Params:
    """θ_k: ``epochs`` epochs of ordinary training (their own schedule), logged as ``nn_*``.
    The running statistics of that training are dropped: a linearization fixes its own
    (``fix_batch_statistics``)."""
    if epochs == 0:
        return params
    return train_network(net, params, x, labels, num_classes, replace(opts, epochs=epochs), ctx, "nn_")[0]


def network_forward(net: Network, buffers: Params | None = None) -> Forward:
    """θ, x ↦ f(x; θ) of ``net`` in evaluation mode, with ``buffers`` (BatchNorm's running
    statistics from ``train_network``) in place of the module's own when given."""
    net.eval()
    state = buffers or {}
    return lambda params, x: torch.func.functional_call(net, {**params, **state}, (x,))


def per_input_output(net: Network, kernel: str, num_classes: int) -> Callable[[Params, Tensor], Tensor]:
    """θ, x ↦ the network's output on one input x: Σ_c f_c(x; θ)/√C for ``kernel="sum"`` (its
    gradient is the sum-of-logits feature row), all C outputs for ``kernel="full"``. ``net``
    must be in evaluation mode where it has BatchNorm (``fix_batch_statistics``)."""
    check_evaluation_mode(net)

    def f(p: Params, xi: Tensor) -> Tensor:
        out = functional_call(net, p, (xi[None],))[0]
        return out.sum() / math.sqrt(num_classes) if kernel == "sum" else out

    return f


# Rows of J computed at once are capped so one batch of J stays near 256 MiB.
JACOBIAN_BATCH_BYTES = 1 << 28


def jacobian(net: Network, params: Params, x: Tensor, kernel: str, num_classes: int,
             batch_size: int | None = None) -> Tensor:
    """Per-sample Jacobians at ``params`` as feature rows, via ``vmap(jacrev)`` in batches of
    ``batch_size`` inputs (by default as many as keep one batch of J near 256 MiB).

    ``kernel="sum"``: one row per input, ∂(Σ_c f_c)/∂θ / √C, so J Jᵀ = (1/C) Σ_{c,c'} J_c J_c'ᵀ,
    the "sum of logits" kernel; at infinite width the cross terms vanish and it equals the NTK.
    ``kernel="full"``: C rows per input (input-major), J Jᵀ is the NC×NC multi-output kernel.
    """
    f = per_input_output(net, kernel, num_classes)
    n_params = sum(v.numel() for v in params.values())
    rows_per_input = 1 if kernel == "sum" else num_classes
    batch = batch_size or max(1, JACOBIAN_BATCH_BYTES // (n_params * rows_per_input * x.element_size()))
    per_sample = vmap(jacrev(f), in_dims=(None, 0))
    blocks = []
    for chunk in x.split(batch):
        jac = per_sample(params, chunk)
        blocks.append(torch.cat([v.reshape(len(chunk) * rows_per_input, -1) for v in jac.values()], dim=1))
    return torch.cat(blocks)


def training_diagnostics(net: Network, params0: Params, x: Tensor, labels: Tensor, num_classes: int,
                         opts: TrainOptions, ctx: RunContext, track_kernel: bool) -> Callable[[int, Params], None] | None:
    """Per-epoch measurements every ``opts.diagnostics_every`` epochs (0: off), as step metrics:

    - ``weight_distance``: ‖θ_t − θ_0‖ / ‖θ_0‖;
    - with ``track_kernel``, on the first ``probe_size`` training inputs, the eNTK's relative
      change ``kernel_distance`` = ‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F (Fort et al. 2020) and its centred
      alignment ``kernel_alignment_t`` with the probe's targets (Cortes et al. 2012).
    Θ is the sum-of-logits eNTK (see ``jacobian``) of the network in evaluation mode, with
    BatchNorm's statistics those of the training inputs at θ_t (``fix_batch_statistics``, on a
    copy of ``net``: training never sees them), Σ_p J_p J_pᵀ over the parameter tensors
    (no concatenated J), in the network's dtype (float32: relative error ~1e-6, far below the
    distances of interest) and returned in float64. A 32-input probe every 20 epochs costs
    about 6% of ``make bench``'s ``nn`` run on digits (median of 6), less on larger data
    (``benchmarks/test_diagnostics_overhead.py``).
    """
    if opts.diagnostics_every <= 0:
        return None
    from ntkbench.diagnostics import centered_alignment

    norm0 = math.sqrt(sum(float(v.square().sum()) for v in params0.values()))
    probe, targets = x[: opts.probe_size], centered_one_hot(labels[: opts.probe_size], num_classes, torch.float64)

    ntk0 = None
    if track_kernel:
        net = fix_batch_statistics(copy.deepcopy(net), params0, x)
        per_sample = vmap(grad(per_input_output(net, "sum", num_classes)), in_dims=(None, 0))
        batch_norm = any(isinstance(m, BATCH_NORMS) for m in net.modules())

        def ntk(params: Params) -> Tensor:
            if batch_norm:
                fix_batch_statistics(net, params, x)
            return sum(j.flatten(1) @ j.flatten(1).T for j in per_sample(params, probe).values()).double()

        ntk0 = ntk(params0)

    def on_epoch(epoch: int, params: Params) -> None:
        if (epoch + 1) % opts.diagnostics_every and epoch + 1 != opts.epochs:
            return
        moved = math.sqrt(sum(float((v - params0[k]).square().sum()) for k, v in params.items()))
        ctx.log_metric("weight_distance", moved / norm0, step=epoch)
        if track_kernel:
            ntk_t = ntk(params)
            ctx.log_metric("kernel_distance", float((ntk_t - ntk0).norm() / ntk0.norm()), step=epoch)
            ctx.log_metric("kernel_alignment_t", centered_alignment(ntk_t, targets), step=epoch)

    return on_epoch


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1024) -> Tensor:
    """``fn`` over row batches of ``x`` without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(chunk) for chunk in x.split(batch_size)])
