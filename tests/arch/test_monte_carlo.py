"""Monte Carlo against finite networks built from the same description.

NNGP: the output covariance over S random initializations (each with O i.i.d. readout units)
converges to the NNGP kernel as the width grows (Lee et al. 2018). eNTK: J Jᵀ of one network,
with J from torch.func, converges to the NTK (Jacot et al. 2018).

Errors are relative Frobenius norms. Tolerances: a 1/width bias plus Monte Carlo noise of about
√(2/(S·O)) for the NNGP; fluctuations of order c/√width (c ≈ 3 measured here) for the eNTK, which
we average over 3 seeds. We assert the large-width error is below a few times its expected
size, and that widening by 16x or more cuts the error at least 2x (the theory gives 4x or more).
All seeds are fixed, so the tests are deterministic.

``arch.monte_carlo`` (``arch.kernel(..., method="monte_carlo")``) is checked the same way on the
newer layers, against the exact kernel at its 1/√S rate with its reported standard errors, and
on the finite-only layers (BatchNorm, MaxPool, Dropout) for the semantics its docstring states.
Each bound below says where it comes from; the statistical ones were sized by resampling 800
networks per architecture (their 0.1% and 99.9% quantiles lie inside the bounds).
"""

import math

import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from ntkbench.arch import (BatchNorm, Conv, Dense, Dropout, Erf, Flatten, Gelu, GlobalAvgPool, LayerNorm, LeakyReLU,
                           MaxPool, ReLU, Sin, Tanh, residual, serial)
from ntkbench.arch.monte_carlo import SampledNetwork, monte_carlo_kernel, sample_kernel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These loops run thousands of tiny products, where a second OpenMP thread only adds
    synchronization (8x slower on two busy cores, measured); no assertion depends on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fc(width: int):
    return serial(Dense(width, 1.4, 0.1), ReLU(), Dense(width, 1.4, 0.1), ReLU(), Dense(1, 1.4, 0.1))


