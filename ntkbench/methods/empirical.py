"""The empirical NTK at scale: three ways to compute Θ̂ = J Jᵀ and a cost model that picks one.

J is the Jacobian of the network's kernel rows at θ (``Linearization``: one row per input for
the "sum of logits" kernel, C rows per input for the full kernel; Jacot et al. 2018). N inputs,
R rows per input, P parameters, F the FLOPs of one input's forward pass, A the numbers one
input's forward holds. Following Novak et al. 2022 ("Fast finite width neural tangent kernel"):

- ``contraction``: per-sample Jacobians by ``vmap(jacrev)``, then Θ̂ = J Jᵀ. Cost
  N(1+2R)F + 2(NR)²P FLOPs, N·R·P memory for J. When J does not fit the budget, J is computed in
  row blocks of b inputs: a held panel J_i against every later block J_j, recomputed, so the
  Jacobian cost grows by (B+1)/2 for B blocks while memory stays 2bRP.
- ``ntvp``: NTK-vector products Θ̂ V = J (Jᵀ V). The columns of a block of b inputs are the
  one-hot vectors e_c, whose Jᵀ e_c are per-sample vjps; J(Jᵀ e_c) over the rows are jvps. J is
  never formed; a column block holds b·R vectors of P numbers. Cost N(1+2R)F for the vjps and
  N²·R·F (one jvp per column and row input, upper triangle only) for the products.
- ``sketch``: Φ = J S/√m with S a seeded Gaussian P×m matrix, computed as m jvps without
  forming J (a Johnson-Lindenstrauss sketch; Woodruff 2014, "Sketching as a tool for numerical
  linear algebra"). Θ̂ ≈ ΦΦᵀ is unbiased, E‖ΦΦᵀ − Θ̂‖²_F = ((tr Θ̂)² + ‖Θ̂‖²_F)/m, so the error
  falls like 1/√m. Cost 3mNF + 2(NR)²m, memory N·R·m for Φ. The sketched model f0 + Φ(x) w is
  itself a linear model, f0 + J(x)(S w/√m), so predictions use the same S.

``choose`` picks the cheapest implementation (FLOPs) whose memory fits the budget; the sketch
is an approximation, so ``auto`` only considers it when a sketch dimension is given.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.func import functional_call, jvp, vjp, vmap
from torch.utils.flop_counter import FlopCounterMode

from ntkbench import progress, signals
from ntkbench.arch import Network
from ntkbench.methods.training import Params, jacobian

Implementation = Literal["contraction", "ntvp", "sketch"]
PredictRoute = Literal["jvp", "jacobian"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("contraction", "ntvp", "sketch")


@dataclass(frozen=True)
class Linearization:
    """The network at ``params`` seen through the kernel's rows: g(x) = Σ_c f_c(x)/√C (one row,
    ``kernel="sum"``) or f(x) (C rows, ``kernel="full"``), and its Jacobian J = ∂g/∂θ, whose
    columns follow the order of ``params`` (as ``training.jacobian``)."""

    net: Network
    params: Params
    kernel: Literal["sum", "full"]
    num_classes: int

    @property
    def rows_per_input(self) -> int:
        return 1 if self.kernel == "sum" else self.num_classes

    @property
    def n_params(self) -> int:
        return sum(v.numel() for v in self.params.values())

    def forward(self, x: Tensor) -> Tensor:
        """f(x; θ), (n, C)."""
        return functional_call(self.net, self.params, (x,))

    def jacobian(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """J(x), (len(x)·R, P), by ``vmap(jacrev)``."""
        return jacobian(self.net, self.params, x, self.kernel, self.num_classes, batch_size)

    def jvp(self, x: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
        """f(x; θ), (n, C), and J(x) t for each row t of ``tangents`` (T, P), as (T, n, R);
        one forward-mode pass, vmapped over the tangents, never forming J."""
        def push(t: Params) -> tuple[Tensor, Tensor]:
            return jvp(lambda p: functional_call(self.net, p, (x,)), (self.params,), (t,))

        out, pushed = vmap(push, out_dims=(None, 0))(self._unflatten(tangents))
        if self.kernel == "sum":
            pushed = pushed.sum(-1, keepdim=True) / math.sqrt(self.num_classes)
        return out, pushed

    def vjp(self, x: Tensor, cotangents: Tensor) -> Tensor:
        """J(x)ᵀ c for each c of ``cotangents`` (T, n, R), as (T, P); one backward pass,
        vmapped over the cotangents."""
        _, pull = vjp(lambda p: functional_call(self.net, p, (x,)), self.params)
        if self.kernel == "sum":
            cotangents = cotangents.expand(-1, -1, self.num_classes) / math.sqrt(self.num_classes)
        (grads,) = vmap(pull)(cotangents)
        return torch.cat([grads[k].flatten(1) for k in self.params], dim=1)

    def linear(self, x: Tensor, weights: Tensor, route: PredictRoute = "jvp", centered: bool = False) -> Tensor:
        """f(x; θ) + J(x) w, (n, C), for weights (P, T): T = C columns sharing the sum-of-logits
        kernel, or T = 1 column of the full kernel; ``centered`` drops f(x; θ). ``route="jvp"``
        pushes the T columns forward (one jvp each, J never formed); ``"jacobian"`` forms J(x),
        (n·R, P), and multiplies (see ``predict_route``)."""
        if route == "jacobian":
            jw = (self.jacobian(x) @ weights).reshape(len(x), -1)
            return jw if centered else self.forward(x) + jw
        out, pushed = self.jvp(x, weights.T)
        jw = pushed.permute(1, 0, 2).reshape(out.shape)
        return jw if centered else out + jw

    def _unflatten(self, flat: Tensor) -> Params:
        sizes = [v.numel() for v in self.params.values()]
        return {k: chunk.reshape(len(flat), *v.shape)
                for (k, v), chunk in zip(self.params.items(), flat.split(sizes, dim=1))}


@dataclass(frozen=True)
class Sizes:
    """What the cost model needs: N inputs, R rows per input, P parameters, F forward FLOPs and
    A activations (numbers held) per input, the bytes per number and the sketch's m."""

    n_inputs: int
    rows_per_input: int
    n_params: int
    forward_flops: float
    activations: float
    itemsize: int
    sketch_dim: int | None = None


