"""Image benchmarks in torchvision's on-disk layout: mnist, fashion-mnist, cifar10, cifar100, svhn.

Files live under ``<data root>/<task name>/`` (data root: the ``data_root`` option / ``--data-root``,
else ``$NTKBENCH_DATA``, else ``datasets/data/``), exactly where ``torchvision.datasets.<Class>(
root=<data root>/<task name>, download=True)`` puts them:

- ``mnist/MNIST/raw/`` and ``fashion-mnist/FashionMNIST/raw/``: ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, extracted
  (torchvision extracts the ``.gz`` files after downloading; ``.gz`` files alone are not read).
- ``cifar10/cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``.
- ``cifar100/cifar-100-python/``: ``train``, ``test`` (the 100 fine labels).
- ``svhn/``: ``train_32x32.mat``, ``test_32x32.mat`` (the cropped-digits format; no ``extra``).

The files are read here, not through the dataset classes, because those check the files' md5
sums; torchvision serves for downloading (``download``) and for parsing idx files. Nothing is
downloaded unless asked (``--set task.download=true`` or ``make data DATASET=<name>``). Images
become float NCHW in [0, 1] (1×28×28 or 3×32×32), then ``from_arrays`` takes seeded stratified
subsets of the official train/test splits and standardizes per channel.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ntkbench.tasks.base import DATA_ENV, Common, DataError, Task, from_arrays, register_task
from ntkbench.tasks.base import data_root as resolve_root

Arrays = tuple[np.ndarray, np.ndarray]
MNIST_FILES = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


@dataclass(frozen=True)
class Spec:
    """Where one data set's files live under ``<data root>/<name>`` and how to read them."""

    cls: str                  # the torchvision.datasets class that downloads it
    folder: str               # the files' folder, relative to <data root>/<name>
    train: tuple[str, ...]
    test: tuple[str, ...]
    kind: str                 # "idx", "cifar" or "mat"
    num_classes: int
    source: str


SPECS = {
    "mnist": Spec("MNIST", "MNIST/raw", MNIST_FILES[0], MNIST_FILES[1], "idx", 10,
                  "MNIST, http://yann.lecun.com/exdb/mnist/ (torchvision.datasets.MNIST)"),
    "fashion-mnist": Spec("FashionMNIST", "FashionMNIST/raw", MNIST_FILES[0], MNIST_FILES[1], "idx", 10,
                          "Fashion-MNIST, https://github.com/zalandoresearch/fashion-mnist "
                          "(torchvision.datasets.FashionMNIST)"),
    "cifar10": Spec("CIFAR10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                    ("test_batch",), "cifar", 10,
                    "CIFAR-10, https://www.cs.toronto.edu/~kriz/cifar.html (torchvision.datasets.CIFAR10)"),
    "cifar100": Spec("CIFAR100", "cifar-100-python", ("train",), ("test",), "cifar", 100,
                     "CIFAR-100 fine labels, https://www.cs.toronto.edu/~kriz/cifar.html "
                     "(torchvision.datasets.CIFAR100)"),
    "svhn": Spec("SVHN", ".", ("train_32x32.mat",), ("test_32x32.mat",), "mat", 10,
                 "SVHN cropped digits, http://ufldl.stanford.edu/housenumbers/ (torchvision.datasets.SVHN)"),
}


def folder(name: str, root: str | Path | None = None) -> Path:
    """The folder holding the files of data set ``name``."""
    return (resolve_root(root) / name / SPECS[name].folder).resolve()


