"""Run neural-tangents' stax kernel on a layer list; executed inside `.venv-nt` (see `make nt-env`).

Usage: .venv-nt/bin/python benchmarks/nt_bridge.py REQUEST.npz OUT.npz
REQUEST holds `spec` (JSON layer list as uint8), `x1`, optional `x2` (NCHW images or (N, d)),
`rounds` and `batch_size` (0 = unbatched). OUT holds `nngp`, `ntk` and `times` (seconds per
round, after one warm-up call that includes compilation).
"""

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402
import neural_tangents as nt  # noqa: E402


def build(spec):
    layers = []
    for entry in spec:
        name, args = entry[0], entry[1:]
        if name == "dense":
            layers.append(stax.Dense(1, W_std=args[0], b_std=args[1]))
        elif name == "conv":
            k, w_std, b_std = args
            layers.append(stax.Conv(1, (k, k), padding="SAME", W_std=w_std, b_std=b_std))
        elif name == "relu":
            layers.append(stax.Relu())
        elif name == "erf":
            layers.append(stax.Erf())
        elif name == "flatten":
            layers.append(stax.Flatten())
        elif name == "gap":
            layers.append(stax.GlobalAvgPool())
        elif name == "avgpool":
            layers.append(stax.AvgPool((args[0], args[0]), strides=(args[0], args[0]), padding="VALID"))
        else:
            raise ValueError(f"unknown layer {name!r}")
    return stax.serial(*layers)


def main(request_path: str, out_path: str) -> None:
    req = np.load(request_path)
    spec = json.loads(bytes(req["spec"]).decode())
    # neural-tangents wants NHWC images.
    to_nt = lambda x: np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x  # noqa: E731
    x1 = to_nt(req["x1"])
    x2 = to_nt(req["x2"]) if "x2" in req else None
    _, _, kernel_fn = build(spec)
    batch = int(req["batch_size"])
    fn = nt.batch(kernel_fn, batch_size=batch, store_on_device=False) if batch else jax.jit(kernel_fn, static_argnames="get")
    run = lambda: jax.block_until_ready(fn(x1, x2, ("nngp", "ntk")))  # noqa: E731
    run()
    times = []
    for _ in range(int(req["rounds"])):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    np.savez(out_path, nngp=np.asarray(out.nngp), ntk=np.asarray(out.ntk), times=np.array(times))


if __name__ == "__main__":
    main(*sys.argv[1:3])
