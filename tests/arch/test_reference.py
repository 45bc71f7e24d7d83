"""The kernels reproduce neural-tangents 0.6.5 (float64) to a relative error of 1e-6.

Two files: the shared reference (../shared/reference/nt_kernels.npz, three architectures, with
kernel-regression predictions) and tests/arch/nt_extra.npz (more layers and readouts, made by
benchmarks/make_nt_reference.py). The error is max |ours − nt| / max |nt| per kernel; both
sides compute in float64, so 1e-6 leaves many orders of magnitude for rounding (we see ~1e-15,
and ~1e-8 on the diagonal where arccos(1 − ε) amplifies rounding).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkbench.arch.spec import from_spec
from ntkbench.solvers import kernel_ridge

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "nt_kernels.npz"
EXTRA = Path(__file__).resolve().parent / "nt_extra.npz"
RTOL = 1e-6


def _load(path: Path) -> tuple[dict, dict]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(bytes(arrays.pop("meta")).decode()), arrays


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(ours.numpy() - ref).max() / np.abs(ref).max())


def _names(path: Path) -> list[str]:
    return sorted(_load(path)[0]["archs"]) if path.exists() else []


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared reference file not found at {SHARED}")
@pytest.mark.parametrize("name", _names(SHARED))
def test_shared_reference_kernels_and_predictions(name):
    meta, z = _load(SHARED)
    arch = from_spec(meta["archs"][name]["layers"])
    x_train, x_test = torch.from_numpy(z[f"{name}/x_train"]), torch.from_numpy(z[f"{name}/x_test"])
    train, test = arch.kernel(x_train), arch.kernel(x_test, x_train)
    for kind in ("nngp", "ntk"):
        assert _rel(getattr(train, kind), z[f"{name}/{kind}_train"]) < RTOL
        assert _rel(getattr(test, kind), z[f"{name}/{kind}_test"]) < RTOL
        pred = kernel_ridge(getattr(train, kind), torch.from_numpy(z[f"{name}/y_train"]), getattr(test, kind),
                            ridge=meta["diag_reg"], relative=True)
        assert _rel(pred, z[f"{name}/pred_{kind}"]) < RTOL


@pytest.mark.parametrize("name", _names(EXTRA))
def test_more_architectures_against_neural_tangents(name):
    meta, z = _load(EXTRA)
    arch = from_spec(meta["archs"][name]["layers"])
    k = arch.kernel(torch.from_numpy(z[f"{name}/x1"]), torch.from_numpy(z[f"{name}/x2"]))
    assert _rel(k.nngp, z[f"{name}/nngp"]) < RTOL
    assert _rel(k.ntk, z[f"{name}/ntk"]) < RTOL
