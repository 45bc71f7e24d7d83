"""BatchNorm in the trained and linearized methods (``methods.batch_statistics``): ``nn`` trains
with batch statistics and predicts with running ones; ``taylor`` and ``entk`` linearize the
network in evaluation mode with the statistics of the training inputs at θ0, held fixed."""

import copy

import pytest
import torch
from torch.func import functional_call

from ntkbench import methods, tasks
from ntkbench.arch import get
from ntkbench.methods.batch_statistics import fix_batch_statistics
from ntkbench.methods.empirical import Linearization
from ntkbench.methods.training import init_network, jacobian, network_forward, train_network

WRN_BN = get("wrn", depth=10, widen=1, norm="batchnorm")


def _images(n, seed=0, shape=(1, 8, 8)):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _network(x, num_classes=3, seed=0):
    net, params = init_network(methods.get("entk", WRN_BN, seed=seed), x.float(), num_classes)
    return net.double(), {k: v.double() for k, v in params.items()}


def _buffers(net):
    return {k: v.clone() for k, v in net.named_buffers()}


@pytest.mark.parametrize("batch_size", [7, 1024])
def test_fixed_statistics_are_the_training_batch_statistics(batch_size):
    # Evaluation mode with the fixed statistics computes what training mode computes on the
    # whole training set as one batch: in one pass (30 inputs in one chunk), or layer by layer
    # over chunks of 7 (uneven, merged). Both in float64: we see ~1e-15 and allow 1e-10.
    x = _images(30)
    net, params = _network(x)
    one_batch = functional_call(copy.deepcopy(net).train(), params, (x,))
    fix_batch_statistics(net, params, x, batch_size=batch_size)
    assert not net.training
    torch.testing.assert_close(functional_call(net, params, (x,)), one_batch, rtol=1e-10, atol=1e-12)
    # the first BatchNorm normalizes the stem conv's output: its biased variance, not torch's
    # unbiased running update
    first = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        stem = net[0](x)
    torch.testing.assert_close(first.running_mean, stem.mean(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(first.running_var, stem.var(dim=(0, 2, 3), unbiased=False), rtol=1e-10, atol=0)


def test_jacobians_and_linearized_products_leave_the_statistics_alone():
    x = _images(6)
    net, params = _network(x)
    fix_batch_statistics(net, params, x)
    before = _buffers(net)
    lin = Linearization(net, params, "sum", 3)
    lin.jacobian(x)
    lin.jvp(x, torch.randn(2, lin.n_params, dtype=torch.float64))
    lin.vjp(x, torch.randn(2, 6, 1, dtype=torch.float64))
    after = _buffers(net)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_per_sample_jacobian_of_a_network_in_training_mode_is_refused():
    x = _images(4)
    net, params = _network(x)
    with pytest.raises(ValueError, match="needs it in evaluation mode with fixed statistics"):
        jacobian(net.train(), params, x, "sum", 3)


def test_nn_trains_with_batch_statistics_and_predicts_with_running_ones():
    task = tasks.get("digits", n_train=60, n_test=20)
    (x, y), (x_test, _) = task.train, task.test
    opts = methods.get("nn", WRN_BN, seed=0, epochs=2, batch_size=20, lr=0.1, diagnostics_every=0)
    net, params = init_network(opts, x, 10)
    trained, buffers = train_network(net, params, x, y, 10, opts, methods.RunContext())
    counts = {k: int(v) for k, v in buffers.items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {6}  # one update per minibatch: training mode throughout
    assert all(not torch.equal(v, torch.zeros_like(v)) for k, v in buffers.items() if k.endswith("running_mean"))
    predict = network_forward(net, buffers)
    # evaluation mode: each input's score depends on that input only
    torch.testing.assert_close(predict(trained, x_test[:3]), predict(trained, x_test)[:3], rtol=1e-5, atol=1e-6)
    scores = methods.get("nn", WRN_BN, seed=0, epochs=2, batch_size=20, lr=0.1, diagnostics_every=0).fit(x, y, 10).predict(x_test)
    torch.testing.assert_close(scores, predict(trained, x_test))


TRAIN = {"epochs": 6, "batch_size": 25, "optimizer": "adam", "lr": 0.02}


@pytest.mark.parametrize("name, options", [("nn", TRAIN), ("taylor", TRAIN), ("entk", {"ridge": 1e-3})])
def test_trained_and_linearized_methods_run_on_wrn_with_batchnorm(name, options):
    # Digits (1×8×8), 150 training images: chance is 10 %; we see 79-90 % and ask for 50 %.
    task = tasks.get("digits", n_train=150, n_test=100)
    (x, y), (x_test, y_test) = task.train, task.test
    ctx = methods.RunContext()
    scores = methods.get(name, WRN_BN, seed=0, **options).fit(x, y, 10, ctx).predict(x_test)
    assert scores.shape == (100, 10) and torch.isfinite(scores).all()
    assert (scores.argmax(1) == y_test).float().mean() > 0.5
    if name == "nn":  # the last epoch's eNTK diagnostics, at θ_t with the statistics fixed at θ_t
        assert 0 < ctx.metrics["kernel_distance"] < float("inf")


def test_taylor_trained_to_convergence_equals_entk_regression_with_batchnorm():
    # As tests/methods/test_identities.py for the MLP: full-batch gradient descent on the
    # linearized WRN converges to the minimum-norm interpolant f0 + Θ̂(x,X)Θ̂⁻¹(Y − f0(X)), both
    # with BatchNorm's statistics fixed on the same 8 training inputs at the same θ0. Θ̂ is
    # 24×24 with eigenvalues in [0.8, 14] (P ≈ 10⁵); after 300 steps the train loss is ~1e-14
    # and we measure a gap of ~2e-6 of the prediction scale, allowing 1e-4 for float32 training.
    x, x_test = _images(8).float(), _images(6, seed=1).float()
    y = torch.arange(8) % 3
    taylor = methods.get("taylor", WRN_BN, seed=1, epochs=300, batch_size=8, lr=1.0, momentum=0.9,
                         schedule="constant", diagnostics_every=0).fit(x, y, 3)
    entk = methods.get("entk", WRN_BN, seed=1, ridge=1e-10, kernel="full").fit(x, y, 3)
    expected = entk.predict(x_test)
    assert (taylor.predict(x_test) - expected).abs().max() < 1e-4 * expected.abs().max()


@pytest.mark.parametrize("name", ["nn", "taylor", "entk"])
def test_dropout_is_off_in_prediction_and_in_linearizations(name):
    from ntkbench.arch import Dense, Dropout, ReLU, serial

    arch = serial(Dense(32, 1.4, 0.1), ReLU(), Dropout(0.5), Dense(1, 1.0, 0.1))
    x, y = torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3
    options = {"ridge": 1e-3} if name == "entk" else {"epochs": 3}
    predictor = methods.get(name, arch, seed=0, **options).fit(x, y, 3)
    # dropout on would change every score by O(1); batch sizes change only the rounding
    torch.testing.assert_close(predictor.predict(x[:7]), predictor.predict(x)[:7], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm, path", [("none", "exact"), ("batchnorm", "monte_carlo")])
def test_kernel_methods_on_wrn_take_the_exact_path_or_monte_carlo_automatically(norm, path):
    # Digits, 60 training images; 4 networks of width 16 for Monte Carlo. We see 82-90 %.
    data = tasks.get("digits", n_train=60, n_test=40)
    (x, y), (x_test, y_test) = data.train, data.test
    arch = get("wrn", depth=10, widen=1, norm=norm)
    for kind in ("ntk", "nngp"):
        method = methods.resolved(methods.get(kind, arch, mc_samples=4, mc_width=16), (1, 8, 8))
        ctx = methods.RunContext()
        scores = method.fit(x, y, 10, ctx).predict(x_test)
        assert method.kernel_method == ctx.params["kernel_method"] == path
        assert (scores.argmax(1) == y_test).float().mean() > 0.5
