"""Downsampled ImageNet tasks on tiny fixture trees written in the official on-disk formats
(np.savez / pickle.dump of dict(data, labels, mean)): pixel layout, labels, subsets, which files
are read, the npz/pickle equivalence and every missing- or corrupt-data message."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from ntkbench import tasks
from ntkbench.tasks import base, imagenet
from ntkbench.tasks.base import DataError


@pytest.fixture(scope="module")
def im() -> ModuleType:
    return imagenet


C10 = (45, 85, 362, 424, 454, 532, 812, 840, 935, 987)
OTHER = (1, 2)  # classes outside the -10 list
FIRST_UID = 5 * 64 + 6  # the first image's B-plane mark sits at (h=5, w=6)


def write_tree(root: Path, fmt: str = "npz", res: int = 64, train: dict[int, tuple[int, ...]] | None = None,
               val: tuple[int, ...] | None = None, edit: dict[str, dict] | None = None) -> dict[int, int]:
    """Writes ``root/imagenet{res}/`` with 10 train batches and val_data; ``train`` maps a batch
    number to its labels (default: batches 1-3 hold 2 images of each C10 class, the other
    batches only OTHER classes), ``val`` the validation labels (default 3 per C10 class and
    OTHER). Every image has R(1,2) = G(3,4) = 255 and a 255 at B-plane flat position uid (its
    id, counting from FIRST_UID), other pixels in 0..100. ``edit`` overrides dict entries per file
    stem. Returns uid -> original class."""
    rng = np.random.default_rng(0)
    if train is None:
        train = {b: (C10 + C10 if b <= 3 else OTHER + OTHER) for b in range(1, 11)}
    val = val if val is not None else (C10 + OTHER) * 3
    folder = root / f"imagenet{res}"
    folder.mkdir(parents=True, exist_ok=True)
    classes, uid = {}, FIRST_UID
    for stem, labels in [*((f"train_data_batch_{b}", train[b]) for b in range(1, 11)), ("val_data", val)]:
        data = rng.integers(0, 101, (len(labels), 3, res, res), dtype=np.uint8)
        data[:, 0, 1, 2] = data[:, 1, 3, 4] = 255
        for i, c in enumerate(labels):
            data[i, 2].flat[uid % (res * res)] = 255
            classes[uid] = c
            uid += 1
        d = {"data": data.reshape(len(labels), -1), "labels": list(labels), "mean": data.mean(0).ravel()}
        d.update((edit or {}).get(stem, {}))
        d = {k: v for k, v in d.items() if v is not None}
        if fmt == "npz":
            np.savez(folder / f"{stem}.npz", **d)
        else:
            with open(folder / stem, "wb") as f:
                pickle.dump(d, f)
    return classes


def decode(x: torch.Tensor) -> list[int]:
    return [int(i) for i in x[:, 2].flatten(1).argmax(1)]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[int, int]]:
    return tmp_path, write_tree(tmp_path)


def test_class_lists_are_the_documented_seeded_draws(im: ModuleType) -> None:
    assert im.CLASSES_10 == C10
    for k, listed in ((10, im.CLASSES_10), (100, im.CLASSES_100)):
        assert listed == tuple(np.sort(np.random.default_rng(2017).choice(1000, k, replace=False) + 1).tolist())
    assert {"imagenet32", "imagenet64", "imagenet64-10", "imagenet64-100"} <= set(tasks.list_tasks())


def test_pixels_layout_labels_and_params(im: ModuleType, tree: tuple[Path, dict[int, int]]) -> None:
    root, classes = tree
    task = tasks.get("imagenet64-10", data_root=str(root))
    assert task.num_classes == 10 and task.input_shape == (3, 64, 64)
    assert task.params["classes"] == list(C10) and task.params["resolution"] == 64
    for (x, y), n in ((task.train, 60), (task.test, 30)):
        assert x.shape == (n, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert (x[:, 0].flatten(1).argmax(1) == 1 * 64 + 2).all()
        assert (x[:, 1].flatten(1).argmax(1) == 3 * 64 + 4).all()
        ids = decode(x)
        assert [C10[int(label)] for label in y] == [classes[i] for i in ids]  # 0-based in list order
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    assert decode(task.train[0])[0] == 5 * 64 + 6  # the first image: B plane (h=5, w=6)
    # Before standardization: pixels/255 at x[i, c, h, w].
    f = im._File(root / "imagenet64" / "train_data_batch_1.npz", 64)
    raw = im._read([f], np.array([0, 3]), 64)
    assert raw.shape == (2, 3, 64, 64) and raw.max() == 1.0 and raw.min() >= 0.0
    assert raw[0, 0, 1, 2] == raw[0, 1, 3, 4] == raw[0, 2, 5, 6] == 1.0 and raw[0, 0, 5, 6] <= 100 / 255
    assert raw[1, 2].argmax() == 5 * 64 + 6 + 3


@pytest.mark.parametrize("fmt, ext", [("npz", ".npz"), ("pickle", "")])
def test_only_batches_with_selected_classes_are_read_for_data(im: ModuleType, tmp_path: Path, fmt: str, ext: str) -> None:
    write_tree(tmp_path, fmt)
    im.DATA_READS.clear()
    tasks.get("imagenet64-10", data_root=str(tmp_path), n_train=10, n_test=10)
    read = sorted(p.name for p in im.DATA_READS)
    assert read == sorted([f"train_data_batch_{b}{ext}" for b in (1, 2, 3)] + [f"val_data{ext}"])


def test_stored_npz_rows_are_memory_mapped_and_compressed_ones_decompressed(im: ModuleType, tmp_path: Path) -> None:
    """np.savez stores members uncompressed: their rows come from a memory map (only the chosen
    pages are read); np.savez_compressed members are decompressed whole. Both give the same rows,
    and a stored file cut short is named as truncated."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (50, 3 * 64 * 64), dtype=np.uint8)
    labels = rng.integers(1, 1001, 50)
    np.savez(tmp_path / "stored.npz", data=data, labels=labels)
    np.savez_compressed(tmp_path / "packed.npz", data=data, labels=labels)
    index = np.array([3, 7, 7, 49, 0])
    stored, packed = im._File(tmp_path / "stored.npz", 64), im._File(tmp_path / "packed.npz", 64)
    assert isinstance(stored._mapped_data(), np.memmap) and packed._mapped_data() is None
    assert np.array_equal(stored.rows(index), data[index]) and np.array_equal(packed.rows(index), data[index])
    assert not isinstance(stored.rows(index), np.memmap)
    whole = (tmp_path / "stored.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.npz is unreadable"):
        im._File(tmp_path / "cut.npz", 64)


