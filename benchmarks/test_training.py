"""Training throughput: images/s of ``nn`` and ``taylor`` and of a minimal hand-written PyTorch
loop (the same nn.Module, SGD with momentum, the same batch size, data on the device) in one run.

Targets (issue 6, on the GPU): ``nn`` at least 0.9× the hand-written loop, a ``taylor`` epoch at
most 3× an ``nn`` epoch. ``extra_info`` of the later benchmarks holds ``ratio_nn_over_handwritten``
(throughput) and ``ratio_taylor_epoch_over_nn_epoch`` (time). Each timed round is one fit of
NTKBENCH_BENCH_TRAIN_EPOCHS epochs (default 2) on NTKBENCH_BENCH_TRAIN_N random images (default
1024) of NTKBENCH_BENCH_TRAIN_SHAPE (default 3x16x16), so per-fit setup is included and amortized
as in a real run; the figure is the minimum over NTKBENCH_BENCH_TRAIN_ROUNDS rounds (default 5).
NTKBENCH_BENCH_TRAIN_AMP (off or bf16), NTKBENCH_BENCH_TRAIN_COMPILE (0 or 1) and
NTKBENCH_BENCH_TRAIN_CHANNELS_LAST (0 or 1, default 1) set the options of nn and taylor.
On CUDA, ``nn-host-data`` trains the network on the GPU from images kept on the host (the
pinned, double-buffered ``Loader``), and the timed functions synchronize before they return.
"""

import os

import pytest
import torch

from ntkbench import methods
from ntkbench.arch import get
from ntkbench.methods.base import centered_one_hot
from ntkbench.methods.training import init_network, train_network

N = int(os.environ.get("NTKBENCH_BENCH_TRAIN_N", "1024"))
EPOCHS = int(os.environ.get("NTKBENCH_BENCH_TRAIN_EPOCHS", "2"))
ROUNDS = int(os.environ.get("NTKBENCH_BENCH_TRAIN_ROUNDS", "5"))  # the minimum over rounds resists a busy machine
SHAPE = tuple(int(s) for s in os.environ.get("NTKBENCH_BENCH_TRAIN_SHAPE", "3x16x16").split("x"))
OPTIONS = dict(
    amp=os.environ.get("NTKBENCH_BENCH_TRAIN_AMP", "off"),
    compile=os.environ.get("NTKBENCH_BENCH_TRAIN_COMPILE", "0") == "1",
    channels_last=os.environ.get("NTKBENCH_BENCH_TRAIN_CHANNELS_LAST", "1") == "1",
)
BATCH, LR, MOMENTUM, NUM_CLASSES = 128, 0.1, 0.9, 10
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ARCH = get("cnn", depth=2, channels=32)
SECONDS: dict[str, float] = {}


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, *SHAPE, generator=g).to(DEVICE), torch.randint(0, NUM_CLASSES, (N,), generator=g).to(DEVICE)


def handwritten(x: torch.Tensor, y: torch.Tensor) -> None:
    """The plain loop: module, SGD, MSE on centred one-hot targets, shuffled batches on device."""
    net = ARCH.module(SHAPE, NUM_CLASSES, "ntk", torch.Generator().manual_seed(0)).to(DEVICE)
    optim = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    targets = centered_one_hot(y, NUM_CLASSES)
    for _ in range(EPOCHS):
        for idx in torch.randperm(N, device=DEVICE).split(BATCH):
            loss = 0.5 * (net(x[idx]) - targets[idx]).square().sum(1).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    _sync()


def _method(name: str):
    return methods.get(name, ARCH, seed=0, epochs=EPOCHS, batch_size=BATCH, lr=LR, momentum=MOMENTUM,
                       diagnostics_every=0, **OPTIONS)


def fit(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    _method(name).fit(x, y, NUM_CLASSES, methods.RunContext())
    _sync()


def fit_from_host(x: torch.Tensor, y: torch.Tensor) -> None:
    """nn's loop with the network on the GPU and the images on the host."""
    opts = _method("nn")
    net, params = init_network(opts, x[:1].to(DEVICE), NUM_CLASSES)
    train_network(net, params, x.cpu(), y, NUM_CLASSES, opts, methods.RunContext())
    _sync()


CASES = ["handwritten", "nn", "taylor"] + (["nn-host-data"] if DEVICE.type == "cuda" else [])


@pytest.mark.parametrize("name", CASES)
def test_training_throughput(benchmark, name):
    x, y = _data()
    runs = {"handwritten": lambda: handwritten(x, y), "nn-host-data": lambda: fit_from_host(x, y)}
    run = runs.get(name, lambda: fit(name, x, y))
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    SECONDS[name] = benchmark.stats.stats.min
    benchmark.extra_info.update(images_per_s=EPOCHS * N / SECONDS[name], device=DEVICE.type, **OPTIONS)
    if name == "nn" and "handwritten" in SECONDS:
        benchmark.extra_info["ratio_nn_over_handwritten"] = SECONDS["handwritten"] / SECONDS["nn"]
    if name == "taylor" and "nn" in SECONDS:
        benchmark.extra_info["ratio_taylor_epoch_over_nn_epoch"] = SECONDS["taylor"] / SECONDS["nn"]
    print(f"\n{name}: {EPOCHS * N / SECONDS[name]:.4g} images/s on {DEVICE.type} ({OPTIONS})")