@dataclass(frozen=True)
class Plan:
    """An implementation with its estimated FLOPs and working memory (bytes, Θ̂ itself not
    included) at the largest ``block`` (inputs per block, or tangents per block for the
    sketch) that fits; ``hold``: the contraction keeps all of J. ``fits`` is False when even
    a block of one exceeds the budget (``memory_bytes`` is then that block's need)."""

    implementation: Implementation
    flops: float
    memory_bytes: float
    block: int
    hold: bool
    fits: bool
    sketch_dim: int | None = None


def measure(lin: Linearization, x: Tensor, sketch_dim: int | None = None) -> Sizes:
    """Sizes for inputs ``x``, from one forward pass of x[:1] (only shapes matter): F, the
    floating-point operations ``torch.utils.flop_counter`` counts (2 per multiply-add of each
    Dense or Conv layer; elementwise work is not counted), and A = the numbers every leaf
    module outputs, residual branches and normalizations included."""
    activations = [float(x[0].numel())]

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        outputs = output if isinstance(output, tuple) else (output,)
        activations.append(float(sum(o[0].numel() for o in outputs)))

    hooks = [m.register_forward_hook(count) for m in lin.net.modules() if not list(m.children())]
    training = lin.net.training
    try:  # in evaluation mode: one input has no batch statistics
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            lin.net.eval()(x[:1])
    finally:
        lin.net.train(training)
        for hook in hooks:
            hook.remove()
    return Sizes(len(x), lin.rows_per_input, lin.n_params, float(counter.get_total_flops()), sum(activations),
                 x.element_size(), sketch_dim)