def test_subsets_n_per_class_and_determinism(im: ModuleType, tree, monkeypatch) -> None:
    root, classes = tree
    a = tasks.get("imagenet64-10", data_root=str(root), n_per_class=4, n_test=20, seed=3)
    b = tasks.get("imagenet64-10", data_root=str(root), n_per_class=4, n_test=20, seed=3)
    c = tasks.get("imagenet64-10", data_root=str(root), n_per_class=4, n_test=20, seed=4)
    assert torch.bincount(a.train[1]).tolist() == [4] * 10 and torch.bincount(a.test[1]).tolist() == [2] * 10
    assert a.params["n_per_class"] == 4 and a.params["n_train"] == 40 and a.params["n_test"] == 20
    for s in ("train", "test"):
        assert torch.equal(getattr(a, s)[0], getattr(b, s)[0]) and torch.equal(getattr(a, s)[1], getattr(b, s)[1])
    assert decode(a.train[0]) != decode(c.train[0])
    # The generic zca option reaches base.preprocess (whitening itself is tested on digits; it is
    # replaced here because a 12288² eigh takes minutes).
    calls = []
    monkeypatch.setattr(base, "zca_whiten", lambda a, b, strength: calls.append((a.shape, strength)) or (a, b))
    z = tasks.get("imagenet64-10", data_root=str(root), n_per_class=2, n_test=10, zca=0.1)
    assert calls == [((20, 3, 64, 64), 0.1)] and "ZCA whitening with strength 0.1" in z.params["standardize"]
    d = tasks.get("imagenet64-10", data_root=str(root), n_per_class=5, n_train=20, seed=1)
    assert torch.bincount(d.train[1]).tolist() == [2] * 10 and len(d.test[1]) == 30
    with pytest.raises(DataError, match=r"n_per_class=7 but class\(es\) have fewer training images.*45 has 6"):
        tasks.get("imagenet64-10", data_root=str(root), n_per_class=7)
    with pytest.raises(ValueError, match="n_train=61 is more than task 'imagenet64-10' has: 60"):
        tasks.get("imagenet64-10", data_root=str(root), n_train=61)
    with pytest.raises(ValueError, match="n_per_class must be a positive int"):
        tasks.get("imagenet64-10", data_root=str(root), n_per_class=0)


