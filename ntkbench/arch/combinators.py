"""Non-serial networks, named as in neural-tangents' stax: ``FanOut(n)`` copies a signal into n
branches, ``parallel(*branches)`` applies one layer per branch, ``FanInSum()`` and
``FanInConcat()`` join them, ``Identity()`` passes a branch on, and ``residual(main, shortcut)``
is ``FanOut(2) → parallel(main, shortcut) → FanInSum()``.

Kernels (Novak et al. 2020, "Neural Tangents"; Yang 2019 for the independence argument):

- a sum z = Σ_b z_b of branches has nngp(z) = Σ_b nngp(z_b) and ntk(z) = Σ_b ntk(z_b) when the
  branches are independent. A branch that ends in an affine layer (Dense, Conv) with its own
  weights is a zero-mean signal independent of everything else in the limit, cross terms
  included, so the sum is exact when every branch but at most one ends so. Otherwise (two plain
  ``Identity`` branches, two ReLU branches) the cross-covariances are missing and ``kernel``
  refuses, naming the branches; ``method="monte_carlo"`` still covers the network.
- a concatenation along channels has the mean of the branches' kernels, the limit of branches of
  equal width (stax weights unequal widths by their channel counts; the exchange format has no
  widths, so ``kernel`` refuses unequal ones). Its channels have different covariances, so, as
  in stax, only an affine layer may follow it where a kernel is wanted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ntkbench.arch.kernel import Kernel, exact_self_pairs
from ntkbench.arch.layers import Cost, Layer, Node, Shape

if TYPE_CHECKING:
    from ntkbench.arch.serial import Serial

Nodes = Node | tuple[Node, ...]
Kernels = Kernel | tuple[Kernel, ...]


def as_layer(branch: Layer | Serial) -> Layer:
    """A branch as one layer: a ``serial(...)`` becomes a ``Chain`` of its layers."""
    from ntkbench.arch.serial import Serial

    if isinstance(branch, Serial):
        return Chain(branch.layers)
    if not isinstance(branch, Layer):
        raise ValueError(f"expected a Layer such as Dense(...) or a serial(...), got {branch!r}")
    return branch


def _count(nodes: Nodes, layer: Layer) -> tuple[Node, ...]:
    if not isinstance(nodes, tuple):
        raise ValueError(f"{layer} joins branches; put FanOut(n) and parallel(...) before it")
    return nodes


@dataclass(frozen=True)
class Chain(Layer):
    """Layers in order, as one layer (a ``serial`` nested inside a branch)."""

    layers: tuple[Layer, ...]

    def check(self) -> None:
        if not self.layers:
            raise ValueError("a branch needs at least one layer (use Identity() for none)")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"layer {i}: expected a Layer such as Dense(...) or ReLU(), got {layer!r}")
            try:
                layer.check()
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer}): {e}") from None

    def __post_init__(self) -> None:
        self.check()

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"

    @property
    def positions(self) -> str:  # type: ignore[override]
        return "pool" if any(layer.positions == "pool" for layer in self.layers) else "local"

    @property
    def kernel_kind(self) -> str:  # type: ignore[override]
        kinds = {layer.kernel_kind for layer in self.layers}
        return next((kind for kind in ("monte_carlo", "quadrature") if kind in kinds), "exact")

    def trace(self, node: Nodes) -> Nodes:
        for i, layer in enumerate(self.layers):
            try:
                node = layer.trace(node)
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer}): {e}") from None
        return node

    def out_shape(self, shape: Shape) -> Shape:
        return self.trace(Node(shape)).shape

    def with_width(self, width: int) -> Layer:
        return Chain(tuple(layer.with_width(width) for layer in self.layers))

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        modules, node = [], Node(shape)
        for layer in self.layers:
            modules.append(layer.module(_shape(node), None, parameterization, generator))
            node = layer.trace(node)
        return nn.Sequential(*modules)

    def kernel(self, k: Kernels) -> Kernels:
        for layer in self.layers:
            k = layer.kernel(k)
            if isinstance(k, Kernel) and k.cov2 is k.cov1:  # a block of inputs with themselves
                k = exact_self_pairs(k)
        return k

    def traced_cost(self, node: Nodes, elements: Callable[[Shape], int]) -> Cost:
        total = Cost()
        for layer in self.layers:
            total = total + layer.traced_cost(node, elements)
            node = layer.trace(node)
        return total


def _shape(node: Nodes) -> Shape | tuple[Shape, ...]:
    return tuple(n.shape for n in node) if isinstance(node, tuple) else node.shape


class FanOutModule(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.n


class ParallelModule(nn.Module):
    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(branch(x) for branch, x in zip(self.branches, xs))


class FanInSumModule(nn.Module):
    def forward(self, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class FanInConcatModule(nn.Module):
    def forward(self, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(xs, dim=1)


@dataclass(frozen=True)
class Identity(Layer):
    """The identity: a branch that passes its input on (a residual shortcut)."""

    linear: ClassVar = True

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return nn.Identity()

    def kernel(self, k: Kernel) -> Kernel:
        return k

    def cost(self, elements_in: int, elements_out: int) -> Cost:
        return Cost()


@dataclass(frozen=True)
class FanOut(Layer):
    """n copies of the input, one per branch; the copies are one signal, not independent."""

    n: int

    def check(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 2:
            raise ValueError(f"n must be an int >= 2, got {self.n!r}")

    def trace(self, node: Nodes) -> Nodes:
        if isinstance(node, tuple):
            raise ValueError("FanOut needs one signal, got branches; join them first with FanInSum() or FanInConcat()")
        return (Node(node.shape, node.gaussian, False, node.no_kernel, node.quadrature),) * self.n

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return FanOutModule(self.n)

    def kernel(self, k: Kernel) -> tuple[Kernel, ...]:
        return (k,) * self.n


@dataclass(frozen=True)
class Parallel(Layer):
    """One layer (or ``serial``) per branch: branch b gets the b-th signal."""

    branches: tuple[Layer, ...]

    def check(self) -> None:
        if len(self.branches) < 2:
            raise ValueError(f"parallel needs at least two branches, got {len(self.branches)}")

    def __repr__(self) -> str:
        return f"parallel({', '.join(map(repr, self.branches))})"

    @property
    def positions(self) -> str:  # type: ignore[override]
        return "pool" if any(b.positions == "pool" for b in self.branches) else "local"

    @property
    def kernel_kind(self) -> str:  # type: ignore[override]
        return Chain(self.branches).kernel_kind

    def trace(self, node: Nodes) -> Nodes:
        nodes = _count(node, self)
        if len(nodes) != len(self.branches):
            raise ValueError(f"parallel has {len(self.branches)} branches but receives {len(nodes)} signals")
        out = []
        for b, (branch, n) in enumerate(zip(self.branches, nodes)):
            try:
                out.append(branch.trace(n))
            except ValueError as e:
                raise ValueError(f"branch {b} ({branch}): {e}") from None
        return tuple(out)

    def traced_cost(self, node: Nodes, elements: Callable[[Shape], int]) -> Cost:
        return sum((b.traced_cost(n, elements) for b, n in zip(self.branches, node)), Cost())

    def with_width(self, width: int) -> Layer:
        return Parallel(tuple(b.with_width(width) for b in self.branches))

    def module(self, shape: tuple[Shape, ...], width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return ParallelModule([b.module(s, None, parameterization, generator) for b, s in zip(self.branches, shape)])

    def kernel(self, k: tuple[Kernel, ...]) -> tuple[Kernel, ...]:
        return tuple(branch.kernel(kb) for branch, kb in zip(self.branches, k))


def parallel(*branches: Layer | Serial) -> Parallel:
    """One layer or ``serial`` per branch, as stax's ``parallel``."""
    return Parallel(tuple(as_layer(b) for b in branches))


