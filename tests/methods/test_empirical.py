"""The three eNTK implementations against the Jacobian reference, the sketch's error law, the
entk predictions of each, and the cost model's choices (ntkbench.methods.empirical).

Tolerance for exact implementations (float64): contraction, NTK-vector products and the
reference ``training.jacobian`` J Jᵀ compute the same sums of P ≈ 10² to 10³ products in
different orders (a matmul over P, or a forward-mode chain through the layers). Rounding
error is then bounded by about P·ε·(depth) ≈ 10³ · 1.1e-16 · 3 ≈ 3e-13 relative; we allow 1e-10.
That still catches every real fault: a wrong row order, scale or block offset is O(1), and one
float32 step anywhere is ~1e-7.
"""

import math

import pytest
import torch

from ntkbench import methods
from ntkbench.arch import Conv, Dense, GlobalAvgPool, ReLU, serial
from ntkbench.methods import empirical
from ntkbench.methods.base import centered_one_hot
from ntkbench.methods.empirical import Linearization, Plan, Sizes
from ntkbench.methods.training import init_network, jacobian

MLP = serial(Dense(16, 1.4, 0.1), ReLU(), Dense(16, 1.4, 0.1), ReLU(), Dense(1, 1.0, 0.1))  # P = 419 at d=5, C=3
CNN = serial(Conv(3, 3, 1.4, 0.1), ReLU(), GlobalAvgPool(), Dense(1, 1.0, 0.1))  # P = 69 on 2x4x4 inputs


def _lin(arch, shape, kernel, num_classes=3, n=10, seed=0) -> tuple[Linearization, torch.Tensor]:
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    net, params = init_network(methods.get("entk", arch, seed=seed), x.float(), num_classes)
    net = net.double()
    return Linearization(net, {k: v.double() for k, v in params.items()}, kernel, num_classes), x


def _plan(implementation, block, hold=False, sketch_dim=None) -> Plan:
    return Plan(implementation, 0.0, 0.0, block, hold, True, sketch_dim)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


CASES = [(MLP, (5,)), (CNN, (2, 4, 4))]


@pytest.mark.parametrize("arch, shape", CASES, ids=["mlp", "cnn"])
@pytest.mark.parametrize("kernel", ["sum", "full"])
def test_contraction_and_ntvp_equal_the_jacobian_kernel(arch, shape, kernel):
    lin, x = _lin(arch, shape, kernel, n=7)
    j = jacobian(lin.net, lin.params, x, kernel, 3)
    reference = j @ j.T
    for block in (3, len(x)):  # 3 leaves a ragged last block of 1
        assert _rel(empirical.contraction_kernel(lin, x, _plan("contraction", block)), reference) < 1e-10
        assert _rel(empirical.ntvp_kernel(lin, x, _plan("ntvp", block)), reference) < 1e-10
    assert _rel(empirical.train_kernel(lin, x, _plan("contraction", 4, hold=True)), reference) < 1e-10