def test_npz_and_pickle_give_identical_tasks(im: ModuleType, tmp_path: Path, monkeypatch) -> None:
    write_tree(tmp_path / "a", "npz")
    write_tree(tmp_path / "b", "pickle")
    a = tasks.get("imagenet64-10", data_root=str(tmp_path / "a"), n_per_class=3, seed=2)
    monkeypatch.setenv("NTKBENCH_DATA", str(tmp_path / "b"))  # the environment variable as data root
    b = tasks.get("imagenet64-10", n_per_class=3, seed=2)
    for s in ("train", "test"):
        assert torch.equal(getattr(a, s)[0], getattr(b, s)[0]) and torch.equal(getattr(a, s)[1], getattr(b, s)[1])
    assert b.params["format"] == "pickle" and a.params["format"] == "npz"
    drop = {"format", "data_dir"}
    assert {k: v for k, v in a.params.items() if k not in drop} == {k: v for k, v in b.params.items() if k not in drop}


def test_imagenet32_all_classes(im: ModuleType, tmp_path: Path) -> None:
    every = tuple(range(1, 1001))
    write_tree(tmp_path, res=32, train={b: every[(b - 1) * 100: b * 100] * 2 for b in range(1, 11)}, val=every)
    task = tasks.get("imagenet32", data_root=str(tmp_path), n_train=1000, n_test=500)
    assert task.input_shape == (3, 32, 32) and task.num_classes == 1000
    assert torch.bincount(task.train[1]).tolist() == [1] * 1000 and len(task.test[1]) == 500
    assert task.params["classes"] == list(every)
    assert (task.train[0][:, 0].flatten(1).argmax(1) == 1 * 32 + 2).all()
    with pytest.raises(DataError, match=r"'imagenet64': class\(es\) \[3, 4, 5, .* have no images in"):
        write_tree(tmp_path)
        tasks.get("imagenet64", data_root=str(tmp_path))


def test_missing_data_messages(im: ModuleType, tmp_path: Path, tree) -> None:
    folder = tmp_path / "nowhere" / "imagenet64"
    with pytest.raises(DataError) as e:
        tasks.get("imagenet64-10", data_root=str(tmp_path / "nowhere"))
    msg = str(e.value)
    for part in ("task 'imagenet64-10'", f"in {folder}, which does not exist", "train_data_batch_1.npz",
                 "train_data_batch_10.npz", "val_data.npz", "https://image-net.org/download-images",
                 "Download downsampled image data (32x32, 64x64)", "Imagenet64_train_part1_npz.zip",
                 "Imagenet64_train_part2_npz.zip", "Imagenet64_val_npz.zip", "NTKBENCH_DATA", "--data-root"):
        assert part in msg
    root, _ = tree
    (root / "imagenet64" / "train_data_batch_7.npz").unlink()
    with pytest.raises(DataError, match=r"which lacks train_data_batch_7\.npz\. Get them from"):
        tasks.get("imagenet64-10", data_root=str(root))
    with pytest.raises(DataError, match=r"Imagenet32_train_npz\.zip, Imagenet32_val_npz\.zip"):
        tasks.get("imagenet32", data_root=str(root))
    with pytest.raises(DataError, match=r"class\(es\) \[17, 25, .* have no images"):
        write_tree(root)
        tasks.get("imagenet64-100", data_root=str(root))


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
@pytest.mark.parametrize("stem, edit, message", [
    ("train_data_batch_2", {"labels": None}, r"train_data_batch_2(\.npz)? has no key 'labels' \(keys: data, mean\)"),
    ("val_data", {"data": None}, r"val_data(\.npz)? has no key 'data'"),
    ("train_data_batch_1", {"data": np.zeros((20, 3 * 32 * 32), np.uint8)},
     r"batch_1(\.npz)? has 'data' of dtype uint8 and shape \(20, 3072\); expected uint8 rows of 12288 .*32×32"),
    ("train_data_batch_1", {"data": np.zeros((20, 12288), np.float32)}, r"'data' of dtype float32"),
    ("train_data_batch_3", {"labels": [0] + [45] * 19}, r"batch_3(\.npz)? has labels outside 1\.\.1000 \(e\.g\. 0 at row 0\)"),
    ("val_data", {"labels": [45] * 35 + [1001]}, r"val_data(\.npz)? has labels outside 1\.\.1000 \(e\.g\. 1001 at row 35\)"),
    ("train_data_batch_4", {"labels": [1, 2, 1]}, r"batch_4(\.npz)? has 3 labels but 4 rows of 'data'"),
    ("train_data_batch_4", {"labels": [1.0, 2.0, 1.0, 2.0]}, r"'labels' of dtype float64"),
])
def test_corrupt_data_messages(im: ModuleType, tmp_path: Path, fmt: str, stem: str, edit: dict, message: str) -> None:
    write_tree(tmp_path, fmt, edit={stem: edit})
    with pytest.raises(DataError, match=r"downsampled ImageNet file .*" + message):
        tasks.get("imagenet64-10", data_root=str(tmp_path))


