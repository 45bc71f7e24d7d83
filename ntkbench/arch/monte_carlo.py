"""Monte Carlo kernels of any network: the empirical NNGP and NTK averaged over independently
initialized finite networks of the same description.

For S networks f_s of hidden width n (every Dense width and Conv channel count; one output),
drawn in the NTK parameterization by ``Serial.module``,

    nngp(x, x') ≈ (1/S) Σ_s f_s(x) f_s(x'),      ntk(x, x') ≈ (1/S) Σ_s J_s(x) J_s(x')ᵀ,   J = ∂f/∂θ.

In the NTK parameterization the output covariance tends to the NNGP kernel and J Jᵀ to the NTK
as n → ∞ (Neal 1996, Lee et al. 2018; Jacot et al. 2018), so the estimate carries noise that
falls as 1/√S and a finite-width bias that falls as 1/n (Hanin & Nica 2020). The reported standard
error of an entry, the sample standard deviation over the S networks divided by √S, measures
the noise only: choose n so that the bias is below the precision you need.

When the network ends in its readout Dense (z = w_std/√d · W h + b_std · b), the NNGP term of a
sample is f's covariance over that layer's weights given the features h, in closed form:

    E_{W,b}[f(x) f(x')] = w_std² · h(x)·h(x')/d + b_std²,

the same expectation as f(x) f(x') (so the same limit and the same width bias) without the
readout's draw of one Gaussian, whose noise alone is √2 times the kernel's scale per sample: at
width 512 this cuts the NNGP's variance per sample by about 100x. A network that ends otherwise
(say Dense then Erf) uses f(x) f(x') itself.

Where the exact kernel does not exist this is the kernel; the finite-only layers behave as in
training:

- ``BatchNorm``: per-channel mean and (biased) variance of the *reference batch*, the training
  inputs (``reference``; by default x2, or x1 for the symmetric train kernel), as one train-mode
  forward pass computes them; they are then held fixed while f and J are computed for every
  input, so an entry depends only on its two inputs and the reference batch, never on how the
  inputs are blocked. J does not differentiate through the statistics: it is the Jacobian of the
  network whose normalization constants are the reference batch's (γ and β are parameters and
  are differentiated).
- ``Dropout``: train mode, a mask per input, as each input sees in a training step and as
  ``stax.Dropout(mode="train")``: an input paired with itself meets one mask, so the diagonal
  carries the dropout noise (the 1/(1 − rate) boost of the limit), and two different inputs meet
  independent masks. The mask is keyed by the sample and the input's values, so an input meets
  the same mask in every block and every call: a kernel assembled from blocks (train blocks,
  test rows against the train set) is the kernel computed at once, and stays positive
  semi-definite. Eval mode would make Dropout the identity, whose kernel ``method="exact"``
  already gives without the layer; a user who asks for Dropout's kernel wants its noise.
- ``MaxPool``: the plain maximum; its (sub)gradient flows to the maximal entry.

Reproducible: a generator seeded with ``seed`` draws one seed per sample, which draws that
sample's network and, with the input's key, its Dropout masks; so the first S samples of a
larger run are this run's S, and no value depends on the blocking over inputs beyond rounding
in the matrix products.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from ntkbench import progress, signals
from ntkbench.arch.kernel import Kernel
from ntkbench.arch.layers import Shape
from ntkbench.arch.normalization import fix_batch_statistics
from ntkbench.arch.serial import Serial

# One block of per-input gradients (b inputs × P parameters) is kept near 256 MiB.
JACOBIAN_BYTES = 1 << 28
SEED_RANGE = 1 << 62
Params = dict[str, Tensor]


def monte_carlo_kernel(arch: Serial, x1: Tensor, x2: Tensor | None = None, *, n_samples: int = 64, width: int = 512,
                       seed: int = 0, dtype: torch.dtype = torch.float64, block_size: int | None = None,
                       reference: Tensor | None = None) -> Kernel:
    """Monte Carlo NNGP and NTK of ``arch`` between the rows of ``x1`` and ``x2`` (module doc).

    Averages ``n_samples`` networks of hidden width ``width`` drawn from ``seed``, computed in
    ``dtype`` on x1's device, ``block_size`` inputs at a time (default: as many as keep one
    block of gradients near ``JACOBIAN_BYTES``). ``x2=None`` (or ``x2 is x1``) is the symmetric
    train kernel, exactly symmetric. ``reference`` is the batch whose statistics BatchNorm uses
    (default x2, or x1 when symmetric): pass the whole training set when computing its kernel in
    blocks. Returns a ``Kernel`` with nngp, ntk (N1, N2), their standard
    errors nngp_se, ntk_se (N1, N2), and cov1, cov2: the NNGP diagonals k(x, x) estimated the
    same way.
    """
    _check_options(arch, n_samples, width, seed, dtype, block_size)
    symmetric = x2 is None or x2 is x1
    x1 = arch._check_input(x1, "x1").to(dtype)
    x2 = x1 if symmetric else arch._check_input(x2, "x2").to(device=x1.device, dtype=dtype)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same per-sample shape, got {tuple(x1.shape[1:])} "
                         f"and {tuple(x2.shape[1:])}")
    if reference is None:
        reference = x2
    else:
        reference = arch._check_input(reference, "reference").to(device=x1.device, dtype=dtype)
        if reference.shape[1:] != x1.shape[1:]:
            raise ValueError(f"reference must have the inputs' per-sample shape {tuple(x1.shape[1:])}, "
                             f"got {tuple(reference.shape[1:])}")
    input_shape = tuple(x1.shape[1:])
    arch.output(input_shape)  # a shape mismatch names its layer here
    seeds = torch.randint(SEED_RANGE, (n_samples,), generator=torch.Generator().manual_seed(seed)).tolist()
    nngp, ntk, cov1, cov2 = _Moments(), _Moments(), _Moments(), _Moments()
    layout, keys1, keys2, keys_ref = None, None, None, None
    for sample_seed in progress.steps(seeds, "Monte Carlo samples"):
        signals.check()
        network = SampledNetwork(arch, input_shape, width, sample_seed, x1.device, dtype, layout)
        if layout is None and network.layout.dropouts:  # Dropout masks follow the inputs' keys
            keys = {id(x): input_keys(x) for x in {id(x): x for x in (x1, x2, reference)}.values()}
            keys1, keys2, keys_ref = keys[id(x1)], keys[id(x2)], keys[id(reference)]
        layout = network.layout
        block = block_size or network.block_size()
        network.fit_batchnorm(reference, keys_ref, block)
        k_nngp, k_ntk, diag1, diag2 = sample_kernel(network, x1, x2, keys1, keys2, symmetric, block)
        nngp.add(k_nngp)
        ntk.add(k_ntk)
        cov1.add(diag1)
        if not symmetric:
            cov2.add(diag2)
    diag1 = cov1.mean
    return Kernel(nngp.mean, ntk.mean, diag1, diag1 if symmetric else cov2.mean, "none",
                  nngp.standard_error(), ntk.standard_error())


def _check_options(arch: Serial, n_samples: int, width: int, seed: int, dtype: torch.dtype,
                   block_size: int | None) -> None:
    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(arch, Serial):
        raise ValueError(f"arch must be a serial(...) architecture, got {type(arch).__name__}")
    if not whole(n_samples) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 (the standard error needs two samples), got {n_samples!r}")
    if not whole(width) or width < 1:
        raise ValueError(f"width must be a positive int (the hidden width of the sampled networks), got {width!r}")
    if not whole(seed) or not 0 <= seed < 1 << 63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype such as torch.float64, got {dtype!r}")
    if block_size is not None and (not whole(block_size) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")


@dataclass(frozen=True)
class Layout:
    """What a sampled network needs beyond its parameters: each Dropout mask's buffer name, rate
    and per-input shape, and the BatchNorm modules' names in the order they are called."""

    dropouts: tuple[tuple[str, float, Shape], ...]
    batchnorms: tuple[str, ...]


