"""Downsampled ImageNet at 32×32 and 64×64 (Chrabaszcz, Loshchilov & Hutter 2017, "A downsampled
variant of ImageNet as an alternative to the CIFAR datasets"), read from the official files.

Files, in ``<data root>/imagenet32/`` or ``<data root>/imagenet64/``: ``train_data_batch_1`` …
``train_data_batch_10`` and ``val_data``, each either ``.npz`` (the ``*_npz.zip`` downloads) or,
without extension, the pickled variant (a pickled dict). Keys: ``data`` (uint8 rows of 3·H·W: the
R plane, then G, then B, each row-major H×W), ``labels`` (ints 1..1000) and optionally ``mean``.

Only the rows a task needs are read: the ``labels`` of every file first, then the training rows
are chosen (classes, ``n_per_class``, ``n_train``) and the test rows (``n_test``), and a file's
``data`` is touched only when it holds a chosen row. Each such read appends the file's path to
``DATA_READS``. An npz member stored without compression (as ``np.savez`` writes it) is
memory-mapped, so only the chosen rows' pages are read from disk (its CRC, which would need every
byte, is not checked; its header, shape and labels are); a compressed member is decompressed
whole, CRC-checked, indexed and dropped. A pickled file has to be unpickled whole to get at its
labels, so the pickled variant reads every file in full, and the files holding chosen rows twice
(to keep one batch in memory at a time). Prefer the npz files. Nothing is cached between builds.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ntkbench.tasks.base import (TEST_STREAM, TRAIN_STREAM, Common, DataError, Task, check_int, data_root,
                                 finish, preprocess, random_stream, register_task, stratified_indices)

NUM_CLASSES = 1000
TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
VAL_FILE = "val_data"
CAP_STREAM = 3  # random stream of the n_per_class cap, independent of the n_train/n_test subsets
DOWNLOAD_PAGE = "https://image-net.org/download-images"
ZIPS = {32: ("Imagenet32_train_npz.zip", "Imagenet32_val_npz.zip"),
        64: ("Imagenet64_train_part1_npz.zip", "Imagenet64_train_part2_npz.zip", "Imagenet64_val_npz.zip")}

DATA_READS: list[Path] = []
"""Every file whose ``data`` was loaded, in order (tests clear and inspect it)."""

# sorted(np.random.default_rng(2017).choice(1000, k, replace=False) + 1), written out so that the
# lists never depend on numpy's sampling algorithm; tests check they match the draw.
CLASSES_10 = (45, 85, 362, 424, 454, 532, 812, 840, 935, 987)
CLASSES_100 = (
    17, 25, 41, 49, 77, 93, 99, 107, 125, 136, 143, 154, 186, 198, 202, 217, 232, 238, 270, 286,
    292, 301, 303, 310, 317, 330, 333, 351, 352, 358, 368, 385, 411, 413, 418, 423, 428, 430, 436, 449,
    451, 461, 468, 484, 489, 493, 494, 497, 503, 504, 512, 521, 528, 529, 531, 551, 560, 566, 567, 574,
    578, 579, 580, 607, 627, 631, 637, 640, 645, 657, 675, 681, 691, 695, 710, 739, 745, 749, 764, 765,
    776, 781, 786, 798, 806, 809, 838, 850, 865, 867, 868, 881, 898, 907, 909, 920, 923, 926, 927, 960)
ALL_CLASSES = tuple(range(1, NUM_CLASSES + 1))

_PICKLE_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                   *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                     for n in ("_reconstruct", "scalar"))}


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays/scalars: no other code runs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                pickle.UnpicklingError, AttributeError, IndexError, TypeError)


class _File:
    """One batch file: its validated ``labels`` at once, its ``data`` rows on request."""

    def __init__(self, path: Path, resolution: int) -> None:
        self.path, self.row = path, 3 * resolution * resolution
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    self._check_keys(npz.files)
                    labels = npz["labels"]
                    with npz.zip.open("data.npy") as f:  # the header only: shape and dtype
                        shape, _, dtype = _npy_header(f)
            else:  # kept only while checked: holding all 10 unpickled batches would need ~16 GB at 64×64
                labels, data = self._unpickle()
                shape, dtype = data.shape, data.dtype
                del data
        except DataError:
            raise
        except _READ_ERRORS as e:
            raise self._error(f"is unreadable (bad zip, truncated or not {self._kind}): "
                              f"{type(e).__name__}: {e}") from e
        self._check_data(tuple(shape), np.dtype(dtype))
        self.labels = self._check_labels(labels, shape[0])

    def _unpickle(self) -> tuple[object, np.ndarray]:
        """``labels`` and ``data`` of a pickled file, read whole."""
        with open(self.path, "rb") as f:
            d = _NumpyUnpickler(f, encoding="latin1").load()
        if not isinstance(d, dict):
            raise self._error(f"holds a {type(d).__name__}, not a dict")
        self._check_keys(list(d))
        return d["labels"], np.asarray(d["data"])

    @property
    def _kind(self) -> str:
        return "an npz file" if self.path.suffix == ".npz" else "a pickled dict"

    def _error(self, what: str) -> DataError:
        return DataError(f"downsampled ImageNet file {self.path} {what}")

    def _check_keys(self, keys: Sequence[str]) -> None:
        for key in ("data", "labels"):
            if key not in keys:
                raise self._error(f"has no key {key!r} (keys: {', '.join(map(str, keys)) or 'none'})")

    def _check_data(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype != np.uint8 or len(shape) != 2 or shape[1] != self.row:
            side = int(round((shape[-1] / 3) ** 0.5)) if shape else 0
            hint = f" (rows of {side}×{side} images?)" if shape and 3 * side * side == shape[-1] else ""
            raise self._error(f"has 'data' of dtype {dtype} and shape {shape}; expected uint8 rows of "
                              f"{self.row} bytes (3·H·W for this resolution){hint}")

    def _check_labels(self, labels: object, n_rows: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
            raise self._error(f"has 'labels' of dtype {y.dtype} and shape {y.shape}; expected a list of ints")
        if len(y) != n_rows:
            raise self._error(f"has {len(y)} labels but {n_rows} rows of 'data'")
        bad = (y < 1) | (y > NUM_CLASSES)
        if bad.any():
            raise self._error(f"has labels outside 1..{NUM_CLASSES} (e.g. {y[bad][0]} at row "
                              f"{np.flatnonzero(bad)[0]}); labels must be 1-based class ids")
        return y.astype(np.int64)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """``data[index]`` as a new uint8 array: memory-mapped from a stored npz member, else the
        file's full ``data`` is loaded and dropped afterwards."""
        DATA_READS.append(self.path)
        try:
            if self.path.suffix == ".npz":
                mapped = self._mapped_data()
                if mapped is not None:
                    return np.asarray(mapped[index])
                with np.load(self.path, allow_pickle=False) as npz:
                    data = npz["data"]
            else:
                data = self._unpickle()[1]
        except DataError:
            raise
        except _READ_ERRORS as e:
            raise self._error(f"is unreadable (bad zip or truncated): {type(e).__name__}: {e}") from e
        self._check_data(data.shape, data.dtype)  # in case the file changed since its header was read
        out = data[index]
        del data
        return out

    def _mapped_data(self) -> np.memmap | None:
        """``data`` mapped from disk when ``data.npy`` is stored uncompressed in C order, else None.

        A zip member's bytes start after its local header (30 bytes, then the name and an extra
        field whose lengths the header gives); the .npy header follows, then the raw array."""
        with zipfile.ZipFile(self.path) as z:
            info = z.getinfo("data.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise self._error("has a damaged zip entry for 'data.npy' (bad local header)")
            f.seek(info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30])))
            shape, fortran, dtype = _npy_header(f)
            offset = f.tell()
        self._check_data(tuple(shape), np.dtype(dtype))
        if fortran:
            return None
        if offset + int(np.prod(shape)) > self.path.stat().st_size:
            raise self._error("is truncated (its 'data' runs past the end of the file)")
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(shape))


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the .npy header at ``f``'s position (format 1.0 or
    2.0); ``f`` is left at the first byte of the array."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _locate(name: str, folder: Path, resolution: int) -> list[Path]:
    """The 11 files, ``.npz`` preferred over the pickled variant; one ``DataError`` for any missing."""
    found, missing = [], []
    for stem in (*TRAIN_FILES, VAL_FILE):
        options = [folder / f"{stem}.npz", folder / stem]
        path = next((p for p in options if p.is_file()), None)
        found.append(path)
        if path is None:
            missing.append(f"{stem}.npz")
    if missing:
        state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise DataError(
            f"task {name!r} needs the downsampled ImageNet {resolution}×{resolution} files "
            f"{', '.join(f'{s}.npz' for s in TRAIN_FILES)} and {VAL_FILE}.npz (or the pickled variant: the "
            f"same names without .npz) in {folder}, which {state}. Get them from {DOWNLOAD_PAGE} → "
            f"\"Download downsampled image data (32x32, 64x64)\": {', '.join(ZIPS[resolution])}, and unzip "
            f"them into {folder} (the files directly in it). Or set the environment variable NTKBENCH_DATA, "
            f"or --data-root (task option data_root), to the folder that holds imagenet{resolution}/.")
    return found