def estimate(implementation: Implementation, s: Sizes, budget_bytes: float) -> Plan:
    """The plan of ``implementation`` for sizes ``s`` within ``budget_bytes`` of working memory.

    Per input, a Jacobian costs (1+2R)F (a forward and R backward passes) and holds
    R·P + (R+1)·A numbers; a jvp costs F for the primal plus 2F per tangent and holds A plus 2A
    per tangent. ``contraction`` holds J when N·R·P + one input's Jacobian fits, otherwise
    panels of b inputs; ``ntvp`` takes column and row blocks of b inputs; the ``sketch`` holds
    Φ (N·R·m) and blocks of b tangents over min(b, N) inputs.
    """
    n, r, p, f, a, m = s.n_inputs, s.rows_per_input, s.n_params, s.forward_flops, s.activations, s.sketch_dim
    jac_memory = r * p + (r + 1) * a  # numbers per input of a vmap(jacrev) block
    if implementation == "contraction":
        held = n * r * p
        if (held + jac_memory) * s.itemsize <= budget_bytes:
            block = _largest(lambda b: (held + b * jac_memory) * s.itemsize <= budget_bytes, n)
            return Plan(implementation, n * (1 + 2 * r) * f + 2 * (n * r) ** 2 * p,
                        (held + block * jac_memory) * s.itemsize, block, True, True)

        def memory(b: int) -> float:  # a held panel of b inputs plus a block being computed
            return b * (r * p + jac_memory) * s.itemsize

        def flops(b: int) -> float:
            blocks = math.ceil(n / b)
            return (blocks + 1) / 2 * n * (1 + 2 * r) * f + (n * r) ** 2 * p * (blocks + 1) / blocks
    elif implementation == "ntvp":
        def memory(b: int) -> float:  # b·R vectors Jᵀe_c (and their vjp), jvps of b·R tangents over b inputs
            return (2 * b * r * p + b * (r + 1) * a + 2 * b * b * r * a) * s.itemsize

        def flops(b: int) -> float:
            blocks = math.ceil(n / b)
            return n * (1 + 2 * r) * f + blocks * (blocks + 1) / 2 * (b * f + 2 * b * b * r * f)
    elif implementation == "sketch":
        if m is None:
            raise ValueError("the sketch needs a sketch dimension m; set entk.sketch_dim")

        def memory(b: int) -> float:  # Φ, b columns of S, jvps of b tangents over min(b, N) inputs
            return (n * r * m + b * p + min(b, n) * a + 2 * b * min(b, n) * a) * s.itemsize

        def flops(b: int) -> float:
            return math.ceil(m / b) * n * f + 2 * m * n * f + 2 * (n * r) ** 2 * m
    else:
        raise ValueError(f"unknown eNTK implementation {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    limit = n if implementation != "sketch" else m
    fits = memory(1) <= budget_bytes
    block = _largest(lambda b: memory(b) <= budget_bytes, limit) if fits else 1
    return Plan(implementation, flops(block), memory(block), block, False, fits, m if implementation == "sketch" else None)


def predict_route(s: Sizes, columns: int) -> tuple[PredictRoute, float, float]:
    """How ``Linearization.linear`` computes f(x) + J(x) w for weights of T = ``columns``
    columns: the route with fewer FLOPs per input, with its FLOPs and bytes per input. The jvp
    route costs (1 + 2T)·F and holds (1 + 2T)·A numbers; the Jacobian route a forward for
    f(x), J(x) at (1 + 2R)·F and the product at 2·R·P·T, holding R·P + (R + 1)·A. The sum-of-logits
    kernel has T = C and R = 1, so with many classes the Jacobian route wins by about C/2
    (ImageNet's 1000: ~70x measured on WRN-10-1 at 64×64); the full kernel has T = 1 and keeps
    the jvp."""
    t, r, f, a, p = columns, s.rows_per_input, s.forward_flops, s.activations, s.n_params
    jvp_flops, jacobian_flops = (1 + 2 * t) * f, (2 + 2 * r) * f + 2 * r * p * t
    if jacobian_flops < jvp_flops:
        return "jacobian", jacobian_flops, (r * p + (r + 1) * a) * s.itemsize
    return "jvp", jvp_flops, (1 + 2 * t) * a * s.itemsize


def choose(s: Sizes, budget_bytes: float, implementation: Literal["auto"] | Implementation = "auto",
           exclude: tuple[Implementation, ...] = ()) -> tuple[Plan, dict[str, Plan]]:
    """The plan to run and every candidate's estimate. ``auto`` takes the fewest FLOPs among
    the candidates that fit: contraction and ntvp, and the sketch when ``s.sketch_dim`` is set,
    minus ``exclude``. A forced or chosen implementation that does not fit raises."""
    names = [implementation] if implementation != "auto" else [
        name for name in IMPLEMENTATIONS
        if name not in exclude and (name != "sketch" or s.sketch_dim is not None)]
    plans = {name: estimate(name, s, budget_bytes) for name in names}
    fitting = [plan for plan in plans.values() if plan.fits]
    if not fitting:
        needs = ", ".join(f"{name} {plan.memory_bytes / 2**30:.3g} GB" for name, plan in plans.items())
        raise ValueError(f"no eNTK implementation fits the working memory of {budget_bytes / 2**30:.3g} GB "
                         f"(needs at least: {needs}); raise entk.memory_budget_gb or lower max_n_train")
    return min(fitting, key=lambda plan: plan.flops), plans


def _largest(ok, limit: int) -> int:
    """The largest b in [1, limit] with ok(b), for ok true at 1 and monotone."""
    low, high = 1, limit
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def contraction_kernel(lin: Linearization, x: Tensor, plan: Plan) -> Tensor:
    """Θ̂ = J Jᵀ, accumulated over the upper blocks Θ̂_ij = J_i J_jᵀ (i ≤ j) of ``plan.block``
    inputs, each J_j recomputed; diagonal blocks are symmetrized."""
    r = lin.rows_per_input
    blocks = x.split(plan.block)
    k = x.new_empty(len(x) * r, len(x) * r)
    start = 0
    for i, xi in progress.steps(enumerate(blocks), "eNTK blocks", total=len(blocks), hide=len(blocks) < 2):
        signals.check()
        ji = lin.jacobian(xi, plan.block)
        rows = slice(start * r, (start + len(xi)) * r)
        k[rows, rows] = _symmetric(ji @ ji.T)
        other = start + len(xi)
        for xj in blocks[i + 1:]:
            cols = slice(other * r, (other + len(xj)) * r)
            k[rows, cols] = ji @ lin.jacobian(xj, plan.block).T
            k[cols, rows] = k[rows, cols].T
            other += len(xj)
        start += len(xi)
    return k


def ntvp_kernel(lin: Linearization, x: Tensor, plan: Plan) -> Tensor:
    """Θ̂ by NTK-vector products: for each column block B, the vectors Jᵀe_c (c in B) are the
    per-sample vjps of B's inputs (vmap over the one-hot basis), and Θ̂[A, B] = J_A (Jᵀ E_B)
    are jvps of those vectors over each earlier row block A; the lower part is the transpose."""
    r = lin.rows_per_input
    blocks = x.split(plan.block)
    k = x.new_empty(len(x) * r, len(x) * r)
    col = 0
    for j, xj in progress.steps(enumerate(blocks), "eNTK blocks", total=len(blocks), hide=len(blocks) < 2):
        signals.check()
        vectors = lin.jacobian(xj, plan.block)  # (|B|·R, P): Jᵀe_c for the block's columns
        cols = slice(col * r, (col + len(xj)) * r)
        row = 0
        for i, xi in enumerate(blocks[:j + 1]):
            rows = slice(row * r, (row + len(xi)) * r)
            _, pushed = lin.jvp(xi, vectors)  # (|B|·R, |A|, R)
            block = pushed.permute(1, 2, 0).reshape(len(xi) * r, -1)
            k[rows, cols] = _symmetric(block) if i == j else block
            if i != j:
                k[cols, rows] = block.T
            row += len(xi)
        col += len(xj)
    return k


def projection(lin: Linearization, start: int, stop: int, seed: int) -> Tensor:
    """Columns start..stop−1 of the Gaussian sketch S, as rows (stop−start, P). Column k is
    drawn on the parameters' device from its own generator, seeded by a 32-bit hash of
    (seed, k) (the CPU generator keeps 32 bits of a seed), so S does not depend on the block
    sizes; it does depend on the device's generator."""
    first = next(iter(lin.params.values()))
    generator = torch.Generator(first.device)
    columns = []
    for k in range(start, stop):
        generator.manual_seed(int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=4).digest(), "little"))
        columns.append(torch.randn(lin.n_params, generator=generator, device=first.device, dtype=first.dtype))
    return torch.stack(columns)


