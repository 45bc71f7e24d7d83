"""Tests for ntkbench.diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from ntkbench.diagnostics import (
    DiagnosticError,
    centered_alignment,
    effective_rank,
    kernel_diagnostics,
    spectrum,
    target_energy,
)

DT = torch.float64


def _onehot(n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    labels = labels[torch.randperm(n, generator=g)]
    y = torch.nn.functional.one_hot(labels, c).to(DT)
    return y - 1.0 / c


def _psd(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    return x @ x.T / d


def test_alignment_of_target_kernel_is_one() -> None:
    y = _onehot(60, 4)
    assert abs(centered_alignment(y @ y.T, y) - 1.0) < 1e-12
    v = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert abs(centered_alignment(torch.outer(v, v), v) - 1.0) < 1e-12


def test_alignment_invariant_to_scale_and_constant() -> None:
    k, y = _psd(80, 10, 2), _onehot(80, 3)
    a = centered_alignment(k, y)
    assert abs(centered_alignment(7.5 * k, y) - a) < 1e-12
    assert abs(centered_alignment(k + 3.0, y) - a) < 1e-12
    assert abs(centered_alignment(k, y + 2.0) - a) < 1e-12


def test_alignment_of_independent_kernel_is_small() -> None:
    k, y = _psd(200, 300, 3), _onehot(200, 5, seed=4)
    assert abs(centered_alignment(k, y)) < 0.2


def test_spectrum_descending_nonnegative() -> None:
    k = _psd(30, 5, 5)  # rank 5: many round-off eigenvalues near 0
    s = spectrum(k)
    assert s.shape == (30,) and (s >= 0).all() and (s[:-1] >= s[1:]).all()
    torch.testing.assert_close(s.sum(), torch.trace(k))


def test_effective_rank() -> None:
    n = 17
    assert abs(effective_rank(spectrum(torch.eye(n, dtype=DT))) - n) < 1e-10
    v = torch.randn(n, generator=torch.Generator().manual_seed(6), dtype=DT)
    assert abs(effective_rank(spectrum(torch.outer(v, v))) - 1.0) < 1e-6
    assert abs(effective_rank(torch.tensor([1.0, 1.0, 0.0, 0.0])) - 2.0) < 1e-12


def test_target_energy() -> None:
    n, c = 90, 4
    y = _onehot(n, c) + 1.0 / c  # raw one-hot, unbalanced classes: col(Y) contains 1, so HY in col(Y)
    e = target_energy(y @ y.T + 1e-6 * torch.eye(n, dtype=DT), y, ks=(1, 2, c, 10, n, n + 1))
    assert set(e) == {1, 2, c, 10, n}
    assert abs(e[c] - 1.0) < 1e-10
    e2 = target_energy(_psd(n, 20, 7), y, ks=range(1, n + 1))
    vals = [e2[i] for i in range(1, n + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(vals, vals[1:]))
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in vals)
    assert abs(vals[-1] - 1.0) < 1e-10


def _brute_force(k: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[float, float]:
    n = k.shape[0]
    eye = torch.eye(n, dtype=DT)
    fitted = k @ torch.linalg.solve(k + lam * eye, y)
    train = float(((y - fitted) ** 2).mean())
    errs = []
    for i in range(n):
        keep = torch.arange(n) != i
        kk = k[keep][:, keep]
        alpha = torch.linalg.solve(kk + lam * torch.eye(n - 1, dtype=DT), y[keep])
        errs.append(y[i] - k[i, keep] @ alpha)
    loo = float((torch.stack(errs) ** 2).mean())
    return train, loo


def test_loo_and_train_mse_match_brute_force() -> None:
    n = 40
    k = _psd(n, 15, 8) + 0.5
    y = _onehot(n, 3, seed=9) + 0.1 * torch.randn(n, 3, generator=torch.Generator().manual_seed(10), dtype=DT)
    ridge = 0.05
    d = kernel_diagnostics(k, y, ridge, relative=True)
    lam = ridge * float(torch.trace(k)) / n
    train, loo = _brute_force(k, y, lam)
    assert abs(d["train_mse_at_ridge"] - train) < 1e-8
    assert abs(d["loo_mse_at_ridge"] - loo) < 1e-8
    d_abs = kernel_diagnostics(k, y[:, 0], lam, relative=False)
    train1, loo1 = _brute_force(k, y[:, :1], lam)
    assert abs(d_abs["train_mse_at_ridge"] - train1) < 1e-8
    assert abs(d_abs["loo_mse_at_ridge"] - loo1) < 1e-8


def test_kernel_diagnostics_keys_consistent() -> None:
    n = 50
    k, y = _psd(n, 12, 11), _onehot(n, 5, seed=12)
    d = kernel_diagnostics(k, y, 1e-3)
    assert set(d) == {"alignment", "effective_rank", "energy_top1", "energy_top10",
                      "train_mse_at_ridge", "loo_mse_at_ridge"}
    assert abs(d["alignment"] - centered_alignment(k, y)) < 1e-12
    assert abs(d["effective_rank"] - effective_rank(spectrum(k))) < 1e-8
    e = target_energy(k, y)
    assert abs(d["energy_top10"] - e[10]) < 1e-10
    assert all(math.isfinite(v) for v in d.values())
    assert d["loo_mse_at_ridge"] >= d["train_mse_at_ridge"]


def test_undefined_diagnostics_raise_a_clear_error_not_a_nan() -> None:
    n = 30
    k = _psd(n, 10, 13)
    one_class = torch.zeros(n, 3, dtype=DT)
    one_class[:, 1] = 1.0  # every label the same class: nothing to align with
    for call in (lambda: centered_alignment(k, one_class), lambda: target_energy(k, one_class),
                 lambda: kernel_diagnostics(k, one_class, 1e-3)):
        with pytest.raises(DiagnosticError, match="every training label is the same class"):
            call()
    y = _onehot(n, 3, seed=14)
    with pytest.raises(DiagnosticError, match="centred kernel is zero"):
        centered_alignment(torch.full((n, n), 2.0, dtype=DT), y)
    with pytest.raises(DiagnosticError, match="every eigenvalue of the kernel is 0"):
        effective_rank(torch.zeros(n, dtype=DT))
    with pytest.raises(DiagnosticError, match="needs a positive ridge"):
        kernel_diagnostics(k, y, 0.0)


def test_a_rank_deficient_kernel_gives_finite_diagnostics() -> None:
    n = 40
    k = _psd(n, 2, 15)  # rank 2
    d = kernel_diagnostics(k, _onehot(n, 4, seed=16), 1e-3)
    assert all(math.isfinite(v) for v in d.values())
    assert 1 <= d["effective_rank"] <= 2 + 1e-9
    assert d["energy_top10"] <= 1 + 1e-12 and d["loo_mse_at_ridge"] >= d["train_mse_at_ridge"]


def test_a_single_class_subset_is_reported_and_the_fit_goes_on(capsys) -> None:
    from ntkbench import arch, methods

    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(17))
    ctx = methods.RunContext()
    model = methods.get("ntk", arch.get("mlp", depth=1), 0, ridge=1e-3)
    predictor = model.fit(x, torch.zeros(20, dtype=torch.long), 3, ctx)
    assert predictor.predict(x).shape == (20, 3)
    assert "every training label is the same class" in ctx.params["kernel_diagnostics_error"]
    assert "kernel_alignment" not in ctx.metrics and "spectrum.json" in ctx.artifacts
    assert "kernel diagnostics skipped" in capsys.readouterr().err