def download(name: str, data_root: str | Path | None = None) -> Path:
    """Download data set ``name`` with torchvision into ``<data root>/<name>`` (both splits) and
    return the folder of its files; files already present with the right md5 are kept."""
    import torchvision.datasets as tvd

    if name not in SPECS:
        raise ValueError(f"unknown data set {name!r}; choices: {', '.join(SPECS)}")
    cls = getattr(tvd, SPECS[name].cls)
    root = str(resolve_root(data_root) / name)
    splits = [{"split": s} for s in ("train", "test")] if name == "svhn" else [{"train": t} for t in (True, False)]
    try:
        for split in splits:
            cls(root=root, download=True, **split)
    except (OSError, RuntimeError) as e:  # no network, a refused or broken download
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"downloading {name} into {root} failed ({reason}); copy the files there by hand "
                        f"(see datasets/{name}.md)") from None
    return folder(name, data_root)


def _missing_message(name: str, root: Path, missing: list[Path]) -> str:
    spec, where = SPECS[name], folder(name, root)
    gz = [p.name + ".gz" for p in missing if p.with_name(p.name + ".gz").exists()]
    extract = f" Found {', '.join(gz)}: extract them (gunzip) next to them." if gz else ""
    files = spec.train + spec.test
    of = "" if len(missing) == len(files) else f" of {', '.join(files)}"
    return (f"task {name!r}: data not found in {where}: missing {', '.join(p.name for p in missing)}"
            f"{of} (torchvision's {spec.cls} layout).{extract} "
            f"To obtain them run `make data DATASET={name}`, or pass --set task.download=true, or copy the "
            f"files into that folder. The data root is {root}: set it with "
            f"--data-root (task option data_root) or ${DATA_ENV}; the default is datasets/data.")