def _choose(name: str, files: list[_File], classes: Sequence[int], n_per_class: int | None,
            n: int | None, option: str, rngs: tuple[np.random.Generator | None, np.random.Generator]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Global row indices (over ``files`` concatenated) and their new labels 0..k-1: only the
    ``classes``, at most ``n_per_class`` of each, then a stratified subset of ``n``."""
    labels = np.concatenate([f.labels for f in files])
    new = np.full(NUM_CLASSES + 1, -1, dtype=np.int64)
    new[list(classes)] = np.arange(len(classes))
    y = new[labels]
    counts = np.bincount(y[y >= 0], minlength=len(classes))
    where = ", ".join(str(f.path) for f in files) if len(files) == 1 else f"{files[0].path.parent}"
    absent = [c for c, k in zip(classes, counts) if k == 0]
    if absent:
        raise DataError(f"task {name!r}: class(es) {absent[:20]}{' …' if len(absent) > 20 else ''} "
                        f"have no images in {where}")
    index = np.flatnonzero(y >= 0)
    if n_per_class is not None:
        short = [(c, int(k)) for c, k in zip(classes, counts) if k < n_per_class]
        if short:
            raise DataError(f"task {name!r}: n_per_class={n_per_class} but class(es) have fewer "
                            f"training images in {where}: "
                            + ", ".join(f"{c} has {k}" for c, k in short[:20]))
        rng = rngs[0]
        index = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == i), n_per_class, replace=False)
                                        for i in range(len(classes))]))
    if n is not None:
        if n > len(index):
            raise ValueError(f"{option}={n} is more than task {name!r} has: {len(index)} {option[2:]} samples")
        index = index[stratified_indices(y[index], n, rngs[1])]
    return index, y[index]


def _read(files: list[_File], index: np.ndarray, resolution: int) -> np.ndarray:
    """The images at the global ``index`` as float32 (N, 3, H, W) in [0, 1]; only files holding
    one of them have their ``data`` loaded."""
    out = np.empty((len(index), files[0].row), dtype=np.uint8)
    start = 0
    for f in files:
        stop = start + len(f.labels)
        mine = (index >= start) & (index < stop)
        if mine.any():
            out[mine] = f.rows(index[mine] - start)
        start = stop
    x = out.reshape(-1, 3, resolution, resolution).astype(np.float32)
    del out
    x /= np.float32(255)
    return x


def _build(name: str, resolution: int, classes: Sequence[int], common: Common, root: str | None,
           n_per_class: int | None) -> Task:
    """The task on ``classes`` (1-based ids; new label i is ``classes[i]``)."""
    if n_per_class is not None:
        n_per_class = check_int("n_per_class", n_per_class, minimum=1)
    folder = data_root(root) / f"imagenet{resolution}"
    paths = _locate(name, folder, resolution)
    train_files = [_File(p, resolution) for p in paths[:-1]]
    test_files = [_File(paths[-1], resolution)]
    train_index, y_train = _choose(name, train_files, classes, n_per_class, common.n_train, "n_train",
                                   (random_stream(common.seed, CAP_STREAM), random_stream(common.seed, TRAIN_STREAM)))
    test_index, y_test = _choose(name, test_files, classes, None, common.n_test, "n_test",
                                 (None, random_stream(common.seed, TEST_STREAM)))
    x_train = torch.from_numpy(_read(train_files, train_index, resolution))
    x_test = torch.from_numpy(_read(test_files, test_index, resolution))
    x_train, x_test, how = preprocess(x_train, x_test, common)
    facts: dict[str, object] = {
        "standardize": f"pixels/255, then {how}", "resolution": resolution, "n_per_class": n_per_class,
        "classes": list(classes), "data_dir": str(folder),
        "format": "npz" if paths[0].suffix == ".npz" else "pickle",
        "source": "downsampled ImageNet (Chrabaszcz et al. 2017), image-net.org",
        "split": "official: train_data_batch_1..10 / val_data"}
    return finish(name, (x_train, torch.from_numpy(y_train)), (x_test, torch.from_numpy(y_test)),
                  len(classes), common, facts)


def _task(name: str, resolution: int, classes: Sequence[int], doc: str) -> Callable[..., Task]:
    def builder(common: Common, data_root: str | None = None, n_per_class: int | None = None) -> Task:
        return _build(name, resolution, classes, common, data_root, n_per_class)

    builder.__name__ = builder.__qualname__ = name.replace("-", "_")
    builder.__doc__ = doc + _OPTIONS_DOC
    return register_task(name)(builder)


_OPTIONS_DOC = """

Options: ``data_root`` (folder holding ``imagenet32/``/``imagenet64/``; default ``$NTKBENCH_DATA``,
else ``datasets/data``), ``n_per_class`` (at most this many training images per class, a seeded
choice; a class with fewer is an error). Default n_test: every validation image of the classes
(50 per class). ``params["classes"]`` lists the original 1-based class ids in the order of the
new labels 0..k-1. Inputs are pixels/255 in (N, 3, H, W), then standardized per channel (and
ZCA-whitened with the generic ``zca`` option)."""

imagenet32 = _task("imagenet32", 32, ALL_CLASSES,
                   "Downsampled ImageNet 32×32: 1000 classes, ~1.28M training and 50,000 validation images.")
imagenet64 = _task("imagenet64", 64, ALL_CLASSES,
                   "Downsampled ImageNet 64×64: 1000 classes, ~1.28M training and 50,000 validation images.")
imagenet64_10 = _task("imagenet64-10", 64, CLASSES_10,
                      "Downsampled ImageNet 64×64 on 10 classes, the 1-based ids "
                      "45, 85, 362, 424, 454, 532, 812, 840, 935, 987 (sorted(default_rng(2017)"
                      ".choice(1000, 10, replace=False) + 1)); labels 0..9 in that order.")
imagenet64_100 = _task("imagenet64-100", 64, CLASSES_100,
                       "Downsampled ImageNet 64×64 on 100 classes, ``CLASSES_100`` (sorted(default_rng(2017)"
                       ".choice(1000, 100, replace=False) + 1)); labels 0..99 in that order.")