class MaskedDropout(nn.Module):
    """Dropout whose mask is the buffer ``mask``: (N, *shape) for a batch, (*shape) for one
    input under ``vmap``, already scaled by 1/(1 − rate). Passed in by ``functional_call``."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask


class SampledNetwork:
    """One network of the estimate, in eval mode, with Dropout masks drawn per input and
    BatchNorm statistics frozen from the reference batch (``fit_batchnorm``)."""

    def __init__(self, arch: Serial, input_shape: Shape, width: int, seed: int, device: torch.device,
                 dtype: torch.dtype, layout: Layout | None = None) -> None:
        net = arch.module(input_shape, 1, "ntk", torch.Generator().manual_seed(seed), width=width)
        for name, module in list(net.named_modules()):
            if isinstance(module, nn.Dropout):
                owner, _, attr = name.rpartition(".")
                setattr(net.get_submodule(owner), attr, MaskedDropout(module.p))
        self.net = net.to(device=device, dtype=dtype).eval()
        self.seed, self.device, self.dtype = seed, device, dtype
        self.params: Params = {k: v.detach() for k, v in self.net.named_parameters()}
        self.layout = layout or self._probe(input_shape)
        self.batchnorms = [self.net.get_submodule(name) for name in self.layout.batchnorms]
        # The readout Dense at the end, whose weights the NNGP term integrates out (module doc).
        self.head, self.head_params, self.nngp_offset = None, {}, 0.0
        if arch.layers[-1].readout:
            last = str(len(self.net) - 1)
            self.head, self.body = self.net[-1], nn.Sequential(*list(self.net)[:-1])
            self.head_params = {name: f"{last}.{name}" for name, _ in self.head.named_parameters()}
            self.nngp_offset = self.head.b_scale ** 2

    def _probe(self, input_shape: Shape) -> Layout:
        """The Dropout masks and the BatchNorm layers in the order the forward pass calls them,
        from one forward pass of a zero input; the same for every network of one estimate."""
        dropouts, batchnorms, handles = [], [], []
        for name, module in self.net.named_modules():
            if isinstance(module, MaskedDropout):
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, name=name: dropouts.append((f"{name}.mask", m.rate, tuple(args[0].shape[1:])))))
            elif isinstance(module, _BatchNorm):
                handles.append(module.register_forward_pre_hook(lambda m, args, name=name: batchnorms.append(name)))
        try:
            with torch.no_grad():
                self.net(torch.zeros(1, *input_shape, device=self.device, dtype=self.dtype))
        finally:
            for handle in handles:
                handle.remove()
        return Layout(tuple(dropouts), tuple(batchnorms))

    def block_size(self) -> int:
        n_params = sum(v.numel() for v in self.params.values())
        return max(1, JACOBIAN_BYTES // (n_params * self.dtype.itemsize))

    def masks(self, keys: list[int] | None) -> Params:
        """The Dropout masks of a batch of inputs with ``keys`` (``input_keys``), each drawn from
        its own generator seeded by (this sample's seed, the input's key)."""
        if not self.layout.dropouts:
            return {}
        drawn = []
        for key in keys:
            generator = torch.Generator().manual_seed(_mix(self.seed, key))
            drawn.append([torch.empty(shape, dtype=torch.float64).bernoulli_(1 - rate, generator=generator) / (1 - rate)
                          for _, rate, shape in self.layout.dropouts])
        return {name: torch.stack([masks[i] for masks in drawn]).to(self.device, self.dtype)
                for i, (name, _, _) in enumerate(self.layout.dropouts)}

    def forward(self, x: Tensor, keys: list[int] | None) -> Tensor:
        """f(x) for a batch of inputs with ``keys`` (None without Dropout), (len(x), 1)."""
        return functional_call(self.net, {**self.params, **self.masks(keys)}, (x,))

    def features_and_gradients(self, x: Tensor, keys: list[int] | None) -> tuple[Tensor, Params]:
        """φ(x_i) with φ(x)·φ(x') + ``nngp_offset`` the sample's NNGP term (w_std/√d · h(x), or
        f(x) itself when the network does not end in its readout; see the module doc), (len(x), D),
        and ∂f(x_i)/∂θ per parameter tensor, (len(x), *shape). Each input alone (``vmap`` of
        ``grad``), so no input sees another."""
        head, head_names = self.head, set(self.head_params.values())

        def f(params: Params, masks: Params, xi: Tensor) -> tuple[Tensor, Tensor]:
            if head is None:
                out = functional_call(self.net, {**params, **masks}, (xi[None],))[0]
                return out[0], out
            body = {k: v for k, v in params.items() if k not in head_names}
            h = functional_call(self.body, {**body, **masks}, (xi[None],))
            out = functional_call(head, {k: params[name] for k, name in self.head_params.items()}, (h,))
            return out[0, 0], h[0] * head.w_scale

        masks = self.masks(keys)
        grads, (_, phi) = vmap(grad_and_value(f, has_aux=True), in_dims=(None, 0, 0))(self.params, masks, x)
        return phi, grads

    def fit_batchnorm(self, x_ref: Tensor, keys: list[int] | None, block: int) -> None:
        """Freeze each BatchNorm's running statistics to the per-channel mean and biased variance
        of its input over the reference batch x_ref, as training normalizes: in eval mode the
        network then computes exactly the train-mode forward pass of x_ref
        (``normalization.fix_batch_statistics``, in blocks of ``block``)."""
        fix_batch_statistics(list(self.batchnorms), lambda a, b: self.forward(x_ref[a:b], _part(keys, a, b - a)),
                             len(x_ref), block)


def sample_kernel(network: SampledNetwork, x1: Tensor, x2: Tensor, keys1: list[int] | None, keys2: list[int] | None,
                  symmetric: bool, block: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One network's NNGP term (f(x1) f(x2)ᵀ, or its expectation over the readout: module doc)
    and J(x1) J(x2)ᵀ, (N1, N2) each, and the NNGP term's self terms k(x, x) of x1 and x2.
    ``keys1``, ``keys2``: the inputs' keys for Dropout masks (``input_keys``; None without it).
    Block by block over inputs: a block of x1's gradients is held while x2's blocks are computed
    against it (for the symmetric kernel, only the upper blocks, mirrored), so memory stays at
    two blocks of gradients."""
    n1, n2 = len(x1), len(x2)
    nngp, ntk = x1.new_empty(n1, n2), x1.new_empty(n1, n2)
    diag1 = x1.new_empty(n1)
    diag2 = diag1 if symmetric else x1.new_empty(n2)
    for i in range(0, n1, block):
        phi_i, grads_i = network.features_and_gradients(x1[i:i + block], _part(keys1, i, block))
        diag1[i:i + block] = phi_i.square().sum(1) + network.nngp_offset
        for j in range(i if symmetric else 0, n2, block):
            signals.check()
            same = symmetric and j == i
            phi_j, grads_j = (phi_i, grads_i) if same else network.features_and_gradients(
                x2[j:j + block], _part(keys2, j, block))
            if not symmetric and i == 0:
                diag2[j:j + block] = phi_j.square().sum(1) + network.nngp_offset
            pair_nngp = phi_i @ phi_j.T + network.nngp_offset
            pair_ntk = sum(a.flatten(1) @ b.flatten(1).T for a, b in zip(grads_i.values(), grads_j.values()))
            if same:  # a block with itself: exactly symmetric, its diagonal the self terms
                pair_nngp = (pair_nngp + pair_nngp.T) / 2
                pair_nngp.diagonal().copy_(diag1[i:i + block])
                pair_ntk = (pair_ntk + pair_ntk.T) / 2
            nngp[i:i + block, j:j + block], ntk[i:i + block, j:j + block] = pair_nngp, pair_ntk
            if symmetric and not same:
                nngp[j:j + block, i:i + block], ntk[j:j + block, i:i + block] = pair_nngp.T, pair_ntk.T
    return nngp, ntk, diag1, diag2


class _Moments:
    """Count, mean and sum of squared deviations m2 of a stream of batches, merged as Chan et
    al. (1979): n = na + nb, δ = mean_b − mean_a, mean = mean_a + δ·nb/n,
    m2 = m2_a + m2_b + δ²·na·nb/n. A single sample is a batch of one with m2 = 0 (Welford's
    update). Elementwise, so a symmetric stream keeps a symmetric mean."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, mean: Tensor, m2: Tensor | None = None, n: int = 1) -> _Moments:
        if self.mean is None:
            self.n, self.mean = n, mean.clone()
            self.m2 = torch.zeros_like(mean) if m2 is None else m2.clone()
            return self
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += delta.square() * (self.n * n / total)
        if m2 is not None:
            self.m2 += m2
        self.n = total
        return self

    def standard_error(self) -> Tensor:
        """√(m2 / (n − 1)) / √n: the sample standard deviation of the mean."""
        return (self.m2 / (self.n * (self.n - 1))).sqrt()


def _part(keys: list[int] | None, start: int, block: int) -> list[int] | None:
    return None if keys is None else keys[start:start + block]


def input_keys(x: Tensor) -> list[int]:
    """A 62-bit key per input from its values (BLAKE2b of its bytes in the working dtype): equal
    inputs share it, so they meet the same Dropout masks in any block or call."""
    rows = x.detach().cpu().contiguous()
    return [int.from_bytes(hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest(), "little") % SEED_RANGE
            for row in rows]


def _mix(*values: int) -> int:
    """A 62-bit seed from integers (BLAKE2b), for generators keyed by (sample seed, input key)."""
    digest = hashlib.blake2b(",".join(map(str, values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % SEED_RANGE