def _corrupt(name: str, path: Path, what: str) -> DataError:
    return DataError(f"task {name!r}: corrupt data file {path}: {what}. Delete it and run "
                     f"`make data DATASET={name}` (or --set task.download=true), or copy a good copy.")


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """An idx file of uint8 with ``ndim`` dimensions, header checked before torchvision parses it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = path.read_bytes()
    magic = 2051 if ndim == 3 else 2049
    header = 4 * (ndim + 1)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else f"{len(raw)} bytes"
        raise _corrupt(name, path, f"not an idx file of uint8 {ndim}-d arrays (magic {magic} expected, got {got})")
    dims = [int.from_bytes(raw[4 * i: 4 * i + 4], "big") for i in range(1, ndim + 1)]
    if len(raw) != header + int(np.prod(dims)):
        raise _corrupt(name, path, f"truncated or padded idx file: {len(raw)} bytes, its header's shape "
                                   f"{tuple(dims)} needs {header + int(np.prod(dims))}")
    try:
        return (read_image_file if ndim == 3 else read_label_file)(str(path)).numpy()
    except (AssertionError, RuntimeError, ValueError, TypeError, KeyError) as e:
        raise _corrupt(name, path, f"unreadable idx file ({type(e).__name__}: {e})") from e


def _read_mnist(name: str, images: Path, labels: Path) -> Arrays:
    x, y = _read_idx(name, images, 3), _read_idx(name, labels, 1)
    if x.shape[1:] != (28, 28):
        raise _corrupt(name, images, f"images of shape {x.shape[1:]}, expected (28, 28)")
    if len(y) != len(x):
        raise _corrupt(name, labels, f"{len(y)} labels for {len(x)} images in {images.name}")
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def _read_cifar(name: str, paths: list[Path]) -> Arrays:
    key = "fine_labels" if name == "cifar100" else "labels"
    xs, ys = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:  # Python 2 pickles: their str keys load as bytes
                batch = {k.decode("latin1") if isinstance(k, bytes) else k: v
                         for k, v in pickle.load(f, encoding="bytes").items()}
            data, labels = np.asarray(batch["data"]), np.asarray(batch[key])
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError,
                IndexError, ImportError) as e:
            raise _corrupt(name, path, f"truncated or not a CIFAR python batch ({type(e).__name__}: {e})") from e
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
            raise _corrupt(name, path, f"expected uint8 data of shape (N, 3072) and N labels, got data "
                                       f"{data.dtype} {data.shape} and labels of shape {labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))  # R, G, B planes, each 32×32 row-major: already CHW
        ys.append(labels)
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys).astype(np.int64)


def _read_svhn(name: str, path: Path) -> Arrays:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    # loadmat raises NotImplementedError for MATLAB v7.3 (HDF5) files, which SVHN never ships.
    except (ValueError, TypeError, KeyError, OSError, EOFError, NotImplementedError) as e:
        raise _corrupt(name, path, f"truncated or not an SVHN .mat file ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3) or x.ndim != 4 or x.shape[3] != len(y):
        raise _corrupt(name, path, f"expected uint8 X of shape (32, 32, 3, N) and N labels, got X "
                                   f"{x.dtype} {x.shape} and {len(y)} labels")
    y = y.astype(np.int64)
    y[y == 10] = 0  # SVHN labels the digit 0 as 10 (torchvision maps it the same way)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.float32) / 255.0, y  # HWCN -> NCHW


@lru_cache(maxsize=None)
def load(name: str, root: str) -> tuple[Arrays, Arrays]:
    """The full official (train, test) splits of ``name`` under data root ``root``: float32 NCHW
    in [0, 1] and int64 labels, read-only because they are shared through the cache."""
    spec, where = SPECS[name], folder(name, root)
    missing = [where / f for f in spec.train + spec.test if not (where / f).is_file()]
    if missing:
        raise DataError(_missing_message(name, Path(root), missing))
    splits = []
    for files in (spec.train, spec.test):
        paths = [where / f for f in files]
        if spec.kind == "idx":
            x, y = _read_mnist(name, *paths)
        elif spec.kind == "cifar":
            x, y = _read_cifar(name, paths)
        else:
            x, y = _read_svhn(name, paths[0])
        bad = (y < 0) | (y >= spec.num_classes)
        if bad.any():
            raise _corrupt(name, paths[-1], f"label {int(y[bad][0])} outside 0..{spec.num_classes - 1}")
        x.flags.writeable = y.flags.writeable = False
        splits.append((x, y))
    return splits[0], splits[1]


def build(name: str, common: Common, data_root: str | Path | None, download_: bool) -> Task:
    """The task ``name``: downloads first when ``download_``, then ``from_arrays`` on the splits."""
    if not isinstance(download_, bool):
        raise ValueError(f"download must be true or false, got {download_!r}")
    if download_:
        download(name, data_root)
    root = str(resolve_root(data_root).resolve())
    train, test = load(name, root)
    facts = {"source": SPECS[name].source, "data_dir": str(folder(name, root)),
             "split": f"official train/test ({len(train[1])}/{len(test[1])})"}
    return from_arrays(name, train, test, common, facts)


@register_task("mnist")
def mnist(common: Common, data_root: str | None = None, download: bool = False) -> Task:
    """MNIST handwritten digits: 60,000 train / 10,000 test, 1×28×28, 10 classes."""
    return build("mnist", common, data_root, download)


@register_task("fashion-mnist")
def fashion_mnist(common: Common, data_root: str | None = None, download: bool = False) -> Task:
    """Fashion-MNIST (Zalando clothing images): 60,000 train / 10,000 test, 1×28×28, 10 classes."""
    return build("fashion-mnist", common, data_root, download)


@register_task("cifar10")
def cifar10(common: Common, data_root: str | None = None, download: bool = False) -> Task:
    """CIFAR-10: 50,000 train / 10,000 test, 3×32×32, 10 classes."""
    return build("cifar10", common, data_root, download)


@register_task("cifar100")
def cifar100(common: Common, data_root: str | None = None, download: bool = False) -> Task:
    """CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test, 3×32×32."""
    return build("cifar100", common, data_root, download)


@register_task("svhn")
def svhn(common: Common, data_root: str | None = None, download: bool = False) -> Task:
    """SVHN cropped digits (train and test, not extra): 73,257 train / 26,032 test, 3×32×32,
    10 classes (the digit 0, labelled 10 in the files, is class 0)."""
    return build("svhn", common, data_root, download)
