"""The kernel methods' ``kernel_method``: ``auto`` resolves before the run to what the network
needs, the config and the leaderboard say which path ran, and a method that cannot cover the
network is refused before any run with one line."""

import pytest

from ntkbench import methods, runner, tasks
from ntkbench.methods.base import RunContext
from ntkbench.arch import BatchNorm, Dense, Flatten, ReLU, get, serial
from ntkbench.leaderboard.ranking import Result, aggregate

SMALL = {"task.n_train": 60, "task.n_test": 40, "arch.depth": 1, "arch.width": 16}


def test_auto_resolves_from_the_architecture_and_the_input_shape():
    relu, tanh = get("mlp", depth=1), get("mlp", depth=1, activation="tanh")
    assert methods.resolved(methods.get("ntk", relu), (64,)).kernel_method == "exact"
    assert methods.resolved(methods.get("nngp", tanh), (64,)).kernel_method == "quadrature"


def test_a_quadrature_run_records_its_path_and_its_error():
    (record,) = runner.run("digits", "ntk", "mlp", options={**SMALL, "arch.activation": "tanh"}, track=False, quiet=True)
    assert record.status == "FINISHED"
    assert record.config.method_options["kernel_method"] == "quadrature"
    assert record.params["kernel_method"] == "quadrature"
    # tanh at degree 25 against degree 50: small but not zero (Gauss–Hermite converges fast for
    # an analytic function, but not to the last bit at this degree)
    assert 0 < record.metrics["kernel_quadrature_error"] < 0.1
    (row,) = aggregate([Result(record, "local")])
    assert "ntk.kernel_method=quadrature" in row.label


def test_a_method_that_cannot_cover_the_network_fails_before_any_run():
    with pytest.raises(ValueError, match=r"ntk.kernel_method=exact cannot compute this architecture's kernel .*use "
                                         r"quadrature or auto"):
        runner.run("digits", "ntk,nngp", "mlp", options={**SMALL, "arch.activation": "tanh", "ntk.kernel_method": "exact"},
                   track=False, quiet=True)
    with pytest.raises(ValueError, match=r"nngp.kernel_method=quadrature: no layer of this architecture integrates"):
        runner.run("digits", "nngp", "mlp", options={**SMALL, "nngp.kernel_method": "quadrature"}, track=False,
                   quiet=True)
    with pytest.raises(ValueError, match=r"ntk.mc_samples must be"):
        methods.get("ntk", get("mlp"), mc_samples=1)


def test_a_network_without_a_closed_form_runs_by_monte_carlo_and_says_so():
    arch = serial(Flatten(), Dense(16), BatchNorm(), ReLU(), Dense(1))
    ntk = methods.resolved(methods.get("ntk", arch, mc_samples=4, mc_width=32), (64,))
    assert ntk.kernel_method == "monte_carlo"
    data = tasks.get("digits", n_train=60, n_test=40)
    (x, y), (xt, yt) = data.train, data.test
    ctx = RunContext()
    predictor = ntk.fit(x, y, data.num_classes, ctx)
    assert ctx.params["kernel_method"] == "monte_carlo" and 0 < ctx.metrics["kernel_mc_relative_se"] < 1
    accuracy = float((predictor.predict(xt).argmax(1) == yt).float().mean())
    assert accuracy > 0.5  # 10 classes: chance is 0.1; 4 networks of width 32 already separate digits
    (row,) = aggregate([Result(r, "local") for r in runner.run(
        "digits", "nngp", "mlp", options={**SMALL, "nngp.kernel_method": "monte_carlo", "nngp.mc_samples": 3,
                                          "nngp.mc_width": 16}, track=False, quiet=True)])
    assert "nngp.kernel_method=monte_carlo nngp.mc_samples=3 nngp.mc_width=16" in row.label