def _join(nodes: tuple[Node, ...], shape: Shape, no_kernel: str | None) -> Node:
    return Node(shape, all(n.gaussian for n in nodes), all(n.fresh for n in nodes),
                next((n.no_kernel for n in nodes if n.no_kernel), no_kernel), any(n.quadrature for n in nodes))


def _sum_kernels(ks: tuple[Kernel, ...], weight: float) -> Kernel:
    nngp = sum(k.nngp for k in ks) * weight
    ntk = sum(k.ntk for k in ks) * weight
    cov1 = sum(k.cov1 for k in ks) * weight
    cov2 = cov1 if all(k.cov2 is k.cov1 for k in ks) else sum(k.cov2 for k in ks) * weight
    return Kernel(nngp, ntk, cov1, cov2, ks[0].spatial)


@dataclass(frozen=True)
class FanInSum(Layer):
    """The sum of the branches (same shapes); kernel the sum of their kernels (module doc)."""

    def trace(self, node: Nodes) -> Node:
        nodes = _count(node, self)
        shapes = {n.shape for n in nodes}
        if len(shapes) != 1:
            raise ValueError(f"FanInSum needs branches of one shape, got {', '.join(map(str, (n.shape for n in nodes)))}")
        dependent = [b for b, n in enumerate(nodes) if not n.fresh]
        no_kernel = None
        if len(dependent) > 1:
            no_kernel = (f"FanInSum: the kernel of a sum is the sum of the branches' kernels only when all branches but "
                         f"one end in their own Dense or Conv layer; branches {', '.join(map(str, dependent))} do not")
        return _join(nodes, nodes[0].shape, no_kernel)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return FanInSumModule()

    def kernel(self, k: tuple[Kernel, ...]) -> Kernel:
        return _sum_kernels(k, 1.0)