def _cnn_gap(channels: int):
    return serial(Conv(channels, 3, 1.4, 0.1), ReLU(), Conv(channels, 3, 1.4, 0.1), ReLU(), GlobalAvgPool(),
                  Dense(1, 1.4, 0.1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def output_covariance(arch, x: torch.Tensor, inits: int, outputs: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f = torch.stack([arch.module(tuple(x.shape[1:]), outputs, generator=g).double()(x) for _ in range(inits)])
    return torch.einsum("sno,smo->nm", f, f) / (inits * outputs)


def empirical_ntk(arch, x: torch.Tensor, seed: int) -> torch.Tensor:
    net = arch.module(tuple(x.shape[1:]), 1, generator=torch.Generator().manual_seed(seed)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = vmap(jacrev(lambda p, xi: functional_call(net, p, (xi[None],))[0, 0]), in_dims=(None, 0))(params, x)
    j = torch.cat([v.reshape(len(x), -1) for v in jac.values()], dim=1)
    return j @ j.T


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


X_VEC = _randn(6, 5)
X_IMG = _randn(4, 2, 6, 6)


@pytest.mark.parametrize("make, x, widths, tol", [
    (_fc, X_VEC, (4, 512), 0.03),
    (_cnn_gap, X_IMG, (1, 128), 0.04),
], ids=["fc", "cnn-gap"])
def test_output_covariance_approaches_nngp(make, x, widths, tol):
    nngp = make(1).kernel(x).nngp
    small, large = (_rel(output_covariance(make(w), x, inits=400, outputs=128), nngp) for w in widths)
    assert large < tol
    assert large < small / 2


@pytest.mark.parametrize("make, x, widths, tol", [
    (_fc, X_VEC, (64, 2048), 0.15),
    (_cnn_gap, X_IMG, (16, 512), 0.1),
], ids=["fc", "cnn-gap"])
def test_empirical_ntk_approaches_ntk(make, x, widths, tol):
    ntk = make(1).kernel(x).ntk
    small, large = (sum(_rel(empirical_ntk(make(w), x, s), ntk) for s in range(3)) / 3 for w in widths)
    assert large < tol
    assert large < small / 2


def _mlp(act):
    return serial(Dense(1, 1.4, 0.1), act, Dense(1, 1.4, 0.1), act, Dense(1, 1.4, 0.1))


def _conv(**kw):
    return Conv(1, 3, 1.4, 0.1, **kw)


# The newer layers, each in a small network whose exact kernel exists: (arch, x, small and large width).
NEW_LAYERS = {
    "gelu": (_mlp(Gelu()), X_VEC, (16, 512)),
    "leaky_relu": (_mlp(LeakyReLU(0.1)), X_VEC, (16, 512)),
    "sin": (_mlp(Sin(1.0, 1.5, 0.3)), X_VEC, (16, 512)),
    "tanh": (_mlp(Tanh()), X_VEC, (16, 512)),
    "layernorm-after-conv": (serial(_conv(), LayerNorm(), ReLU(), _conv(), ReLU(), GlobalAvgPool(), Dense(1, 1.4, 0.1)),
                             X_IMG, (8, 128)),
    # 8x8 with k = 3, s = 2: XLA pads (0, 1), which torch's symmetric padding would not reproduce
    "strided-conv": (serial(_conv(stride=2), ReLU(), _conv(), ReLU(), Flatten(), Dense(1, 1.4, 0.1)),
                     _randn(4, 2, 8, 8), (8, 128)),
    "residual": (serial(_conv(), residual(serial(ReLU(), _conv(), ReLU(), _conv())), ReLU(), GlobalAvgPool(),
                        Dense(1, 1.4, 0.1)), X_IMG, (2, 128)),
}


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_new_layers_finite_modules_approach_exact_kernel(name):
    """The Monte Carlo estimate from 16 networks, its error averaged over 4 seeds. The noise per
    sample falls as 1/√width and the bias as 1/width; at the large widths the errors seen are
    0.02-0.035 and widening cuts them 3-7x. Bounds: below 0.1 at the large width, and less than
    half the small width's."""
    arch, x, widths = NEW_LAYERS[name]
    exact = arch.kernel(x)
    estimates = {w: [monte_carlo_kernel(arch, x, n_samples=16, width=w, seed=s) for s in range(4)] for w in widths}
    for field in ("nngp", "ntk"):
        small, large = (sum(_rel(getattr(k, field), getattr(exact, field)) for k in estimates[w]) / 4 for w in widths)
        assert large < 0.1, f"{field}: error {large:.3f} at width {widths[1]}"
        assert large < small / 2, f"{field}: error {large:.3f} at width {widths[1]}, {small:.3f} at {widths[0]}"


# Architectures with both kernels, for the rate and the standard errors: an MLP, a small CNN and
# a residual block with GELU and LayerNorm (LayerNorm of a sum of Gaussian branches, as stax
# allows). Widths where the bias (≤ 0.03 of the kernel) is well below the noise of 8 samples
# (0.06-0.1).
RATE_CASES = {
    "mlp": (_fc(1), X_VEC, 128),
    "cnn": (serial(_conv(), ReLU(), _conv(), ReLU(), Flatten(), Dense(1, 1.4, 0.1)), _randn(6, 2, 5, 5), 32),
    "residual-gelu-layernorm": (serial(Dense(1, 1.4, 0.1), residual(serial(Gelu(), Dense(1, 1.4, 0.1))), LayerNorm(),
                                       Gelu(), Dense(1, 1.4, 0.1)), X_VEC, 128),
}
SEEDS = 32


@pytest.fixture(scope="module")
def rate_runs():
    """Per architecture: the exact kernel and 32 independent estimates each from 2 and from 8
    samples (distinct seeds, so the two sizes share no network)."""
    runs = {}
    for name, (arch, x, width) in RATE_CASES.items():
        runs[name] = arch.kernel(x), {n: [monte_carlo_kernel(arch, x, n_samples=n, width=width, seed=1000 * n + s)
                                          for s in range(SEEDS)] for n in (2, 8)}
    return runs


def test_error_falls_as_one_over_sqrt_samples(rate_runs):
    """E‖K̂_S − K‖² = ‖bias‖² + tr Var/S, so with the bias small the RMS error over seeds from 4x the
    samples is half: ratio 2. One ratio from 32 seeds is noisy (the errors of a kernel's entries
    move together), 1.1-3.3 at the 0.1% and 99.9% quantiles; the geometric mean of the six
    (3 architectures × nngp, ntk) lies in 1.6-2.35. Bounds: each in [1, 4] (the error falls), and
    the mean in [1.5, 2.6], which a rate of S^-1/4 (ratio 1.41) or S^-3/4 (2.83) would fail."""
    ratios = {}
    for name, (exact, estimates) in rate_runs.items():
        for field in ("nngp", "ntk"):
            def mean_square(n):
                return sum(_rel(getattr(k, field), getattr(exact, field)) ** 2 for k in estimates[n]) / SEEDS
            ratios[f"{name} {field}"] = math.sqrt(mean_square(2) / mean_square(8))
    shown = ", ".join(f"{key} {r:.2f}" for key, r in ratios.items())
    assert all(1 <= r <= 4 for r in ratios.values()), shown
    mean = math.exp(sum(map(math.log, ratios.values())) / len(ratios))
    assert 1.5 <= mean <= 2.6, f"geometric mean {mean:.2f}: {shown}"


def test_standard_error_covers_the_error(rate_runs):
    """The estimates from 8 samples: |K̂ − K| / se per entry (upper triangle), pooled over the
    architectures, both kernels and the 32 seeds. For Gaussian noise the ratio is Student's t
    with 7 degrees of freedom, within 2 for 91.4% of entries and within 1 for 65%; measured here
    0.88-0.95 and 0.58-0.71 (0.1% to 99.9% quantiles). Bounds: [0.85, 0.98] and [0.5, 0.8]; an se
    half or twice the true spread fails one of them."""
    z = []
    for exact, estimates in rate_runs.values():
        upper = torch.triu_indices(*exact.nngp.shape)
        for k in estimates[8]:
            for field in ("nngp", "ntk"):
                ratio = (getattr(k, field) - getattr(exact, field)).abs() / getattr(k, f"{field}_se")
                z.append(ratio[upper[0], upper[1]])
    z = torch.cat(z)
    within2, within1 = float((z <= 2).double().mean()), float((z <= 1).double().mean())
    assert 0.85 <= within2 <= 0.98, f"{within2:.3f} of entries within 2 standard errors"
    assert 0.5 <= within1 <= 0.8, f"{within1:.3f} of entries within 1 standard error"


def test_one_network_gives_the_empirical_kernels():
    """One sampled network's terms against independent code: its J Jᵀ equals ``empirical_ntk``
    (vmap of jacrev) of the same network to rounding, and its NNGP term, the readout integrated
    out, matches the output covariance over 8192 readout units on the same hidden layers to
    within 4·√(2/8192) = 0.06 (the readout's own noise)."""
    x, width, seed = X_VEC, 64, 7
    network = SampledNetwork(_fc(1), (5,), width, seed, x.device, torch.float64)
    nngp, ntk, diag, _ = sample_kernel(network, x, x, None, None, True, 4)  # a diagonal and an off-diagonal block
    assert _rel(ntk, empirical_ntk(_fc(width), x, seed)) < 1e-12
    assert torch.equal(diag, nngp.diagonal())
    many = _fc(1).module((5,), 8192, generator=torch.Generator().manual_seed(seed), width=width).double()
    with torch.no_grad():
        f = many(x)
    assert _rel(nngp, f @ f.T / 8192) < 0.06


BN_MAXPOOL = serial(Conv(1, 3), BatchNorm(), ReLU(), MaxPool(2), Conv(1, 3), BatchNorm(), ReLU(), Flatten(), Dense(1))
DROPOUT = serial(Dense(1, 1.4, 0.1), ReLU(), Dropout(0.5), Dense(1, 1.4, 0.1))
ENDS_IN_ERF = serial(Dense(1), ReLU(), Dense(1), Erf())  # no readout to integrate out: f f' itself


@pytest.mark.parametrize("arch, x", [(BN_MAXPOOL, _randn(5, 2, 6, 6)), (DROPOUT, X_VEC), (ENDS_IN_ERF, X_VEC)],
                         ids=["batchnorm-maxpool", "dropout", "ends-in-erf"])
def test_finite_only_networks_give_reproducible_kernels(arch, x):
    """Finite, bitwise reproducible for one seed and different for another, exactly symmetric,
    with positive standard errors; the exact path refuses the finite-only layers, naming them."""
    if arch is not ENDS_IN_ERF:
        assert arch.kernel_method(tuple(x.shape[1:])) == "monte_carlo"
        with pytest.raises(ValueError, match="monte_carlo"):
            arch.kernel(x)
    k = arch.kernel(x, method="monte_carlo", n_samples=4, width=16, seed=3)
    again = arch.kernel(x, method="monte_carlo", n_samples=4, width=16, seed=3)
    other = arch.kernel(x, method="monte_carlo", n_samples=4, width=16, seed=4)
    for field in ("nngp", "ntk", "nngp_se", "ntk_se"):
        value = getattr(k, field)
        assert value.shape == (len(x), len(x)) and value.dtype == torch.float64 and value.isfinite().all()
        assert torch.equal(value, getattr(again, field))
        assert not torch.equal(value, getattr(other, field))
        assert torch.equal(value, value.T)
    assert (k.nngp_se > 0).all() and (k.ntk_se > 0).all()
    assert torch.equal(k.cov1, k.nngp.diagonal()) and k.cov2 is k.cov1


def test_batchnorm_uses_the_reference_batch_statistics_frozen():
    """BatchNorm normalizes with the training inputs' statistics, as one train-mode forward pass
    of them does (to rounding, 1e-12), gathered in one pass or layer by layer across blocks; an
    entry then depends on its two inputs and the training inputs only, not on the blocking nor
    on which other rows are asked for (1e-12 relative)."""
    x = _randn(7, 2, 6, 6)
    for block in (3, 7):  # three blocks (layer by layer), one block (one pass)
        network = SampledNetwork(BN_MAXPOOL, (2, 6, 6), 8, 11, x.device, torch.float64)
        train_mode = type(network.net)(list(network.net), (2, 6, 6))  # the same modules
        with torch.no_grad():
            expected = train_mode.train()(x)
        network.net.eval()
        network.fit_batchnorm(x, None, block)
        assert _rel(network.forward(x, None), expected) < 1e-12
    k = monte_carlo_kernel(BN_MAXPOOL, x, n_samples=3, width=8)
    blocked = monte_carlo_kernel(BN_MAXPOOL, x, n_samples=3, width=8, block_size=2)
    rows = monte_carlo_kernel(BN_MAXPOOL, x[:3].clone(), x, n_samples=3, width=8)  # test rows against training x
    for field in ("nngp", "ntk"):
        assert _rel(getattr(blocked, field), getattr(k, field)) < 1e-12
        assert _rel(getattr(rows, field), getattr(k, field)[:3]) < 1e-12
    assert _rel(rows.cov2, k.cov1) < 1e-12


def test_dropout_is_train_mode_with_a_mask_per_input():
    """Dropout(0.5) before the readout, against the exact kernel of the same network without it.
    Between two inputs the masks are independent with E[m m'] = 1, so the kernel is unchanged;
    an input with itself shares one mask, E[m²] = 1/keep = 2, so the part of the diagonal that
    passed through the layer doubles (stax.Dropout in train mode):

        nngp(x, x) = 2 (nngp₀(x, x) − b_std²) + b_std²,   ntk(x, x) = nngp(x, x) + 2 (ntk₀ − nngp₀)(x, x).

    64 networks of width 4096 (one hidden layer on 5 inputs: cheap): standard error ~0.01 of the
    kernel, errors seen ≤ 0.012. Bounds: within 0.05 of that, and more than 0.5 away from the
    eval-mode kernel, whose diagonal is half of it (a relative difference of 1)."""
    x = X_VEC
    base = serial(Dense(1, 1.4, 0.1), ReLU(), Dense(1, 1.4, 0.1)).kernel(x)
    k = monte_carlo_kernel(DROPOUT, x, n_samples=64, width=4096)
    off = ~torch.eye(len(x), dtype=torch.bool)
    nngp_diag = 2 * (base.nngp.diagonal() - 0.01) + 0.01
    ntk_diag = nngp_diag + 2 * (base.ntk.diagonal() - base.nngp.diagonal())
    assert _rel(k.nngp[off], base.nngp[off]) < 0.05 and _rel(k.ntk[off], base.ntk[off]) < 0.05
    assert _rel(k.nngp.diagonal(), nngp_diag) < 0.05 and _rel(k.ntk.diagonal(), ntk_diag) < 0.05
    assert _rel(k.nngp.diagonal(), base.nngp.diagonal()) > 0.5


@pytest.mark.parametrize("arch, x", [(DROPOUT, X_VEC), (serial(Conv(1, 3), BatchNorm(), ReLU(), Dropout(0.3), Flatten(),
                                                             Dense(1)), _randn(6, 2, 4, 4))],
                         ids=["dropout", "batchnorm-dropout"])
def test_kernel_assembled_from_blocks_is_the_kernel_at_once(arch, x):
    """Blocks of the train kernel and test rows against the training set, each its own call (the
    training set as the BatchNorm reference), give the entries of the kernel computed at once:
    an input meets the same Dropout masks wherever it appears, even as a copy (1e-12 relative)."""
    def mc(*xs, **kw):
        return monte_carlo_kernel(arch, *xs, n_samples=3, width=8, reference=x, **kw)

    whole = mc(x)
    for part, expected in [(mc(x[:2]), whole.ntk[:2, :2]), (mc(x[:2], x[2:]), whole.ntk[:2, 2:]),
                           (mc(x, x.clone()), whole.ntk), (mc(x, block_size=4), whole.ntk)]:
        assert _rel(part.ntk, expected) < 1e-12
    assert _rel(mc(x[3:], x).nngp, whole.nngp[3:]) < 1e-12


@pytest.mark.parametrize("options, message", [
    ({"n_samples": 1}, "n_samples must be an int >= 2"),
    ({"n_samples": 8.0}, "n_samples must be an int >= 2"),
    ({"width": 0}, "width must be a positive int"),
    ({"seed": -1}, r"seed must be an int in \[0, 2\*\*63\)"),
    ({"dtype": torch.int64}, "dtype must be a floating-point torch.dtype"),
    ({"block_size": 0}, "block_size must be a positive int or None"),
    ({"reference": _randn(3, 4)}, r"reference must have the inputs' per-sample shape \(5,\), got \(4,\)"),
])
def test_bad_options_raise_one_line(options, message):
    with pytest.raises(ValueError, match=message) as info:
        monte_carlo_kernel(_fc(1), X_VEC, **{"n_samples": 2, "width": 4, **options})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("x1, x2, message", [
    (X_VEC[:0], None, "x1 must be a non-empty batch"),
    (X_VEC.int(), None, "x1 must be floating point"),
    (X_VEC, _randn(3, 4), "x1 and x2 must have the same per-sample shape"),
    (X_VEC, [[0.0] * 5], "x2 must be a torch.Tensor"),
    (torch.full((2, 5), math.nan), None, "x1 has NaN or inf in sample 0"),
    (X_IMG, None, "Dense expects a vector input"),
])
def test_bad_inputs_raise_one_line(x1, x2, message):
    with pytest.raises(ValueError, match=message):
        _fc(1).kernel(x1, x2, method="monte_carlo", n_samples=2, width=4)
    with pytest.raises(ValueError, match="arch must be a serial"):
        monte_carlo_kernel(Dense(1), X_VEC, n_samples=2, width=4)
