"""Plain-data layer lists, the format of neural-tangents reference files, used to exchange
architectures with the reference library, which runs in a separate environment. Each layer
declares its entry (``Layer.spec_name``, ``Layer.spec``, ``Layer.from_spec``):

- ``["dense", w_std, b_std]``, ``["conv", k, w_std, b_std, stride]`` (stride optional, default 1,
  XLA 'SAME' padding); ``b_std`` null means no bias; widths are not stored (the kernel does not
  depend on them);
- ``["relu"]``, ``["erf"]``, ``["gelu"]``, ``["leaky_relu", alpha]``, ``["abrelu", a, b]``,
  ``["sin", a, b, c]``, ``["tanh"]`` (tanh by quadrature, ``Elementwise("tanh")``) and
  ``["elementwise", name, deg]``;
- ``["layernorm"]``, ``["flatten"]``, ``["gap"]``, ``["avgpool", w]``;
- ``["residual", MAIN, SHORTCUT]`` with nested layer lists; an empty SHORTCUT is Identity.
"""

from __future__ import annotations

from ntkbench.arch import activations, normalization, pooling  # noqa: F401 (their layers declare entries)
from ntkbench.arch.combinators import Chain, Identity
from ntkbench.arch.layers import SPEC_LAYERS, Layer
from ntkbench.arch.serial import Serial, serial

Spec = list[list]


def to_spec(arch: Serial) -> Spec:
    """The layer list of ``arch``; raises for a layer the format has no entry for."""
    return [layer.spec() for layer in arch.layers]


def from_spec(spec: Spec, width: int = 1) -> Serial:
    """An architecture from a layer list; every Dense and Conv gets ``width`` units."""
    return serial(*_layers(spec, width))


def branch_spec(layer: Layer) -> Spec:
    """A residual branch as a layer list: a nested serial's layers, [] for Identity."""
    if isinstance(layer, Identity):
        return []
    return [child.spec() for child in layer.layers] if isinstance(layer, Chain) else [layer.spec()]


def branch_from_spec(spec: Spec, width: int) -> Layer:
    """A residual branch from a layer list; the empty list is Identity."""
    layers = _layers(spec, width)
    return Identity() if not layers else layers[0] if len(layers) == 1 else Chain(tuple(layers))


def _layers(spec: Spec, width: int) -> list[Layer]:
    if not isinstance(spec, list):
        raise ValueError(f"a layer list must be a list of entries such as ['relu'], got {spec!r}")
    layers: list[Layer] = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            raise ValueError(f"layer {i}: an entry is a list that starts with a layer name, got {entry!r}")
        cls = SPEC_LAYERS.get(entry[0])
        if cls is None:
            raise ValueError(f"layer {i}: unknown layer {entry[0]!r}; expected one of {', '.join(sorted(SPEC_LAYERS))}")
        try:
            layers.append(cls.from_spec(entry, width))
        except (TypeError, ValueError) as e:
            raise ValueError(f"layer {i} ({entry!r}): {e}") from None
    return layers
