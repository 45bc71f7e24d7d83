"""The task registry and the preparation every task shares: a seeded stratified subset,
standardization with training-split statistics, and label noise on the training labels."""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ntkbench.registry import Registry, unknown_message

# Independent random streams derived from ``seed``, so that e.g. label noise never moves the subset.
TRAIN_STREAM, TEST_STREAM, NOISE_STREAM = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task, ready to fit and evaluate.

    ``train`` and ``test`` are ``(x, y)``: ``x`` float32 of shape ``(n, *input_shape)`` (images
    NCHW, tabular data ``(n, d)``), ``y`` int64 class indices in ``[0, num_classes)``. ``params``
    holds the resolved options and preprocessing facts (sizes, seed, label noise, how the inputs
    were standardized, the data's source and split), for logging. Tasks compare by identity.
    """

    name: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    input_shape: tuple[int, ...]
    params: dict[str, object]


@dataclass(frozen=True)
class Common:
    """The generic options every task accepts; checked on construction.

    ``n_train``/``n_test``: sizes of the seeded stratified subsets (``None``: the task's
    default, for real data the whole split). ``seed``: drives every random choice of the task.
    ``label_noise``: the fraction of training labels resampled uniformly from the classes.
    """

    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    label_noise: float = 0.0
    zca: float | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        p = self.label_noise
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"label_noise must be a number in [0, 1], got {p!r}")
        object.__setattr__(self, "label_noise", float(p))
        z = self.zca
        if z is not None and (not isinstance(z, numbers.Real) or isinstance(z, bool) or not z > 0):
            raise ValueError(f"zca must be a regularization strength > 0 (e.g. 0.1) or None, got {z!r}")


COMMON_OPTIONS = tuple(f.name for f in fields(Common))
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "datasets" / "data"
DATA_ENV = "NTKBENCH_DATA"


class DataError(ValueError):
    """Missing or corrupt data files; the message names the files, the folder searched and
    how to obtain the data."""


def data_root(option: str | Path | None = None) -> Path:
    """Where datasets live: the ``data_root`` option (``--data-root``), else ``$NTKBENCH_DATA``,
    else ``datasets/data/`` in the repository (git-ignored)."""
    return Path(option or os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT)

TASKS: Registry[Callable[..., Task]] = Registry("task")
register_task = TASKS.register
"""Register a builder ``builder(common: Common, **options) -> Task`` under a name; its own
options are keyword parameters with defaults, the generic ones arrive in ``common``."""


def get(name: str, **options: object) -> Task:
    """Build the registered task ``name``.

    Every task accepts the generic options of ``Common`` (n_train, n_test, seed, label_noise)
    plus its builder's own keyword options. Unknown names raise ``UnknownNameError`` listing the
    tasks; unknown options raise ``ValueError`` listing the valid ones.
    """
    builder = TASKS.get(name)
    own = list(inspect.signature(builder).parameters)[1:]
    valid = option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(unknown_message(f"unknown option(s) {{}} for task {name!r}", unknown, valid, "Valid options"))
    common = Common(**{k: v for k, v in options.items() if k in COMMON_OPTIONS})
    return builder(common, **{k: v for k, v in options.items() if k in own})


def option_names(name: str) -> list[str]:
    """The options task ``name`` accepts: the generic ones of ``Common``, then its builder's own."""
    return [*COMMON_OPTIONS, *list(inspect.signature(TASKS.get(name)).parameters)[1:]]


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task names matching the shell-style ``pattern``, sorted."""
    return TASKS.list(pattern)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, or a ``ValueError`` naming the option when it is not an int >= minimum."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def random_stream(seed: int, stream: int) -> np.random.Generator:
    """The numpy generator for one of the task's independent random streams."""
    return np.random.default_rng([seed, stream])


def stratified_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a random subset of size ``n`` with class proportions kept.

    Each class gets ``floor(n·count/total)`` samples; the remaining ones go to the classes
    with the largest remainders (ties to the lower class index). Samples within a class are
    drawn uniformly without replacement.
    """
    classes, counts = np.unique(y, return_counts=True)
    take, remainder = np.divmod(n * counts, len(y))
    take[np.argsort(-remainder, kind="stable")[: n - take.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def standardize(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor, str]:
    """Subtract the training mean and divide by the training std (population std; a std of 0
    counts as 1), per channel for images (N, C, H, W) and per feature for vectors (N, d).

    The statistics are computed in float64 in two passes over chunks of samples, so that a large
    split (100,000 images of 64×64) is never copied to float64 whole; both splits come back as
    float32, with a description.
    """
    image = x_train.dim() == 4
    flat = x_train.flatten(2) if image else x_train.unsqueeze(2)  # (N, features, positions)
    count = flat.shape[0] * flat.shape[2]
    total = sum(c.double().sum((0, 2)) for c in flat.split(_CHUNK))
    mean = total / count
    square = sum((c.double() - mean[:, None]).square().sum((0, 2)) for c in flat.split(_CHUNK))
    std = (square / count).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    shape = (1, -1, 1, 1) if image else (1, -1)
    mean, std = mean.reshape(shape), std.reshape(shape)
    how = "per-channel train statistics" if image else "per-feature train statistics"

    def apply(x: Tensor) -> Tensor:  # one float32 result; float64 inputs keep float64 arithmetic
        if x.dtype == torch.float64:
            return ((x - mean) / std).float()
        return (x.float() - mean.float()).div_(std.float())

    return apply(x_train), apply(x_test), how


_CHUNK = 4096


def preprocess(x_train: Tensor, x_test: Tensor, common: Common) -> tuple[Tensor, Tensor, str]:
    """Standardize with train statistics, then ZCA-whiten when ``common.zca`` is set; returns
    both splits and a description for the run's params."""
    x_train, x_test, how = standardize(x_train, x_test)
    if common.zca is not None:
        x_train, x_test = zca_whiten(x_train, x_test, common.zca)
        how += f", then ZCA whitening with strength {common.zca:g} (train statistics)"
    return x_train, x_test, how


def zca_whiten(x_train: Tensor, x_test: Tensor, strength: float) -> tuple[Tensor, Tensor]:
    """ZCA whitening of flattened inputs with train statistics (Lee et al. 2020, "Finite versus
    infinite neural networks"; Shankar et al. 2020): with Σ = X̄ᵀX̄/n = U diag(s) Uᵀ,

    x ↦ (x − μ) U diag(1/√(s + strength·tr(Σ)/D)) Uᵀ.

    The eigendecomposition is D×D for D = C·H·W features (3,072 for CIFAR, 12,288 at 64×64).
    """
    shape = x_train.shape[1:]
    a, b = x_train.double().flatten(1), x_test.double().flatten(1)
    mean = a.mean(0)
    cov = (a - mean).T @ (a - mean) / len(a)
    s, u = torch.linalg.eigh(cov)
    scale = (s.clamp_min(0) + strength * cov.trace() / len(s)).rsqrt()
    w = (u * scale) @ u.T
    return ((a - mean) @ w).float().reshape(-1, *shape), ((b - mean) @ w).float().reshape(-1, *shape)


def add_label_noise(y: Tensor, p: float, num_classes: int, rng: np.random.Generator) -> tuple[Tensor, int]:
    """Resample exactly ``round(p·n)`` labels, at random positions, uniformly from the classes
    (a resampled label may equal the old one). Returns the new labels and the count."""
    k = round(p * len(y))
    positions = torch.from_numpy(rng.choice(len(y), k, replace=False))
    noisy = y.clone()
    noisy[positions] = torch.from_numpy(rng.integers(num_classes, size=k))
    return noisy, k


def from_arrays(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                common: Common, facts: dict[str, object], flip: bool = False) -> Task:
    """A task from full raw train/test splits: stratified subsets to ``common.n_train`` and
    ``common.n_test``, standardization, then label noise. Classes are the labels 0..max.

    ``flip`` appends each training image mirrored left-right with its label (the training set
    doubles; params ``n_train`` counts both copies, ``n_original`` the images drawn). This is
    how a kernel method takes flip augmentation (Lee et al. 2020, "Finite versus infinite
    neural networks", Sec. 3.8), so every method sees the same augmented set. Label noise is
    then drawn over all 2n labels."""
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    splits = []
    for (x, y), option, n, stream in ((train, "n_train", common.n_train, TRAIN_STREAM),
                                      (test, "n_test", common.n_test, TEST_STREAM)):
        if n is not None and n > len(y):
            raise ValueError(f"{option}={n} is more than task {name!r} has: {len(y)} {option[2:]} samples")
        if n is not None:
            index = stratified_indices(y, n, random_stream(common.seed, stream))
            x, y = x[index], y[index]
        splits.append((torch.tensor(x), torch.tensor(y, dtype=torch.int64)))  # copies: x, y may be cached
    (x_train, y_train), (x_test, y_test) = splits
    if flip:
        facts = {**facts, "flip": True, "n_original": len(y_train)}
        x_train, y_train = torch.cat([x_train, x_train.flip(-1)]), torch.cat([y_train, y_train])
    x_train, x_test, how = preprocess(x_train, x_test, common)
    return finish(name, (x_train, y_train), (x_test, y_test), num_classes, common, {"standardize": how, **facts})


IDENTITY_EXCLUDED = frozenset({"seed", "n_noisy", "data_dir", "format"})
"""Task params that do not define the experiment: the seed and what it alone decides, and where
(and in which of two equivalent file formats) the data were found."""


def identity_options(params: dict[str, object]) -> dict[str, object]:
    """The task params that define the experiment (a run's ``Config.task_options``)."""
    return {k: v for k, v in params.items() if k not in IDENTITY_EXCLUDED}


def finish(name: str, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int,
           common: Common, facts: dict[str, object]) -> Task:
    """The task from its final inputs and clean labels: adds ``common.label_noise`` to the
    training labels and records the sizes, seed, noise and ``facts`` in ``params``."""
    y_train, n_noisy = add_label_noise(train[1], common.label_noise, num_classes,
                                       random_stream(common.seed, NOISE_STREAM))
    params = {"n_train": len(y_train), "n_test": len(test[1]), "seed": common.seed,
              "label_noise": common.label_noise, "n_noisy": n_noisy, **facts}
    return Task(name, (train[0], y_train), test, num_classes, tuple(train[0].shape[1:]), params)