def sketch_features(lin: Linearization, x: Tensor, sketch_dim: int, seed: int, block: int) -> Tensor:
    """Φ = J S/√m, (N·R, m), as jvps of ``block`` columns of S at a time over ``block`` inputs."""
    r = lin.rows_per_input
    phi = x.new_empty(len(x) * r, sketch_dim)
    for start in range(0, sketch_dim, block):
        stop = min(start + block, sketch_dim)
        tangents = projection(lin, start, stop, seed)
        row = 0
        for chunk in x.split(block):
            _, pushed = lin.jvp(chunk, tangents)
            phi[row * r:(row + len(chunk)) * r, start:stop] = pushed.permute(1, 2, 0).reshape(len(chunk) * r, -1)
            row += len(chunk)
    return phi / math.sqrt(sketch_dim)


def sketch_weights(lin: Linearization, weights: Tensor, seed: int, block: int) -> Tensor:
    """Parameter-space weights S w/√m, (P, T), of sketch weights w (m, T): f0 + Φ(x) w =
    f0 + J(x)(S w/√m)."""
    sketch_dim = len(weights)
    out = weights.new_zeros(lin.n_params, weights.shape[1])
    for start in range(0, sketch_dim, block):
        stop = min(start + block, sketch_dim)
        out += projection(lin, start, stop, seed).T @ weights[start:stop]
    return out / math.sqrt(sketch_dim)