def test_unreadable_files(im: ModuleType, tmp_path: Path) -> None:
    write_tree(tmp_path / "npz")
    folder = tmp_path / "npz" / "imagenet64"
    path = folder / "train_data_batch_5.npz"
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(DataError, match=r"batch_5\.npz is unreadable \(bad zip, truncated or not an npz file\)"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "npz"))
    write_tree(tmp_path / "npz")
    path = folder / "train_data_batch_1.npz"
    with np.load(path) as npz:  # compressed members are CRC-checked; stored ones are memory-mapped unchecked
        np.savez_compressed(path, **npz)
    blob = bytearray(path.read_bytes())
    blob[300:310] = b"0123456789"  # inside 'data': the labels still read, the data fails its CRC
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"batch_1\.npz is unreadable \(bad zip or truncated\): BadZipFile: Bad CRC"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "npz"))
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DataError, match=r"batch_1\.npz is unreadable \(bad zip, truncated or not an npz file\)"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "npz"))
    write_tree(tmp_path / "pkl", "pickle")
    folder = tmp_path / "pkl" / "imagenet64"
    path = folder / "val_data"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"val_data is unreadable \(bad zip, truncated or not a pickled dict\)"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "pkl"))
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"val_data holds a list, not a dict"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "pkl"))
    path.write_bytes(pickle.dumps({"data": Path("x"), "labels": [1]}))  # no code runs from a pickle
    with pytest.raises(DataError, match=r"val_data is unreadable .*refusing to load pathlib"):
        tasks.get("imagenet64-10", data_root=str(tmp_path / "pkl"))


def test_every_method_runs_end_to_end_on_an_imagenet64_10_tree(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    from ntkbench import cli

    write_tree(tmp_path / "data")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    sets = ["arch.depth=1", "arch.width=16", "nn.epochs=2", "taylor.epochs=2"]
    argv = ["run", "--task", "imagenet64-10", "--method", "all", "--data-root", str(tmp_path / "data"),
            "--tracking-uri", uri, *[f"--set={s}" for s in sets]]
    assert cli.main(argv) == 0
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["imagenet64-10"])
    assert sorted(runs["params.method"]) == ["entk", "nn", "nngp", "ntk", "taylor"]
    assert set(runs.status) == {"FINISHED"} and (runs["params.n_train"] == "60").all()
    assert runs["params.task.classes"].iloc[0] == json.dumps(list(C10))


def test_missing_data_exits_2_and_leaves_no_run(tmp_path: Path, monkeypatch, capsys) -> None:
    from ntkbench import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--task", "imagenet64-10", "--data-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_data_batch_1.npz" in err and "NTKBENCH_DATA" in err
    assert not (tmp_path / "mlflow.db").exists()
