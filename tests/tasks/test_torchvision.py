"""The torchvision-layout image tasks on tiny fixtures written in the real on-disk formats
(idx, CIFAR python pickles, SVHN .mat); nothing is downloaded."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import ntkbench.tasks.torchvision as tv
from ntkbench.tasks.base import Common, DataError, get

N_TRAIN, N_TEST = 40, 20


def labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """Every class at least once, the rest random."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.arange(num_classes), rng.integers(num_classes, size=n - num_classes)])


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, name: str) -> Path:
    raw = root / name / tv.SPECS[name].folder
    raw.mkdir(parents=True)
    for (images, labs), n, seed in zip(tv.MNIST_FILES, (N_TRAIN, N_TEST), (0, 1)):
        x = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 3, 7] = 255
        write_idx(raw / images, x)
        write_idx(raw / labs, labels(n, 10, seed))
    return raw


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 str (SHORT_BINSTRING/BINSTRING), as in the real CIFAR files,
    which were written by Python 2: their keys load as bytes with encoding="bytes" and as str
    with encoding="latin1" (torchvision's choice)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as out:
        Py2Pickler(out, protocol=2).dump(obj)


def write_cifar(root: Path, name: str) -> Path:
    spec = tv.SPECS[name]
    folder = root / name / spec.folder
    folder.mkdir(parents=True)
    key = b"fine_labels" if name == "cifar100" else b"labels"
    per_file = {"cifar10": 100, "cifar100": 500}[name]
    for files, n in ((spec.train, per_file), (spec.test, 100 if name == "cifar10" else 200)):
        for i, f in enumerate(files):
            data = np.zeros((n, 3072), np.uint8)
            data[0, 0 * 1024 + 2 * 32 + 5] = 255  # R plane, h=2, w=5
            data[0, 2 * 1024 + 31 * 32 + 0] = 51  # B plane, h=31, w=0
            batch = {b"batch_label": b"batch", key: labels(n, spec.num_classes, i).tolist(), b"data": data}
            if name == "cifar100":
                batch[b"coarse_labels"] = [0] * n
            dump_py2(batch, folder / f)
    meta = ("batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]}) if name == "cifar10" else \
        ("meta", {b"fine_label_names": [b"c%d" % i for i in range(100)]})
    dump_py2(meta[1], folder / meta[0])
    return folder


def write_svhn(root: Path) -> Path:
    folder = root / "svhn"
    folder.mkdir(parents=True)
    for f, n in (("train_32x32.mat", N_TRAIN), ("test_32x32.mat", N_TEST)):
        x = np.zeros((32, 32, 3, n), np.uint8)
        x[4, 9, 1, 0] = 255  # h=4, w=9, G channel, sample 0
        y = labels(n, 10, 0) + 0
        y[y == 0] = 10  # the files label the digit 0 as 10
        scipy.io.savemat(folder / f, {"X": x, "y": y.reshape(-1, 1).astype(np.uint8)})
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, "mnist")
    write_mnist(root, "fashion-mnist")
    write_cifar(root, "cifar10")
    write_cifar(root, "cifar100")
    write_svhn(root)
    return root


SIZES = {"mnist": (40, 20, (1, 28, 28), 10), "fashion-mnist": (40, 20, (1, 28, 28), 10),
         "cifar10": (500, 100, (3, 32, 32), 10), "cifar100": (500, 200, (3, 32, 32), 100),
         "svhn": (40, 20, (3, 32, 32), 10)}


@pytest.mark.parametrize("name", list(SIZES))
def test_shapes_dtypes_and_labels(root: Path, name: str) -> None:
    n_train, n_test, shape, num_classes = SIZES[name]
    task = get(name, data_root=str(root))
    assert task.num_classes == num_classes and task.input_shape == shape
    for (x, y), n in ((task.train, n_train), (task.test, n_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (n, *shape)
        assert int(y.min()) == 0 and int(y.max()) == num_classes - 1
        assert torch.isfinite(x).all()
    x = task.train[0].double()
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(shape[0], dtype=torch.float64), atol=1e-5)
    assert task.params["split"] == f"official train/test ({n_train}/{n_test})"
    assert task.params["data_dir"] == str(tv.folder(name, root))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pixels_land_in_chw(root: Path, name: str) -> None:
    (x, y), _ = tv.load(name, str(root.resolve()))
    assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    assert x[0, 0, 2, 5] == 1.0 and x[0, 2, 31, 0] == pytest.approx(0.2)
    assert np.count_nonzero(x[0]) == 2
    expected_first = labels({"cifar10": 100, "cifar100": 500}[name], tv.SPECS[name].num_classes, 0)
    np.testing.assert_array_equal(y[: len(expected_first)], expected_first)


def test_mnist_and_svhn_pixels_and_labels(root: Path) -> None:
    (x, y), _ = tv.load("mnist", str(root.resolve()))
    assert x.shape == (N_TRAIN, 1, 28, 28) and x[0, 0, 3, 7] == 1.0
    np.testing.assert_array_equal(y, labels(N_TRAIN, 10, 0))
    (x, y), _ = tv.load("svhn", str(root.resolve()))
    assert x.shape == (N_TRAIN, 3, 32, 32) and x[0, 1, 4, 9] == 1.0 and np.count_nonzero(x[0]) == 1
    np.testing.assert_array_equal(y, labels(N_TRAIN, 10, 0))  # 10 in the file is digit 0


def test_stratified_subsets_and_cache(root: Path) -> None:
    task = get("cifar10", data_root=str(root), n_train=50, n_test=30, seed=3)
    assert len(task.train[1]) == 50 and len(task.test[1]) == 30
    _, counts = np.unique(task.train[1].numpy(), return_counts=True)
    full = np.bincount(tv.load("cifar10", str(root.resolve()))[0][1], minlength=10)
    assert np.all(np.abs(counts - 50 * full / full.sum()) < 1)
    again = get("cifar10", data_root=str(root), n_train=50, n_test=30, seed=3)
    assert torch.equal(task.train[0], again.train[0]) and torch.equal(task.train[1], again.train[1])
    with pytest.raises(ValueError, match="n_train=501 is more than"):
        get("cifar10", data_root=str(root), n_train=501)


def test_data_root_from_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NTKBENCH_DATA", str(root))
    assert get("svhn", n_train=20).input_shape == (3, 32, 32)


@pytest.mark.parametrize("name", list(tv.SPECS))
def test_missing_data_message(tmp_path: Path, name: str) -> None:
    spec = tv.SPECS[name]
    where = str(tv.folder(name, tmp_path))
    with pytest.raises(DataError) as info:
        tv.build(name, Common(), str(tmp_path), False)
    message = str(info.value)
    for needed in (repr(name), where, *spec.train, *spec.test, f"make data DATASET={name}",
                   "--set task.download=true", "NTKBENCH_DATA", "--data-root"):
        assert needed in message, needed


def test_gz_only_mnist_says_extract(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, "mnist")
    (raw / "t10k-labels-idx1-ubyte").rename(raw / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte .*Found t10k-labels-idx1-ubyte\.gz: extract"):
        get("mnist", data_root=str(tmp_path))


def test_truncated_idx(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, "fashion-mnist")
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"corrupt data file .*train-images-idx3-ubyte: truncated .*needs 31376"):
        get("fashion-mnist", data_root=str(tmp_path))
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an idx file.*make data DATASET=fashion-mnist"):
        get("fashion-mnist", data_root=str(tmp_path))
    write_idx(path, np.zeros((N_TRAIN, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 39 labels for 40 images"):
        get("fashion-mnist", data_root=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_truncated_or_wrong_pickle(tmp_path: Path, name: str) -> None:
    folder = write_cifar(tmp_path, name)
    path = folder / tv.SPECS[name].test[0]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=rf"corrupt data file .*{path.name}: truncated or not a CIFAR python batch"):
        get(name, data_root=str(tmp_path))
    with open(path, "wb") as out:  # a Python 3 pickle, str keys
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1], "fine_labels": [0, 1]}, out, 2)
    with pytest.raises(DataError, match=r"expected uint8 data of shape \(N, 3072\)"):
        get(name, data_root=str(tmp_path))


def test_corrupt_svhn(tmp_path: Path) -> None:
    folder = write_svhn(tmp_path)
    path = folder / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"corrupt data file .*test_32x32\.mat: truncated or not an SVHN"):
        get("svhn", data_root=str(tmp_path))


def test_bad_download_option_and_download_names(root: Path) -> None:
    with pytest.raises(ValueError, match="download must be true or false"):
        get("svhn", data_root=str(root), download="yes")
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        tv.download("imagenet", str(root))


@pytest.mark.parametrize("name", list(tv.SPECS))
def test_agrees_with_torchvision_datasets(root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's own classes, md5 checks bypassed, read the same arrays from the fixtures."""
    import sys

    import torchvision.datasets as tvd

    cls = getattr(tvd, tv.SPECS[name].cls)
    monkeypatch.setattr(sys.modules[cls.__module__], "check_integrity", lambda *args, **kwargs: True)
    for i, (x, y) in enumerate(tv.load(name, str(root.resolve()))):
        if name == "svhn":
            ds = cls(str(root / name), split=("train", "test")[i])
            data, targets = ds.data, ds.labels  # N, C, H, W
        else:
            ds = cls(str(root / name), train=i == 0)
            data, targets = np.asarray(ds.data), np.asarray(ds.targets)
            data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        np.testing.assert_array_equal(x, data.astype(np.float32) / 255.0)
        np.testing.assert_array_equal(y, targets)
