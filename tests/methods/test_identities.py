"""Exact identities between the linear models (Lee et al. 2019)."""

import torch

from ntkbench import methods
from ntkbench.arch import Dense, ReLU, serial
from ntkbench.methods.taylor import linearized_forward
from ntkbench.methods.training import init_network, jacobian, network_forward


def _data(n=8, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.arange(n) % c, torch.randn(6, d, generator=g)


ARCH = serial(Dense(16, 1.4, 0.1), ReLU(), Dense(16, 1.4, 0.1), ReLU(), Dense(1, 1.0, 0.1))


def test_taylor_at_step_zero_predicts_the_network_at_init():
    # f_lin(x; θ0) = f(x; θ0) + J(x; θ0)·0: the jvp returns the primal output itself, so the two
    # are equal bit for bit (the same forward pass computes both).
    x, y, x_test = _data()
    net, params0 = init_network(methods.get("nn", ARCH, seed=3), x, 3)
    taylor = linearized_forward(net, params0, centered=False)
    assert torch.equal(taylor(params0, x_test), network_forward(net)(params0, x_test))


def test_taylor_trained_to_convergence_equals_entk_regression():
    # Full-batch gradient descent (with momentum, whose updates stay in the span of Jᵀ) on MSE
    # from θ0 converges to the minimum-norm interpolant of the linear model: f0 + Θ̂(x,X)Θ̂⁻¹(Y−f0(X))
    # with the full NC×NC kernel. Here NC = 24 < P = 419, so Θ̂ is invertible; a relative ridge of
    # 1e-10 stands in for zero. After 1000 steps the train loss is ~1e-15 and we measure a gap of
    # 1.4e-6 of the prediction scale; the tolerance 1e-4 allows for float32 training (eps 6e-8)
    # amplified by the conditioning of Θ̂.
    x, y, x_test = _data()
    common = dict(epochs=1000, batch_size=len(x), lr=0.3, momentum=0.9, schedule="constant")
    taylor = methods.get("taylor", ARCH, seed=1, **common).fit(x, y, 3)
    entk = methods.get("entk", ARCH, seed=1, ridge=1e-10, kernel="full").fit(x, y, 3)
    expected = entk.predict(x_test)
    assert (taylor.predict(x_test) - expected).abs().max() < 1e-4 * expected.abs().max()


def test_sum_of_logits_kernel_equals_full_kernel_for_one_output():
    x, _, _ = _data()
    opts = methods.get("entk", ARCH, seed=0)
    net, params = init_network(opts, x, 1)
    # Exact by construction: for C = 1, Σ_c f_c / √C is f itself (one term, divided by 1.0), so
    # both pull the same cotangent 1 back through the same ops.
    torch.testing.assert_close(jacobian(net, params, x, "sum", 1), jacobian(net, params, x, "full", 1), rtol=0, atol=0)


def test_primal_and_dual_entk_solves_agree():
    # Jᵀ(JJᵀ + λI)⁻¹R = (JᵀJ + λI)⁻¹JᵀR. Both are float64 Cholesky solves of the same problem
    # (P = 419 features; 40 or 120 rows); we measure ~1e-12 relative and allow 1e-9.
    x, y, _ = _data(n=40)
    for kernel in ("sum", "full"):
        weights = []
        for solve in ("primal", "dual"):
            ctx = methods.RunContext()
            weights.append(methods.get("entk", ARCH, seed=2, ridge=1e-3, kernel=kernel, solve=solve).fit(x, y, 3, ctx).weights)
            assert ctx.params["entk_solve"] == solve
        assert (weights[0] - weights[1]).abs().max() < 1e-9 * weights[1].abs().max()


def test_entk_at_epoch_and_taylor_after_training_log_the_pretraining():
    x, y, _ = _data()
    ctx = methods.RunContext()
    methods.get("entk", ARCH, seed=0, at_epoch=2).fit(x, y, 3, ctx)
    assert "nn_train_loss" in ctx.metrics and ctx.params["entk_solve"] == "dual"
    ctx = methods.RunContext()
    methods.get("taylor", ARCH, seed=0, at_epoch=2, epochs=1, centered=True).fit(x, y, 3, ctx)
    assert {"nn_train_loss", "train_loss"} <= set(ctx.metrics)


def test_horizontal_flips_change_training_reproducibly():
    from ntkbench import tasks
    from ntkbench.arch import get

    task = tasks.get("digits", n_train=50, n_test=20)
    (x, y), (x_test, _) = task.train, task.test
    arch = get("cnn", depth=1, channels=4)

    def predict(flip):
        return methods.get("nn", arch, seed=0, epochs=2, flip=flip).fit(x, y, 10).predict(x_test)

    assert torch.equal(predict(True), predict(True))
    assert not torch.equal(predict(True), predict(False))
