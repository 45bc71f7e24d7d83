"""Writes a downsampled-ImageNet tree of the official sizes, with random pixels, for timing.

``python benchmarks/fake_imagenet.py ROOT [--res 64] [--format npz|pickle]`` writes
``ROOT/imagenet{res}/train_data_batch_{1..10}[.npz]`` (1,281,167 rows in all, shuffled labels
1..1000 as in the official files) and ``val_data[.npz]`` (50 per class), with the official keys
(``data`` uint8 rows of 3·H·W, ``labels`` 1-based, ``mean``). The pixels are noise, so run times
measured on it are real and accuracies are chance.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

N_TRAIN, N_CLASSES, VAL_PER_CLASS = 1_281_167, 1000, 50


def write(root: Path, res: int = 64, fmt: str = "npz", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / f"imagenet{res}"
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.arange(N_TRAIN) % N_CLASSES + 1)
    parts = [(f"train_data_batch_{b + 1}", part) for b, part in enumerate(np.array_split(labels, 10))]
    parts.append(("val_data", rng.permutation(np.repeat(np.arange(1, N_CLASSES + 1), VAL_PER_CLASS))))
    for stem, y in parts:
        data = rng.integers(0, 256, (len(y), 3 * res * res), dtype=np.uint8)
        d = {"data": data, "labels": y.tolist(), "mean": data[:1000].mean(0)}
        if fmt == "npz":
            np.savez(folder / f"{stem}.npz", **d)
        else:
            with open(folder / stem, "wb") as f:
                pickle.dump(d, f, protocol=4)
        print(stem, len(y), flush=True)
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--res", type=int, default=64, choices=(32, 64))
    p.add_argument("--format", default="npz", choices=("npz", "pickle"))
    a = p.parse_args()
    print(write(a.root, a.res, a.format))
