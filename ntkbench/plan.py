"""``ntkbench plan``: what the infinite-width kernel of a task and an architecture will cost,
before anyone pays for it.

For the training set X (n) and test set X* (m) the kernel methods need K(X, X), of which the
upper triangle n(n+1)/2 is computed, and K(X*, X): E = n(n+1)/2 + m·n kernel entries. Each entry
costs what ``Serial.cost`` counts from the layers' declarations (floating-point operations,
pair-tensor elements moved, transcendental maps). Two times come out of it:

- measured: this device's kernel rate, timed on random inputs of the task's shape (the same
  ``arch.kernel`` path, ``dtype``), times E. A pair of 64×64 inputs through a pooled network
  takes seconds on a CPU, so the measurement starts at one pair and stops after
  ``measure_seconds``.
- H200 bound: the fused path's ceiling on an NVIDIA H200 (50.6/54.7 TFLOP/s fp32/fp64, 4.2 TB/s;
  an acos/asin at libdevice's 38/118 flops), the most one such GPU could do, so the least
  GPU-hours the kernel takes there.

Memory is the train kernel's nngp and ntk (2·n²·bytes), and the solver is the one
``solvers.choose_solver`` would pick on this device with the kernel methods' default budget and
the kernel in the kernel cache on disk, as ``ntkbench run`` keeps it.
Task sizes come from loading the task, except for the downsampled-ImageNet tasks, whose sizes are
known without their files (``SIZES``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ntkbench import arch as arch_lib
from ntkbench import format as fmt
from ntkbench.arch import Cost, Serial
from ntkbench.methods.base import memory_budget
from ntkbench.solvers import SolverPolicy, choose_solver

H200 = {"flops": {torch.float32: 50.6e12, torch.float64: 54.7e12}, "bytes": 4.2e12}
ACOS_FLOPS = {4: 38, 8: 118}  # libdevice's arithmetic instructions for sm_90, each an FMA slot
# Downsampled ImageNet (Chrabaszcz et al. 2017): training images of the 1000 classes, 50 validation
# images per class; a class has at most 1300 training images, the bound used for class subsets.
IMAGENET_TRAIN, IMAGENET_PER_CLASS, IMAGENET_VAL_PER_CLASS = 1_281_167, 1300, 50
SIZES = {"imagenet32": (1000, 32), "imagenet64": (1000, 64), "imagenet64-10": (10, 64), "imagenet64-100": (100, 64)}
DEFAULT_MEMORY_GB = 64.0  # the kernel methods' default memory_budget_gb


def h200_pairs_per_s(cost: Cost, dtype: torch.dtype) -> float:
    """The fused path's ceiling on one H200: t >= max(flops / F, bytes / B) per pair."""
    item = torch.finfo(dtype).bits // 8
    compute = (cost.flops + cost.maps * ACOS_FLOPS[item]) / H200["flops"][dtype]
    return 1 / max(compute, cost.elements * item / H200["bytes"])


@dataclass(frozen=True)
class Sizes:
    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    num_classes: int
    source: str


def task_sizes(task: str, options: dict[str, object]) -> Sizes:
    """n_train, n_test, input shape and classes of ``task`` with its options."""
    if task in SIZES:
        classes, side = SIZES[task]
        per_class = options.get("n_per_class")
        full = IMAGENET_TRAIN if classes == 1000 else classes * IMAGENET_PER_CLASS
        n_train = int(options.get("n_train") or (classes * int(per_class) if per_class else full))
        n_test = int(options.get("n_test") or classes * IMAGENET_VAL_PER_CLASS)
        bound = "" if classes == 1000 or per_class or options.get("n_train") else " (at most 1300 a class)"
        return Sizes(n_train, n_test, (3, side, side), classes, f"known sizes of {task}{bound}")
    from ntkbench import tasks

    data = tasks.get(task, **options)
    return Sizes(len(data.train[0]), len(data.test[0]), data.input_shape, data.num_classes, "loaded")


