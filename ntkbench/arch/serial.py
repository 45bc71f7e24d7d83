"""``serial``: compose layers into one architecture that gives both the finite network
(``module``) and its exact infinite-width kernels (``kernel``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Literal

import torch
from torch import nn

from ntkbench import progress, signals
from ntkbench.arch.combinators import Chain, as_layer
from ntkbench.arch.kernel import Kernel, exact_self_pairs, full_to_diag, input_kernel, map_tensors
from ntkbench.arch.layers import PARAMETERIZATIONS, Cost, Layer, Node, Shape

# Elements of one pair tensor per block. On the CPU, blocks that stay in cache (256 Ki float64 =
# 2 MiB) run 5x faster than 128 MiB ones (measured on CNN-GAP 8x8, 2 cores); on a GPU large
# blocks amortize launches. The layer updates keep a few such tensors alive at once.
BLOCK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
Step = Callable[[Kernel], Kernel]
KernelMethod = Literal["exact", "quadrature", "monte_carlo"]


class Network(nn.Sequential):
    """The finite network: ``nn.Sequential`` that checks the per-sample input shape."""

    def __init__(self, layers: list[nn.Module], input_shape: Shape) -> None:
        super().__init__(*layers)
        self.input_shape = input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input has per-sample shape {tuple(x.shape[1:])}, but the network was built for {self.input_shape}"
            )
        return super().forward(x)


class Serial:
    """A sequence of layers (any of which may be a combinator). Build it with ``serial(*layers)``."""

    def __init__(self, layers: tuple[Layer | Serial, ...]) -> None:
        if not layers:
            raise ValueError("serial() needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Layer, Serial)):
                raise ValueError(f"layer {i}: expected a Layer such as Dense(...) or ReLU(), got {layer!r}")
        self.layers = tuple(as_layer(layer) for layer in layers)
        Chain(self.layers)  # checks every layer, naming its position

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"

    def trace(self, input_shape: Shape) -> list[Node | tuple[Node, ...]]:
        """The traced node (``layers.Node``) before each layer and after the last; raises on any
        shape mismatch, naming the layer."""
        nodes: list[Node | tuple[Node, ...]] = [Node(tuple(input_shape))]
        if len(nodes[0].shape) not in (1, 3) or min(nodes[0].shape, default=0) < 1:
            raise ValueError(f"input shape must be (d,) for vectors or (C, H, W) for images, got {nodes[0].shape}")
        for i, layer in enumerate(self.layers):
            try:
                nodes.append(layer.trace(nodes[-1]))
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer}): {e}") from None
        return nodes

    def shapes(self, input_shape: Shape) -> list[Shape]:
        """Per-sample shapes before each layer and after the last; raises on any mismatch."""
        return [tuple(n.shape for n in node) if isinstance(node, tuple) else node.shape
                for node in self.trace(input_shape)]

    def output(self, input_shape: Shape) -> Node:
        """The traced output: one vector signal, or a ValueError that says what to add."""
        out = self.trace(input_shape)[-1]
        if isinstance(out, tuple):
            raise ValueError(f"the network ends in {len(out)} branches; join them with FanInSum() or FanInConcat()")
        if len(out.shape) != 1:
            raise ValueError(f"the network's output has shape {out.shape}; it must end in vectors: "
                             "add Flatten() or GlobalAvgPool()")
        return out

    def kernel_method(self, input_shape: Shape) -> KernelMethod:
        """How the kernel of this network is computed for inputs of ``input_shape``: "exact"
        (closed forms throughout), "quadrature" (some layer integrates numerically) or
        "monte_carlo" (some layer or combinator has no kernel; see ``no_kernel``)."""
        out = self.output(input_shape)
        return "monte_carlo" if out.no_kernel else "quadrature" if out.quadrature else "exact"

    def no_kernel(self, input_shape: Shape) -> str | None:
        """Why this network has no exact kernel for ``input_shape`` (None: it has one)."""
        return self.output(input_shape).no_kernel

    def module(self, input_shape: Shape, num_outputs: int, parameterization: str = "ntk",
               generator: torch.Generator | None = None, width: int | None = None) -> Network:
        """The finite network for inputs of per-sample ``input_shape``. The last readout layer's
        (Dense's) width becomes ``num_outputs``; ``width``, when given, replaces every other
        Dense width and Conv channel count. Parameters are float32 and drawn from ``generator``."""
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        readouts = [i for i, layer in enumerate(self.layers) if layer.readout]
        if not readouts:
            raise ValueError(f"{self} has no Dense layer to produce the {num_outputs} outputs")
        arch = self if width is None else Serial(tuple(layer.with_width(width) for layer in self.layers))
        arch = replace_width(arch, readouts[-1], num_outputs)
        arch.output(input_shape)
        shapes = arch.shapes(input_shape)
        modules = [layer.module(shapes[i], num_outputs if i == readouts[-1] else None, parameterization, generator)
                   for i, layer in enumerate(arch.layers)]
        return Network(modules, tuple(input_shape))

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor | None = None, *, dtype: torch.dtype = torch.float64,
               block_size: int | None = None, fused: bool | None = None, method: str = "exact",
               n_samples: int = 64, width: int = 512, seed: int = 0, reference: torch.Tensor | None = None) -> Kernel:
        """Infinite-width NNGP and NTK of the network between rows of ``x1`` and ``x2``.

        ``method="exact"`` (the default) computes them in closed form (or by quadrature for
        ``Elementwise`` layers), on the inputs' device in ``dtype``, block by block over input
        pairs so that memory stays bounded; for ``x2=None`` (or ``x2 is x1``) only the upper
        blocks of the symmetric kernel are computed. Returns a ``Kernel`` whose nngp and ntk are
        (N1, N2) and whose cov1, cov2 are the kernels' diagonals k(x, x). A network with a layer
        or combinator that has no closed form (``no_kernel``) raises and names it.

        ``fused`` runs each Conv/Dense + ReLU/Erf pair as one Triton pass (``arch.fused``); the
        default ``None`` fuses on CUDA and uses the pure-torch path, the reference, elsewhere.

        ``method="monte_carlo"`` averages the empirical NNGP and NTK of ``n_samples`` finite
        networks of hidden width ``width`` drawn from ``seed`` (``arch.monte_carlo``), for any
        network; the result carries per-entry standard errors. ``reference`` is the batch whose
        statistics BatchNorm uses (default x2, or x1 for the symmetric kernel).
        """
        if method == "monte_carlo":
            from ntkbench.arch.monte_carlo import monte_carlo_kernel

            return monte_carlo_kernel(self, x1, x2, n_samples=n_samples, width=width, seed=seed, dtype=dtype,
                                      block_size=block_size, reference=reference)
        if method != "exact":
            raise ValueError(f"method must be 'exact' or 'monte_carlo', got {method!r}")
        symmetric = x2 is None or x2 is x1
        x1 = self._check_input(x1, "x1").to(dtype)
        x2 = x1 if symmetric else self._check_input(x2, "x2").to(dtype)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 and x2 must have the same per-sample shape, got {tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}")
        input_shape = tuple(x1.shape[1:])
        no_kernel = self.no_kernel(input_shape)
        if no_kernel:
            raise ValueError(f"{no_kernel}; pass method='monte_carlo' to arch.kernel "
                             "(or kernel_method=monte_carlo to the ntk and nngp methods)")
        spatial = self._input_spatial(input_shape)
        if spatial == "none" and x1.dim() == 4:
            # A leading Flatten: x·x'/(C·H·W) is Flatten's mean over positions of Σ_c x_c x'_c / C,
            # without the (N1, N2, H, W) tensor of per-position kernels.
            x1 = x1.flatten(1)
            x2 = x1 if symmetric else x2.flatten(1)
        b = block_size or self.block_side(input_shape, x1.device)
        steps = self._steps(x1.device, dtype, x1.device.type == "cuda" if fused is None else fused)

        n1, n2 = len(x1), len(x2)
        nngp = x1.new_empty(n1, n2)
        ntk = x1.new_empty(n1, n2)
        cov1 = x1.new_empty(n1)
        cov2 = cov1 if symmetric else x1.new_empty(n2)
        blocks = [(i, j) for i in range(0, n1, b) for j in range(i if symmetric else 0, n2, b)]
        for i, j in progress.steps(blocks, "kernel blocks", hide=len(blocks) < 2):
            signals.check()
            same = symmetric and i == j
            rows = x1[i:i + b]
            k = self._kernel_block(rows, rows if same else x2[j:j + b], spatial, steps)
            if same:  # remove rounding asymmetry so that the train kernel is exactly symmetric
                k = replace(k, nngp=(k.nngp + k.nngp.T) / 2, ntk=(k.ntk + k.ntk.T) / 2)
            nngp[i:i + b, j:j + b], ntk[i:i + b, j:j + b] = k.nngp, k.ntk
            cov1[i:i + b] = k.cov1
            if not symmetric:
                cov2[j:j + b] = k.cov2
            elif not same:
                nngp[j:j + b, i:i + b], ntk[j:j + b, i:i + b] = k.nngp.T, k.ntk.T
        return Kernel(nngp, ntk, cov1, cov2, "none")

    def pair_elements(self, input_shape: Shape) -> int:
        """Elements of one input pair's pair tensor at the input resolution, the largest in the
        network: 1 for vectors, H·W for a Flatten readout, (H·W)² with pooling."""
        positions = math.prod(input_shape[1:])  # H·W for images, 1 for vectors
        return {"none": 1, "diag": positions, "full": positions**2}[self._input_spatial(input_shape)]

    def block_side(self, input_shape: Shape, device: torch.device) -> int:
        """The default block side: b² pairs fill one pair tensor of ``BLOCK_ELEMENTS``."""
        budget = BLOCK_ELEMENTS.get(device.type, BLOCK_ELEMENTS["cuda"])
        return max(1, math.isqrt(budget // self.pair_elements(input_shape)))

    def cost(self, input_shape: Shape, fused: bool = False) -> Cost:
        """Work per kernel entry from the layers' declared costs (``Layer.cost``): the input
        kernel (2·C operations per position pair), then each layer at the pair-tensor size of its
        place in the network. With ``fused``, an affine layer and the activation fused with it
        write their pair tensors once (``arch.fused``)."""
        spatial = self._input_spatial(input_shape)
        pools = self._pools()

        def elements(i: int) -> Callable[[Shape], int]:
            full = spatial == "full" and pools and i <= pools[-1]
            return lambda shape: 1 if len(shape) == 1 or spatial == "none" else math.prod(shape[1:]) ** (2 if full else 1)

        first = (math.prod(input_shape),) if spatial == "none" else input_shape
        total = Cost(2.0 * first[0] * elements(0)(first), 2.0 * elements(0)(first))
        nodes = self.trace(input_shape)
        for i, layer in enumerate(self.layers):
            step = layer.traced_cost(nodes[i], elements(i))
            if fused and i > 0 and self._fusable(self.layers[i - 1], layer):
                step = Cost(step.flops, 0.0, step.maps)
            total = total + step
        return total

    def _input_spatial(self, input_shape: Shape) -> str:
        if len(input_shape) == 1 or self.layers[0].positions == "flatten":
            return "none"
        return "full" if self._pools() else "diag"

    def _pools(self) -> list[int]:
        """Indices of the layers that mix positions (pooling, or a branch with pooling)."""
        return [i for i, layer in enumerate(self.layers) if layer.positions == "pool"]

    @staticmethod
    def _fusable(affine: Layer, act: Layer) -> bool:
        return affine.fusable == "affine" and act.fusable == "activation"

    def _steps(self, device: torch.device, dtype: torch.dtype, fused: bool) -> list[tuple[int, Step]]:
        """The kernel updates in order, each with the index of its last layer. With ``fused``,
        each affine layer followed by an activation that declare themselves ``fusable`` is one
        Triton pass (``arch.fused``)."""
        if not fused:
            return [(i, layer.kernel) for i, layer in enumerate(self.layers)]
        from ntkbench.arch import fused as triton_path  # imported here: CPU-only installs may lack Triton

        triton_path.check(device, dtype)
        steps: list[tuple[int, Step]] = []
        i = 0
        while i < len(self.layers):
            if i + 1 < len(self.layers) and self._fusable(self.layers[i], self.layers[i + 1]):
                steps.append((i + 1, partial(triton_path.affine_nonlinearity, affine=self.layers[i], act=self.layers[i + 1])))
                i += 2
            else:
                steps.append((i, self.layers[i].kernel))
                i += 1
        return steps

    def _kernel_block(self, x1: torch.Tensor, x2: torch.Tensor, spatial: str, steps: list[tuple[int, Step]]) -> Kernel:
        k = input_kernel(x1, x2, spatial)
        pools = self._pools()
        for last, step in steps:
            k = step(k)
            if pools and last == pools[-1]:
                # After the last pooling only a Flatten readout remains: keep same-position terms.
                k = _each(k, lambda kb: replace(map_tensors(kb, lambda t, _: full_to_diag(t)), spatial="diag")
                          if kb.spatial == "full" else kb)
            if x2 is x1:
                k = _each(k, exact_self_pairs)
        return k

    def _check_input(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 4) or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (N, d) or (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        bad = (~torch.isfinite(x)).flatten(1).any(1)
        if bad.any():
            raise ValueError(f"{name} has NaN or inf in sample {int(bad.nonzero()[0])}; inputs must be finite")
        return x


def _each(k: Kernel | tuple[Kernel, ...], fn: Callable[[Kernel], Kernel]) -> Kernel | tuple[Kernel, ...]:
    """``fn`` on a kernel, or on each branch's kernel between a FanOut and its fan-in."""
    return tuple(fn(kb) for kb in k) if isinstance(k, tuple) else fn(k)


def replace_width(arch: Serial, index: int, width: int) -> Serial:
    """The same architecture with the Dense at ``index`` given another width."""
    layers = list(arch.layers)
    layers[index] = replace(layers[index], width=width)
    return Serial(tuple(layers))


def serial(*layers: Layer | Serial) -> Serial:
    """Compose layers in order, as neural-tangents' ``stax.serial``; a ``serial`` among them is
    nested as one layer."""
    return Serial(layers)
