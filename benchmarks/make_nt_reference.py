"""Regenerate tests/arch/nt_extra.npz: neural-tangents kernels for architectures beyond the
shared reference file. Run after `make nt-env`: .venv/bin/python benchmarks/make_nt_reference.py

Each case is a layer list (its meaning: benchmarks/nt_bridge.py) and an input shape (C, H, W)
or (d,); the file holds x1 (6 inputs), x2 (4 inputs) and stax's float64 NNGP and NTK of
x1 × x2. The first six cases come from ntkbench's own archs; the rest are literal lists (strided
convolutions, residual blocks, LayerNorm, the other activations, quadrature, and the
neural-tangents README's Wide ResNet), so they do not depend on ntkbench's from_spec.
"""

import json

import numpy as np

from nt_client import ROOT, nt_kernel
from ntkbench.arch import get
from ntkbench.arch.spec import to_spec

TANH_DEG = 25  # what ["tanh"] means; must equal nt_bridge.TANH_DEG (stax's suggested start)
RELU, GELU, LN = ["relu"], ["gelu"], ["layernorm"]


def dense(w_std, b_std):
    return ["dense", w_std, b_std]


def conv(k, w_std, b_std, stride=None):
    return ["conv", k, w_std, b_std] + ([] if stride is None else [stride])


def residual(main, shortcut=()):
    return ["residual", list(main), list(shortcut)]