def transpose_product(lin: Linearization, x: Tensor, alpha: Tensor, block: int) -> Tensor:
    """w = Jᵀα, (P, T), for α (N·R, T) with input-major rows: Σ over blocks of ``block``
    inputs of one vjp each, never forming J."""
    r, t = lin.rows_per_input, alpha.shape[1]
    out = alpha.new_zeros(lin.n_params, t)
    for start in range(0, len(x), block):
        chunk = x[start:start + block]
        cotangents = alpha[start * r:(start + len(chunk)) * r].reshape(len(chunk), r, t).permute(2, 0, 1)
        out += lin.vjp(chunk, cotangents).T
    return out


def gram_blocks(lin: Linearization, x: Tensor, targets: Tensor, block: int) -> tuple[Tensor, Tensor, float]:
    """JᵀJ (P×P), JᵀY and ‖J‖²_F = tr Θ̂ for the primal solve, accumulated over row blocks
    of J so that J is never held whole."""
    r = lin.rows_per_input
    gram = x.new_zeros(lin.n_params, lin.n_params)
    cross = x.new_zeros(lin.n_params, targets.shape[1])
    trace = 0.0
    for start in range(0, len(x), block):
        j = lin.jacobian(x[start:start + block], block)
        gram += j.T @ j
        cross += j.T @ targets[start * r:start * r + len(j)]
        trace += float(j.square().sum())
    return gram, cross, trace


def features(lin: Linearization, x: Tensor, plan: Plan, seed: int) -> Tensor | None:
    """The explicit feature rows when a plan holds them: J (contraction holding J) or Φ
    (sketch); None when the kernel is built block by block."""
    if plan.implementation == "sketch":
        return sketch_features(lin, x, plan.sketch_dim, seed, plan.block)
    if plan.implementation == "contraction" and plan.hold:
        return lin.jacobian(x, plan.block)
    return None


def train_kernel(lin: Linearization, x: Tensor, plan: Plan, seed: int = 0) -> Tensor:
    """Θ̂(X, X), (N·R, N·R), by the plan's implementation (the sketch's ΦΦᵀ for ``sketch``)."""
    held = features(lin, x, plan, seed)
    if held is not None:
        return held @ held.T
    return ntvp_kernel(lin, x, plan) if plan.implementation == "ntvp" else contraction_kernel(lin, x, plan)


def _symmetric(k: Tensor) -> Tensor:
    return (k + k.T) / 2

