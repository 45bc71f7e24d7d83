"""Per-epoch diagnostics of training: weight distance, eNTK change and alignment."""

from ntkbench import methods, tasks
from ntkbench.arch import get
from ntkbench.methods.training import init_network, training_diagnostics


def _fit(name, width, **options):
    task = tasks.get("iris", n_train=60)
    ctx = methods.RunContext()
    x, y = task.train
    methods.get(name, get("mlp", depth=2, width=width), seed=0, **options).fit(x, y, 3, ctx)
    return ctx


def test_nn_logs_kernel_distance_alignment_and_weight_distance_at_the_interval():
    steps = []
    ctx = methods.RunContext(lambda key, value, step: steps.append((key, step)))
    task = tasks.get("iris", n_train=60)
    methods.get("nn", get("mlp", depth=1, width=32), seed=0, epochs=7, diagnostics_every=3).fit(*task.train, 3, ctx)
    assert [s for k, s in steps if k == "kernel_distance"] == [2, 5, 6]  # every 3 epochs, and the last
    assert 0 < ctx.metrics["kernel_distance"] and 0 < ctx.metrics["weight_distance"]
    assert -1 <= ctx.metrics["kernel_alignment_t"] <= 1


def test_wider_networks_move_their_kernel_less():
    # In the NTK parameterization the tangent kernel's relative change during training shrinks
    # like 1/√width (Jacot et al. 2018; Lee et al. 2019): 16x wider must move it clearly less.
    narrow = _fit("nn", 32, epochs=10).metrics["kernel_distance"]
    wide = _fit("nn", 512, epochs=10).metrics["kernel_distance"]
    assert wide < narrow / 2


def test_taylor_tracks_weights_only_and_diagnostics_can_be_switched_off():
    ctx = _fit("taylor", 32, epochs=3)
    assert "weight_distance" in ctx.metrics and "kernel_distance" not in ctx.metrics
    ctx = _fit("nn", 32, epochs=3, diagnostics_every=0)
    assert "weight_distance" not in ctx.metrics


def test_kernel_and_weight_distance_are_zero_when_nothing_moves():
    """At θ_t = θ_0 the probe kernel is recomputed by the same code on the same inputs, bit for
    bit: distance 0 (a learning rate of 0, which would show this through a run, is refused)."""
    x, y = tasks.get("iris", n_train=60).train
    opts = methods.get("nn", get("mlp", depth=2, width=32), seed=0, epochs=2, diagnostics_every=1)
    net, params0 = init_network(opts, x, 3)
    ctx = methods.RunContext()
    on_epoch = training_diagnostics(net, params0, x, y, 3, opts, ctx, track_kernel=True)
    on_epoch(1, params0)
    assert ctx.metrics["kernel_distance"] == 0 and ctx.metrics["weight_distance"] == 0
