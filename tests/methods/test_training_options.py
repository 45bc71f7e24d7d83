"""Throughput options of the shared training loop (channels_last, bf16 autocast; torch.compile
in test_training_compile.py) leave the optimization the same, and the batch loader gives the
rows it is asked for.

Each option is compared with eager float32 NCHW training on a tiny CNN, by the per-epoch train
loss of ``nn`` and ``taylor``; the tolerances are stated where they are used.
"""

import warnings

import pytest
import torch

from ntkbench import methods, tasks
from ntkbench.arch import get
from ntkbench.methods.training import Loader, trainable

TASK = tasks.get("digits", n_train=96, n_test=10)  # (1, 8, 8) images, 10 classes
ARCH = get("cnn", depth=1, channels=4)
EAGER = dict(channels_last=False, amp="off", compile=False)


def losses(name: str, **options) -> torch.Tensor:
    """The per-epoch train loss of ``name`` on TASK, eager float32 NCHW unless ``options`` say otherwise."""
    values = []
    ctx = methods.RunContext(lambda key, value, step: values.append(value) if key == "train_loss" else None)
    x, y = TASK.train
    settings = {**EAGER, **options}
    methods.get(name, ARCH, seed=0, epochs=4, batch_size=32, lr=0.2, diagnostics_every=0, **settings).fit(x, y, 10, ctx)
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture(scope="module")
def eager() -> dict[str, torch.Tensor]:
    return {name: losses(name) for name in ("nn", "taylor")}


@pytest.mark.parametrize("name", ["nn", "taylor"])
def test_channels_last_gives_the_eager_loss_trajectory(eager, name):
    # The same float32 convolutions in another memory layout: at most the kernels' summation
    # order differs (~1e-7 per step), compounded over 12 steps; we allow 1e-5 relative
    # (measured: identical on the CPU).
    torch.testing.assert_close(losses(name, channels_last=True), eager[name], rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["nn", "taylor"])
def test_bf16_autocast_follows_the_float32_loss_trajectory(eager, name):
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per operation); the
    # forward's errors average out over a batch but feed back through 12 steps of SGD. We allow
    # 3% relative per epoch (measured 0.3%), still far below the loss's own change between
    # epochs (-68%, -23%, ...).
    bf16 = losses(name, amp="bf16")
    torch.testing.assert_close(bf16, eager[name], rtol=3e-2, atol=0)
    assert not torch.equal(bf16, eager[name])  # autocast did run in bfloat16


def test_channels_last_applies_to_image_inputs_and_4d_weights_only():
    params = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4), "dense.weight": torch.randn(10, 4)}
    images, vectors = torch.zeros(2, 3, 8, 8), torch.zeros(2, 5)
    leaves = trainable(params, images, methods.get("nn", ARCH))
    assert leaves["conv.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not leaves["conv.weight"].is_contiguous()
    assert all(v.is_leaf and v.requires_grad for v in leaves.values())
    assert trainable(params, vectors, methods.get("nn", ARCH))["conv.weight"].is_contiguous()
    assert trainable(params, images, methods.get("nn", ARCH, channels_last=False))["conv.weight"].is_contiguous()


def test_loader_gives_the_rows_in_order_on_the_data_device():
    x = torch.arange(20.0).reshape(10, 2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    pairs = list(Loader(x, torch.device("cpu"), 4)(order))
    batches = [b for _, b in pairs]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), x[order])
    assert torch.equal(torch.cat([idx for idx, _ in pairs]), order)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned staging needs CUDA")
def test_pinned_loader_stages_host_rows_to_the_gpu():
    x = torch.randn(1000, 3, 8, 8)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    loader = Loader(x, torch.device("cuda"), 64)
    assert loader.pinned and loader.buffers[0].is_pinned()
    batches = [b for _, b in loader(order)]  # device tensors: refilling a staging buffer leaves them as they were
    assert all(b.is_cuda for b in batches)
    assert torch.equal(torch.cat(batches).cpu(), x[order])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronization is a CUDA notion")
@pytest.mark.parametrize("name", ["nn", "taylor"])
def test_training_syncs_with_the_host_per_epoch_not_per_step(name):
    # torch.cuda.set_sync_debug_mode("warn") warns at every synchronizing call. Per-epoch reads
    # (loss, accuracy, the shuffle's copy) are allowed; per-step ones would grow with the steps.
    x, y = (t.cuda() for t in TASK.train)

    def syncs(batch_size: int) -> int:
        model = methods.get(name, ARCH, seed=0, epochs=2, batch_size=batch_size, diagnostics_every=0, flip=True)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(x, y, 10)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(8) == syncs(48)  # 12 steps per epoch vs 2
