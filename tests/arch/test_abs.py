"""Abs, the example of adding a layer with one class: its kernel is ABReLU(−1, 1)'s, and equals
neural-tangents' stax.Abs in float64 to 1e-6 relative when `.venv-nt` exists (`make nt-env`)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkbench.arch import ABReLU, Abs, Conv, Dense, GlobalAvgPool, serial
from ntkbench.arch.spec import from_spec, to_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from nt_client import nt_available, nt_kernel  # noqa: E402

X = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _arch(act):
    return serial(Conv(4, 3, 1.3, 0.1), act, Conv(4, 3, 1.1, None, stride=2), act, GlobalAvgPool(), Dense(1, 1.0, 0.2))


def test_abs_is_abrelu_minus_one_one_and_is_exchangeable():
    a, b = _arch(Abs()).kernel(X), _arch(ABReLU(-1.0, 1.0)).kernel(X)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    assert to_spec(from_spec(to_spec(_arch(Abs())))) == to_spec(_arch(Abs()))
    assert torch.equal(_arch(Abs()).module((2, 6, 6), 1)[1](-X.float()), X.float().abs())


@pytest.mark.skipif(not nt_available(), reason="neural-tangents comparison needs .venv-nt (make nt-env)")
def test_abs_matches_neural_tangents():
    arch = _arch(Abs())
    ours = arch.kernel(X[:3], X)
    ref = nt_kernel(to_spec(arch), X[:3].numpy(), X.numpy())
    for kind in ("nngp", "ntk"):
        assert np.abs(getattr(ours, kind).numpy() - ref[kind]).max() / np.abs(ref[kind]).max() < 1e-6
