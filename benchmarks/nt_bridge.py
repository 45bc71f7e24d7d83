"""Run neural-tangents' stax kernel on a layer list; executed inside `.venv-nt` (see `make nt-env`).

Usage: .venv-nt/bin/python benchmarks/nt_bridge.py REQUEST.npz OUT.npz
REQUEST holds `spec` (JSON layer list as uint8), `x1`, optional `x2` (NCHW images or (N, d)),
`rounds` and `batch_size` (0 = unbatched). OUT holds `nngp`, `ntk` and `times` (seconds per
round, after one warm-up call that includes compilation). A bad layer list exits with status 2
and one line on stderr naming the entry.

Each entry means exactly the stax layer below (NTK parameterization, stax's defaults elsewhere;
a `b_std` of null is no bias; widths are irrelevant to the kernel and set to 1):

    ["dense", w_std, b_std]              Dense(1, W_std, b_std)
    ["conv", k, w_std, b_std, stride?]   Conv(1, (k, k), (s, s), padding='SAME', W_std, b_std), s = 1
    ["relu"] / ["erf"]                   Relu() / Erf()
    ["gelu"]                             Gelu(approximate=False)
    ["leaky_relu", alpha]                LeakyRelu(alpha)  = ABRelu(alpha, 1)
    ["abs"]                              Abs()             = ABRelu(-1, 1)
    ["abrelu", a, b]                     ABRelu(a, b): a·min(x, 0) + b·max(x, 0)
    ["sin", a, b, c]                     Sin(a, b, c): a·sin(b·x + c)
    ["tanh"]                             ElementwiseNumerical(jnp.tanh, deg=TANH_DEG)
    ["elementwise", fn, deg]             ElementwiseNumerical(FN[fn], deg); fn is tanh or softplus
    ["layernorm"]                        LayerNorm(axis=-1): over channels (NHWC) or features
    ["flatten"] / ["gap"]                Flatten() / GlobalAvgPool()
    ["avgpool", w]                       AvgPool((w, w), strides=(w, w), padding='VALID')
    ["residual", MAIN, SHORTCUT]         serial(FanOut(2), parallel(build(MAIN),
                                             build(SHORTCUT) or Identity()), FanInSum())
"""

import json
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402
import neural_tangents as nt  # noqa: E402

# stax's ElementwiseNumerical docstring: "for smooth activations deg=25 is a good place to start".
TANH_DEG = 25
FN = {"tanh": jnp.tanh, "softplus": jax.nn.softplus}
# name -> (number of arguments, stax layer from those arguments)
SIMPLE = {
    "dense": (2, lambda w, b: stax.Dense(1, W_std=w, b_std=b)),
    "relu": (0, stax.Relu),
    "erf": (0, stax.Erf),
    "gelu": (0, lambda: stax.Gelu(approximate=False)),
    "leaky_relu": (1, stax.LeakyRelu),
    "abrelu": (2, stax.ABRelu),
    "abs": (0, stax.Abs),
    "sin": (3, stax.Sin),
    "tanh": (0, lambda: stax.ElementwiseNumerical(jnp.tanh, deg=TANH_DEG)),
    "layernorm": (0, lambda: stax.LayerNorm(axis=-1)),
    "flatten": (0, stax.Flatten),
    "gap": (0, stax.GlobalAvgPool),
    "avgpool": (1, lambda w: stax.AvgPool((w, w), strides=(w, w), padding="VALID")),
}


class SpecError(ValueError):
    pass


def _conv(where, k, w_std, b_std, stride=1):
    if not (isinstance(k, int) and k >= 1 and isinstance(stride, int) and stride >= 1):
        raise SpecError(f"{where}: conv needs an integer kernel size and stride >= 1, got k={k!r}, stride={stride!r}")
    return stax.Conv(1, (k, k), (stride, stride), padding="SAME", W_std=w_std, b_std=b_std)


def _elementwise(where, fn, deg):
    if fn not in FN or not (isinstance(deg, int) and deg >= 1):
        raise SpecError(f"{where}: elementwise needs fn in {sorted(FN)} and an integer deg >= 1, got {fn!r}, {deg!r}")
    return stax.ElementwiseNumerical(FN[fn], deg=deg)


def _residual(where, main, shortcut):
    if not (isinstance(main, list) and main and isinstance(shortcut, list)):
        raise SpecError(f"{where}: residual needs a non-empty MAIN list and a SHORTCUT list ([] = Identity)")
    branch = build(shortcut, f"{where}.shortcut") if shortcut else stax.Identity()
    return stax.serial(stax.FanOut(2), stax.parallel(build(main, f"{where}.main"), branch), stax.FanInSum())


def build(spec, where="layer"):
    """stax's (init_fn, apply_fn, kernel_fn) for a layer list; `where` prefixes error messages."""
    layers = []
    for i, entry in enumerate(spec):
        at = f"{where} {i}"
        if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
            raise SpecError(f"{at}: expected a list starting with a layer name, got {entry!r}")
        name, args = entry[0], entry[1:]
        if name in SIMPLE:
            n_args, make = SIMPLE[name]
            if len(args) != n_args:
                raise SpecError(f"{at}: {name} takes {n_args} argument(s), got {args!r}")
            layers.append(make(*args))
        elif name == "conv" and len(args) in (3, 4):
            layers.append(_conv(at, *args))
        elif name == "elementwise" and len(args) == 2:
            layers.append(_elementwise(at, *args))
        elif name == "residual" and len(args) == 2:
            layers.append(_residual(at, *args))
        elif name in ("conv", "elementwise", "residual"):
            raise SpecError(f"{at}: wrong number of arguments for {name}: {args!r}")
        else:
            known = sorted([*SIMPLE, "conv", "elementwise", "residual"])
            raise SpecError(f"{at}: unknown layer {name!r}; expected one of {', '.join(known)}")
    return stax.serial(*layers)


def main(request_path: str, out_path: str) -> None:
    req = np.load(request_path)
    spec = json.loads(bytes(req["spec"]).decode())
    # neural-tangents wants NHWC images.
    to_nt = lambda x: np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x  # noqa: E731
    x1 = to_nt(req["x1"])
    x2 = to_nt(req["x2"]) if "x2" in req else None
    try:
        _, _, kernel_fn = build(spec)
    except SpecError as e:
        print(f"nt_bridge: {e}", file=sys.stderr)
        sys.exit(2)
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
    # stax warns on every FanIn ("assume independent inputs") and ElementwiseNumerical layer.
    warnings.filterwarnings("ignore", module="neural_tangents")
    main(*sys.argv[1:3])