@dataclass(frozen=True)
class FanInConcat(Layer):
    """The branches concatenated along channels (features for vectors); kernel the mean of the
    branches' kernels, the limit of equal widths (module doc)."""

    def trace(self, node: Nodes) -> Node:
        nodes = _count(node, self)
        rest = {n.shape[1:] for n in nodes}
        if len(rest) != 1 or len({len(n.shape) for n in nodes}) != 1:
            raise ValueError("FanInConcat needs branches that differ only in channels, got "
                             f"{', '.join(map(str, (n.shape for n in nodes)))}")
        widths = [n.shape[0] for n in nodes]
        no_kernel = None
        if len(set(widths)) != 1:
            no_kernel = (f"FanInConcat: the kernel is the mean of the branches' kernels, the limit of branches of equal "
                         f"width; got widths {', '.join(map(str, widths))}")
        # Channels of different branches have different covariances: not one Gaussian signal with
        # the mean kernel (as in stax, an activation or LayerNorm may not follow; Dense or Conv may).
        return replace(_join(nodes, (sum(widths), *nodes[0].shape[1:]), no_kernel), gaussian=False)

    def module(self, shape: Shape, width: int | None, parameterization: str,
               generator: torch.Generator | None) -> nn.Module:
        return FanInConcatModule()

    def kernel(self, k: tuple[Kernel, ...]) -> Kernel:
        return _sum_kernels(k, 1.0 / len(k))


@dataclass(frozen=True)
class Residual(Chain):
    """``main(x) + shortcut(x)``: ``FanOut(2) → parallel(main, shortcut) → FanInSum()``.
    Exchange-format entry ``["residual", MAIN, SHORTCUT]`` (an empty SHORTCUT is Identity)."""

    layers: tuple[Layer, ...] = field(init=False)
    main: Layer
    shortcut: Layer = Identity()
    spec_name: ClassVar = "residual"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", (FanOut(2), Parallel((self.main, self.shortcut)), FanInSum()))
        self.check()

    def __repr__(self) -> str:
        return f"residual({self.main!r}, {self.shortcut!r})"

    def with_width(self, width: int) -> Layer:
        return Residual(self.main.with_width(width), self.shortcut.with_width(width))

    def spec(self) -> list:
        from ntkbench.arch.spec import branch_spec

        return ["residual", branch_spec(self.main), branch_spec(self.shortcut)]

    @classmethod
    def from_spec(cls, entry: list, width: int) -> Layer:
        from ntkbench.arch.spec import branch_from_spec

        if len(entry) != 3 or not isinstance(entry[1], list) or not isinstance(entry[2], list):
            raise ValueError(f"a residual entry is ['residual', MAIN, SHORTCUT] with two layer lists, got {entry!r}")
        return cls(branch_from_spec(entry[1], width), branch_from_spec(entry[2], width))


def residual(main: Layer | Serial, shortcut: Layer | Serial = Identity()) -> Residual:
    """``main(x) + shortcut(x)`` (He et al. 2016), as stax's FanOut(2) → parallel → FanInSum()."""
    return Residual(as_layer(main), as_layer(shortcut))