def wrn(block_size: int, final: int) -> list:
    """neural-tangents README's WideResnet(block_size, k, num_classes=1), any k (widths do not
    enter the kernel): Conv(16, 3×3) → three groups of blocks with strides 1, 2, 2, each group's
    first block with a Conv(3×3, strides) shortcut and the rest Identity; a block is Relu → Conv
    (3×3, strides) → Relu → Conv(3×3), all convs W_std=1, b_std=None → AvgPool over the final
    `final`×`final` map (README: AvgPool((8, 8)) on 32×32 inputs) → Flatten → Dense(1., 0.)."""
    layers = [conv(3, 1.0, None)]
    for stride in (1, 2, 2):
        for i in range(block_size):
            s = stride if i == 0 else 1
            main = [RELU, conv(3, 1.0, None, s), RELU, conv(3, 1.0, None)]
            layers.append(residual(main, [conv(3, 1.0, None, s)] if i == 0 else []))
    return layers + [["avgpool", final], ["flatten"], dense(1.0, 0.0)]


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
    # Vectors: the new activations, LayerNorm after Dense and after a residual sum, residual
    # blocks (nested two deep, Identity and Dense shortcuts), tanh by quadrature.
    "vec_gelu_leaky_abrelu_sin": ([dense(1.3, 0.2), GELU, dense(1.1, 0.1), ["leaky_relu", 0.1], dense(1.2, None),
                                   ["abrelu", -0.4, 1.3], dense(1.0, 0.1), ["sin", 1.1, 0.7, 0.4], dense(0.9, 0.2)], [5]),
    "vec_layernorm_after_dense": ([dense(1.3, 0.2), LN, RELU, dense(1.1, None), LN, GELU, dense(1.0, 0.1)], [5]),
    "vec_residual_nested_layernorm": ([dense(1.2, 0.1),
                                       residual([RELU, dense(1.1, 0.1), residual([GELU, dense(1.3, None)]), RELU,
                                                 dense(0.9, 0.2)]),
                                       LN, residual([["leaky_relu", 0.2], dense(1.0, 0.1)], [dense(0.7, 0.3)]),
                                       RELU, dense(1.0, 0.0)], [5]),
    "vec_tanh": ([dense(1.2, 0.1), ["tanh"], dense(1.1, 0.2), ["tanh"], dense(1.0, 0.0)], [5]),
    # ["elementwise", fn, deg]: a chosen degree. vec_tanh at deg 25 is 5e-4 (NNGP) and 6e-3 (NTK) from
    # deg 250; this case at deg 100 is within 5e-7.
    "vec_elementwise_tanh100_softplus30": ([dense(1.2, 0.1), ["elementwise", "tanh", 100], dense(1.1, 0.2),
                                            ["elementwise", "softplus", 30], dense(1.0, 0.0)], [5]),
    # Images: SAME padding with strides as XLA computes it (before/after per conv noted).
    "img_conv_s2_8x8": ([conv(3, 1.4, 0.1, 2), RELU, conv(3, 1.2, 0.1, 1), RELU, ["flatten"], dense(1.0, 0.1)],
                        [2, 8, 8]),  # 8 → 4: pads 0, 1
    "img_conv_s2_7x7_k5": ([conv(3, 1.3, 0.2, 2), ["erf"], conv(5, 1.2, None, 2), RELU, ["gap"], dense(1.1, 0.1)],
                           [2, 7, 7]),  # 7 → 4: pads 1, 1; 4 → 2 (k=5): pads 1, 2
    "img_conv_k1s2_s3": ([conv(1, 1.5, 0.1, 2), RELU, conv(3, 1.2, 0.1, 3), RELU, ["flatten"], dense(1.0, 0.2)],
                         [2, 8, 8]),  # 8 → 4 (k=1): no padding; 4 → 2 (s=3): pads 1, 1
    "img_conv_s3_k5_8x8": ([conv(5, 1.3, 0.1, 3), GELU, conv(3, 1.1, 0.2), RELU, ["flatten"], dense(1.0, 0.0)],
                           [2, 8, 8]),  # 8 → 3 (k=5, s=3): pads 1, 2
    "img_residual_conv_shortcut": ([conv(3, 1.3, 0.1),
                                    residual([RELU, conv(3, 1.4, 0.1, 2), RELU, conv(3, 1.2, None)],
                                             [conv(1, 1.0, 0.2, 2)]),
                                    RELU, ["gap"], dense(1.0, 0.1)], [2, 8, 8]),
    "img_residual_nested_layernorm": ([conv(3, 1.3, 0.1), LN,
                                       residual([RELU, conv(3, 1.2, 0.1), residual([GELU, conv(3, 1.1, None)]), LN,
                                                 ["leaky_relu", 0.1], conv(3, 1.0, 0.2)]),
                                       LN, RELU, ["avgpool", 2], ["flatten"], dense(1.0, 0.0)], [2, 6, 6]),
    "img_acts_gap": ([conv(3, 1.4, 0.1), GELU, conv(3, 1.2, 0.2), ["abrelu", -0.3, 1.2], conv(1, 1.1, None),
                      ["sin", 0.9, 1.1, 0.2], ["gap"], dense(1.0, 0.1)], [2, 6, 6]),
    "img_acts_avgpool_flatten": ([conv(3, 1.3, 0.1), ["leaky_relu", 0.2], ["avgpool", 2], conv(3, 1.2, 0.1),
                                  ["tanh"], ["flatten"], dense(1.1, 0.1), ["sin", 1.0, 1.0, 0.0], dense(1.0, 0.0)],
                                 [2, 8, 8]),
    # neural-tangents README's Wide ResNet: 16 → 16 → 8 → 4, and with Identity shortcuts on 8×8.
    "wrn_readme_b1_16x16": (wrn(1, 4), [3, 16, 16]),
    "wrn_readme_b2_8x8": (wrn(2, 2), [3, 8, 8]),
}


def main() -> None:
    rng = np.random.default_rng(0)
    arrays, meta = {}, {}
    for name, (spec, shape) in CASES.items():
        x1, x2 = rng.standard_normal((6, *shape)), rng.standard_normal((4, *shape))
        result = nt_kernel(spec, x1, x2)
        arrays.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": result["nngp"], f"{name}/ntk": result["ntk"]})
        meta[name] = {"input_shape": shape, "layers": spec}
        print(f"{name}: ntk {result['ntk'].shape}, max |ntk| {np.abs(result['ntk']).max():.4g}", flush=True)
    info = {"archs": meta, "source": "neural-tangents 0.6.5 via benchmarks/nt_bridge.py, float64",
            "tanh_deg": TANH_DEG, "layernorm_eps": 1e-12}
    arrays["meta"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    np.savez_compressed(ROOT / "tests" / "arch" / "nt_extra.npz", **arrays)


if __name__ == "__main__":
    main()
