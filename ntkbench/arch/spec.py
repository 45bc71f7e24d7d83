"""Plain-data layer lists, the format of neural-tangents reference files
(``["dense", w_std, b_std]``, ``["conv", k, w_std, b_std]``, ``["relu"]``, ``["erf"]``,
``["flatten"]``, ``["gap"]``, ``["avgpool", w]``). Used to exchange architectures with the
reference library, which runs in a separate environment."""

from __future__ import annotations

from ntkbench.arch.layers import AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, Layer, ReLU
from ntkbench.arch.serial import Serial, serial

Spec = list[list]


def to_spec(arch: Serial) -> Spec:
    """The layer list of ``arch``. Widths are dropped: the kernel does not depend on them."""
    out: Spec = []
    for layer in arch.layers:
        match layer:
            case Dense():
                out.append(["dense", layer.w_std, layer.b_std])
            case Conv():
                out.append(["conv", layer.kernel_size, layer.w_std, layer.b_std])
            case AvgPool():
                out.append(["avgpool", layer.window])
            case _:
                out.append([_NAMES[type(layer)]])
    return out


def from_spec(spec: Spec, width: int = 1) -> Serial:
    """An architecture from a layer list; every Dense and Conv gets ``width`` units."""
    layers: list[Layer] = []
    for i, entry in enumerate(spec):
        name, args = entry[0], entry[1:]
        if name == "dense":
            layers.append(Dense(width, *args))
        elif name == "conv":
            layers.append(Conv(width, *args))
        elif name == "avgpool":
            layers.append(AvgPool(*args))
        elif name in _CLASSES:
            layers.append(_CLASSES[name]())
        else:
            raise ValueError(f"layer {i}: unknown layer {name!r}; expected one of dense, conv, avgpool, {', '.join(_CLASSES)}")
    return serial(*layers)


_CLASSES: dict[str, type[Layer]] = {"relu": ReLU, "erf": Erf, "flatten": Flatten, "gap": GlobalAvgPool}
_NAMES = {cls: name for name, cls in _CLASSES.items()}
