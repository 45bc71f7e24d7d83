"""Regenerate tests/arch/nt_extra.npz: neural-tangents kernels for architectures beyond the
shared reference file (erf, flatten and pooling readouts, kernel sizes 1 and 5, no bias,
Myrtle). Run after `make nt-env`: .venv/bin/python benchmarks/make_nt_reference.py"""

import json

import numpy as np

from nt_client import ROOT, nt_kernel
from ntkbench.arch import get
from ntkbench.arch.spec import to_spec

CASES = {
    "erf_fc2": ([["dense", 1.3, 0.2], ["erf"], ["dense", 0.9, None], ["erf"], ["dense", 1.0, 0.5]], [5]),
    "cnn_flatten_k5_k1": ([["conv", 5, 1.4, 0.1], ["relu"], ["conv", 1, 1.2, None], ["erf"], ["flatten"],
                           ["dense", 1.0, 0.3]], [2, 6, 6]),
    "cnn_pool_flatten": ([["conv", 3, 1.4, 0.1], ["relu"], ["avgpool", 2], ["conv", 3, 1.3, 0.2], ["relu"],
                          ["flatten"], ["dense", 1.1, 0.0]], [3, 8, 8]),
    "cnn_pool3_gap_mlp": ([["conv", 3, 1.4, 0.1], ["relu"], ["avgpool", 3], ["conv", 3, 1.3, 0.2], ["erf"], ["gap"],
                           ["dense", 1.1, 0.1], ["relu"], ["dense", 1.0, 0.1]], [2, 7, 7]),
    "myrtle5": (to_spec(get("myrtle5")), [3, 8, 8]),
    "mlp_deep_nobias": (to_spec(get("mlp", depth=6, b_std=None)), [1, 4, 4]),
}


def main() -> None:
    rng = np.random.default_rng(0)
    arrays, meta = {}, {}
    for name, (spec, shape) in CASES.items():
        x1, x2 = rng.standard_normal((6, *shape)), rng.standard_normal((4, *shape))
        result = nt_kernel(spec, x1, x2)
        arrays.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": result["nngp"], f"{name}/ntk": result["ntk"]})
        meta[name] = {"input_shape": shape, "layers": spec}
    info = {"archs": meta, "source": "neural-tangents 0.6.5 via benchmarks/nt_bridge.py, float64"}
    arrays["meta"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    np.savez_compressed(ROOT / "tests" / "arch" / "nt_extra.npz", **arrays)


if __name__ == "__main__":
    main()