@pytest.mark.parametrize("kernel", ["sum", "full"])
def test_blocked_accumulation_equals_the_unblocked_products(kernel):
    # Every entry of a block J_i J_jᵀ is the same length-P dot product as in J Jᵀ; only the
    # BLAS kernel's internal order can differ, so the gap is a few float64 ulps (we allow 1e-13).
    lin, x = _lin(MLP, (5,), kernel)
    j = lin.jacobian(x)
    assert _rel(empirical.contraction_kernel(lin, x, _plan("contraction", 3)), j @ j.T) < 1e-13
    alpha = torch.randn(len(j), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert _rel(empirical.transpose_product(lin, x, alpha, 3), j.T @ alpha) < 1e-12  # vjps, not J
    gram, cross, trace = empirical.gram_blocks(lin, x, alpha, 3)
    assert _rel(gram, j.T @ j) < 1e-13 and _rel(cross, j.T @ alpha) < 1e-13
    assert math.isclose(trace, float(j.square().sum()), rel_tol=1e-13)


def test_sketch_is_j_times_the_seeded_projection_whatever_the_block():
    lin, x = _lin(MLP, (5,), "full")
    s = empirical.projection(lin, 0, 24, seed=7)
    expected = lin.jacobian(x) @ s.T / math.sqrt(24)
    for block in (1, 5, 24):
        assert _rel(empirical.sketch_features(lin, x, 24, seed=7, block=block), expected) < 1e-12
    assert not torch.equal(empirical.projection(lin, 0, 24, seed=8), s)


def test_sketch_error_shrinks_like_one_over_sqrt_m():
    # For Gaussian S, each entry of ΦΦᵀ is a mean of m i.i.d. products (J_a·s)(J_b·s), so
    # E‖ΦΦᵀ − Θ‖²_F = ((tr Θ)² + ‖Θ‖²_F)/m exactly: m·‖ΦΦᵀ − Θ‖²_F / ((tr Θ)² + ‖Θ‖²_F) has mean 1
    # at every m, which is the 1/√m law for the RMS error. Over 200 seeds its SD per seed is
    # 1.4, 0.9 and 0.7 at m = 8, 32, 128 (right-skewed), so the mean of 40 seeds has a standard
    # error of at most 0.22; we allow [0.4, 1.7], 3 standard errors.
    lin, x = _lin(MLP, (5,), "sum", n=12)
    j = lin.jacobian(x)
    ntk = j @ j.T
    expected = (torch.trace(ntk) ** 2 + ntk.square().sum()).item()
    for m in (8, 32, 128):
        phis = [empirical.sketch_features(lin, x, m, seed, m) for seed in range(40)]
        scaled = sum(m * (phi @ phi.T - ntk).square().sum().item() for phi in phis) / len(phis) / expected
        assert 0.4 < scaled < 1.7, (m, scaled)


def _fit(implementation, kernel="sum", x=None, y=None, **options):
    if x is None:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(30, 5, generator=g), torch.arange(30) % 3
    ctx = methods.RunContext()
    predictor = methods.get("entk", MLP, seed=0, ridge=0.1, kernel=kernel, implementation=implementation,
                            **options).fit(x, y, 3, ctx)
    return predictor, ctx


@pytest.mark.parametrize("kernel", ["sum", "full"])
def test_entk_predictions_agree_across_exact_implementations(kernel):
    # Same regression, kernels equal to ~1e-13 and ridge 0.1·tr/n (condition number <~ 10³): the
    # weights agree to ~1e-12; we allow 1e-9. Predictions are returned in float32.
    x_test = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    fits = {name: _fit(name, kernel) for name in ("contraction", "ntvp")}
    (contraction, ctx_c), (ntvp, ctx_n) = fits["contraction"], fits["ntvp"]
    assert ctx_c.params["entk_implementation"] == "contraction" and ctx_n.params["entk_implementation"] == "ntvp"
    assert _rel(ntvp.weights, contraction.weights) < 1e-9
    assert _rel(ntvp.predict(x_test), contraction.predict(x_test)) < 1e-6
    # A budget too small to hold J makes the contraction run in blocks, with the same weights.
    budget = {"sum": 120e3, "full": 400e3}[kernel]  # bytes: n_train stays 30, but J (100 or 300 KB) does not fit
    blocked, ctx_b = _fit("contraction", kernel, memory_budget_gb=budget / 2**30)
    assert ctx_b.metrics["n_train_used"] == 30
    assert ctx_b.params["entk_hold_jacobian"] is False and ctx_b.params["entk_block"] < 30
    assert _rel(blocked.weights, contraction.weights) < 1e-9


def test_sketched_entk_is_close_to_exact_within_the_perturbation_bound():
    # Exact: f = K*α with α = (K + λ)⁻¹r; sketched: f_s = K*_s α_s with α_s = (K_s + λ_s)⁻¹r.
    # Then f_s − f = ΔK* α_s − K* (K_s + λ_s)⁻¹ (ΔK + Δλ) α, so in norm
    # ‖f_s − f‖ ≤ ‖ΔK*‖₂‖α_s‖ + ‖K*‖₂ (‖ΔK‖₂ + |Δλ|) ‖α‖ / λ_s  — an inequality, checked with
    # the realized sketch (the same S, rebuilt from its seed).
    g = torch.Generator().manual_seed(0)
    x, y, x_test = torch.randn(30, 5, generator=g), torch.arange(30) % 3, torch.randn(8, 5, generator=g)
    m = 2048
    exact, _ = _fit("contraction", x=x, y=y)
    sketch, ctx = _fit("sketch", x=x, y=y, sketch_dim=m)
    assert ctx.params["entk_implementation"] == "sketch" and ctx.metrics["entk_n_features"] == m
    lin = exact.lin
    j, j_test = lin.jacobian(x.double()), lin.jacobian(x_test.double())
    s = empirical.projection(lin, 0, m, seed=0)
    phi, phi_test = j @ s.T / math.sqrt(m), j_test @ s.T / math.sqrt(m)
    k, k_s, k_star, k_star_s = j @ j.T, phi @ phi.T, j_test @ j.T, phi_test @ phi.T
    lam, lam_s = 0.1 * torch.trace(k) / len(k), 0.1 * torch.trace(k_s) / len(k)
    r = centered_one_hot(y, 3, torch.float64) - lin.forward(x.double())
    alpha = torch.linalg.solve(k + lam * torch.eye(len(k), dtype=k.dtype), r)
    alpha_s = torch.linalg.solve(k_s + lam_s * torch.eye(len(k), dtype=k.dtype), r)
    norm = lambda a: torch.linalg.matrix_norm(a, 2)  # noqa: E731
    bound = (norm(k_star_s - k_star) * alpha_s.norm()
             + norm(k_star) * (norm(k_s - k) + (lam_s - lam).abs()) * alpha.norm() / lam_s)
    gap = (sketch.predict(x_test).double() - exact.predict(x_test).double()).norm()
    assert gap <= bound * 1.0001 + 1e-5  # float32 outputs
    assert gap < 0.1 * exact.predict(x_test).norm()  # measured 2.6%: m = 2048 ≈ 5·P


def test_measure_counts_multiply_adds_and_activations():
    lin, x = _lin(MLP, (5,), "sum")
    sizes = empirical.measure(lin, x)
    assert sizes.forward_flops == 2 * (5 * 16 + 16 * 16 + 16 * 3)
    assert sizes.activations == 5 + 4 * 16 + 3 and sizes.n_params == 419 and sizes.n_inputs == 10
    lin, x = _lin(CNN, (2, 4, 4), "full")
    assert empirical.measure(lin, x).forward_flops == 2 * (3 * 2 * 9 * 16 + 3 * 3)


MB, GB = 2**20, 2**30


def test_cost_model_holds_j_and_contracts_for_small_networks():
    # MLP, P = 10⁴, N = 1000: J is 80 MB and fits; contraction costs 2N²P vs ntvp's ~N²F.
    sizes = Sizes(1000, 1, 10_000, 2e4, 1e3, 8)
    plan, plans = empirical.choose(sizes, 1 * GB)
    assert plan.implementation == "contraction" and plan.hold and set(plans) == {"contraction", "ntvp"}
    assert plans["contraction"].flops < plans["ntvp"].flops


def test_cost_model_takes_ntvp_for_many_outputs_when_j_does_not_fit():
    # Full kernel, 10 outputs, P = 10⁸: J would be 4·10¹⁴ bytes. Blocked contraction pays
    # (NR)²P; NTK-vector products pay N²R·F, 10× less here (Novak et al. 2022).
    sizes = Sizes(50_000, 10, 10**8, 2e8, 1e4, 8)
    plan, plans = empirical.choose(sizes, 40 * GB)
    assert plan.implementation == "ntvp" and not plans["contraction"].hold and plans["contraction"].fits
    # A CNN whose forward costs 2P per position (32×32) turns it around.
    plan, _ = empirical.choose(Sizes(50_000, 10, 10**6, 2e6 * 1024, 1e6, 8), 40 * GB)
    assert plan.implementation == "contraction"


def test_cost_model_takes_the_sketch_only_when_allowed_and_cheaper():
    # Sum kernel, P = 10⁹, one input's J rows barely fit: recomputing blocks makes the exact
    # kernels cost ~3·10¹⁹ FLOPs, the sketch with m = 1000 about 4·10¹⁷.
    sizes = Sizes(100_000, 1, 10**9, 2e9, 1e5, 8)
    plan, plans = empirical.choose(sizes, 20 * GB)
    assert plan.implementation == "ntvp" and "sketch" not in plans
    plan, plans = empirical.choose(Sizes(100_000, 1, 10**9, 2e9, 1e5, 8, sketch_dim=1000), 20 * GB)
    assert plan.implementation == "sketch" and plan.flops < plans["ntvp"].flops / 10


def test_cost_model_honours_a_forced_choice_and_says_when_nothing_fits():
    sizes = Sizes(1000, 1, 10_000, 2e4, 1e3, 8)
    plan, plans = empirical.choose(sizes, 1 * GB, "ntvp")
    assert plan.implementation == "ntvp" and list(plans) == ["ntvp"]
    with pytest.raises(ValueError, match=r"no eNTK implementation fits .* contraction .* GB, ntvp .* GB"):
        empirical.choose(sizes, 100 * 1024)  # 100 KiB: not even two rows of J (176 KB)
    with pytest.raises(ValueError, match="sketch_dim"):
        empirical.choose(sizes, 1 * GB, "sketch")


def test_entk_logs_the_implementation_and_every_estimate():
    _, ctx = _fit("auto")
    assert ctx.params["entk_implementation"] == "contraction" and ctx.params["entk_hold_jacobian"] is True
    assert {"entk_cost_contraction_gflop", "entk_cost_ntvp_gflop", "entk_cost_contraction_memory_gb",
            "entk_cost_ntvp_memory_gb", "entk_forward_gflop"} <= set(ctx.metrics)
    _, ctx = _fit("ntvp", solve="auto")
    assert ctx.params["entk_solve"] == "dual"


@pytest.mark.parametrize("options, match", [
    (dict(implementation="sketch"), "needs entk.sketch_dim"),
    (dict(implementation="ntvp", solve="primal"), "solves in the dual"),
    (dict(sketch_dim=0), "positive int"),
])
def test_entk_rejects_contradictory_options_when_built(options, match):
    with pytest.raises(ValueError, match=match):
        methods.get("entk", MLP, **options)


@pytest.mark.parametrize("kernel", ["sum", "full"])
def test_both_prediction_routes_give_f0_plus_j_w(kernel):
    lin, x = _lin(CNN, (2, 4, 4), kernel)
    columns = 3 if kernel == "sum" else 1
    weights = torch.randn(lin.n_params, columns, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = lin.forward(x) + (jacobian(lin.net, lin.params, x, kernel, 3) @ weights).reshape(len(x), 3)
    for route in ("jvp", "jacobian"):
        assert _rel(lin.linear(x, weights, route), expected) < 1e-10


def test_prediction_route_forms_j_for_many_sum_of_logits_columns_only():
    # WRN-10-1 at 64×64 with 1000 classes (F, P, A as measure() gives them): jvps cost 2001·F
    # per input, J and a product about 4·F; with the full kernel (one column) the jvp stays.
    wrn = Sizes(100, 1, 164_504, 1.36e8, 1.14e6, 4)
    assert empirical.predict_route(wrn, 1000)[0] == "jacobian"
    assert empirical.predict_route(Sizes(100, 1000, 164_504, 1.36e8, 1.14e6, 4), 1)[0] == "jvp"