def measure(arch: Serial, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
            seconds: float) -> tuple[float, int]:
    """Kernel pairs per second on ``device``: m×m cross kernels of random inputs, m = 1, 2, 4, ...
    until one takes ``seconds`` or m reaches 64. Returns the rate and the pairs timed."""
    g = torch.Generator().manual_seed(0)
    m, rate, pairs = 1, 0.0, 0
    while True:
        x1 = torch.randn(m, *input_shape, generator=g).to(device)
        x2 = torch.randn(m, *input_shape, generator=g).to(device)
        start = time.perf_counter()
        arch.kernel(x1, x2, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        rate, pairs = m * m / max(elapsed, 1e-9), m * m
        if elapsed >= seconds or m >= 64:
            return rate, pairs
        m *= 2


def plan(task: str, arch_name: str, options: dict[str, object], dtype: torch.dtype, device: torch.device,
         measure_seconds: float = 1.0) -> list[str]:
    """The plan's lines (module doc)."""
    groups = {p: {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(p + ".")} for p in ("task", "arch")}
    unknown = sorted(k for k in options if not k.startswith(("task.", "arch.")))
    if unknown:
        raise ValueError(f"plan takes task.* and arch.* settings, got {', '.join(unknown)}")
    arch_options = arch_lib.resolve(arch_name, **groups["arch"])
    arch = arch_lib.get(arch_name, **arch_options)
    sizes = task_sizes(task, groups["task"])
    n, m, shape = sizes.n_train, sizes.n_test, sizes.input_shape
    kernel_method = arch.kernel_method(shape)
    entries = n * (n + 1) / 2 + m * n
    cost = arch.cost(shape, fused=device.type == "cuda")
    item = torch.finfo(dtype).bits // 8
    h200 = h200_pairs_per_s(arch.cost(shape, fused=True), dtype)
    work = (f"  work: {cost.flops:.3g} flop, {cost.elements * item:.3g} bytes, {cost.maps:.3g} maps per entry; "
            f"{cost.flops * entries:.3g} flop in all")
    lines = [
        f"plan: {task} with {arch_name} ({' '.join(f'{k}={v}' for k, v in arch_options.items())}), "
        f"ntk and nngp in {str(dtype).removeprefix('torch.')} on {device.type}",
        f"  data: n_train {n:,}, n_test {m:,}, input {'×'.join(map(str, shape))}, {sizes.num_classes} classes "
        f"({sizes.source})",
        f"  kernel: {kernel_method}; {arch.pair_elements(shape):,} pair-tensor elements per input pair",
        f"  entries: {n * n:.3g} train×train ({n * (n + 1) / 2:.3g} computed, the upper triangle) + {m * n:.3g} "
        f"test×train = {entries:.3g}",
    ]
    if kernel_method == "monte_carlo":
        lines.append(f"  no closed-form kernel ({arch.no_kernel(shape)}): the Monte Carlo estimate costs "
                     "n_samples networks' eNTKs; not estimated here")
    else:
        lines.append(work)
        rate, pairs = measure(arch, shape, dtype, device, measure_seconds)
        hours = entries / rate / 3600
        lines.append(f"  measured on this {device.type}: {rate:.3g} pairs/s ({pairs} timed) → {hours:.3g} device-hours"
                     + (f" ({fmt.seconds(hours * 3600)})" if hours < 48 else ""))
        lines.append(f"  one H200 at best (fused-path ceiling): {h200:.3g} pairs/s → at least "
                     f"{entries / h200 / 3600:.3g} GPU-hours")
    kernel_bytes = 2 * n * n * item
    policy = SolverPolicy.for_device(device)
    budget = memory_budget(DEFAULT_MEMORY_GB, device)
    # ntkbench run keeps its kernels in the kernel cache, on disk (--kernel-cache)
    choice = choose_solver(n, sizes.num_classes, dtype, budget, False, "auto", policy, False, 100, kernel_on_disk=True)
    lines.append(f"  memory: train kernel (nngp and ntk) {fmt.megabytes(kernel_bytes / 2**20)}; test×train "
                 f"{fmt.megabytes(2 * m * n * item / 2**20)}; budget {fmt.megabytes(budget / 2**20)}")
    lines.append(f"  solver: {choice.solver} ({choice.reason})")
    return lines

