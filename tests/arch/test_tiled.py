"""Tiled kernels (``arch.tiled``): equal to ``Serial.kernel``, checkpointed, resumable after
SIGKILL, and safe under out-of-memory errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkbench.arch import AvgPool, Conv, Dense, Erf, GlobalAvgPool, ReLU, get, serial, tiled
from ntkbench.arch.tiled import tiled_kernel

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {
    "fc": (get("mlp", depth=3, width=8), (7,)),
    "cnn-v": (get("cnn", depth=2, channels=4, readout="flatten"), (2, 6, 6)),
    "cnn-gap": (get("cnn", depth=2, channels=4), (2, 6, 6)),
    "pool-erf": (serial(Conv(4, 3, 1.4, 0.1), ReLU(), AvgPool(2), Conv(4, 3, 1.2, 0.2), Erf(), GlobalAvgPool(), Dense(1)),
                 (3, 8, 8)),
}


def _x(shape, n, seed=0):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ARCHS)
def test_tiled_float64_equals_untiled(name):
    # Each entry goes through the same elementwise operations; only the input kernel's sums
    # (x1 @ x2ᵀ, einsum) are ordered by the BLAS differently for other block shapes: a few ulps
    # (we see at most 2.1e-16 here). The pairs (x, x), where the arccos would grow such ulps to
    # 1e-8, are set to their self terms in every block (kernel.input_kernel).
    arch, shape = ARCHS[name]
    x1, x2 = _x(shape, 9), _x(shape, 5, seed=1)
    whole, cross = arch.kernel(x1), arch.kernel(x1, x2)
    for tile in (2, 4):
        sym = tiled_kernel(arch, x1, dtype=torch.float64, tile=tile)
        assert sym.tiles == sum(range(1, -(-9 // tile) + 1)) and sym.computed == sym.tiles
        k = sym.kernel
        assert torch.equal(k.nngp, k.nngp.T) and torch.equal(k.ntk, k.ntk.T)
        for kind in ("nngp", "ntk", "cov1"):
            assert _rel(getattr(k, kind), getattr(whole, kind)) < 1e-12, kind
        k = tiled_kernel(arch, x1, x2, dtype=torch.float64, tile=tile).kernel
        for kind in ("nngp", "ntk", "cov1", "cov2"):
            assert _rel(getattr(k, kind), getattr(cross, kind)) < 1e-12, kind


@pytest.mark.parametrize("name", ARCHS)
def test_float32_within_its_measured_error(name):
    # Measured max |K32 − K64| / max |K64| here and on FC and CNN-GAP of depth 10 and Myrtle-5
    # (N = 16): at most 2.6e-7, entry by entry 3.2e-7, a few float32 roundings (ε = 1.2e-7).
    # The bound is 2e-6 ≈ 17ε. Inputs with nearly parallel pixels (cos θ → 1) grow it by 1/sin θ.
    arch, shape = ARCHS[name]
    x = _x(shape, 10)
    k32, k64 = tiled_kernel(arch, x, tile=4).kernel, arch.kernel(x)
    assert k32.ntk.dtype == torch.float32
    assert _rel(k32.nngp, k64.nngp) < 2e-6 and _rel(k32.ntk, k64.ntk) < 2e-6


def test_automatic_tile_fits_the_memory_budget(monkeypatch):
    arch, shape = ARCHS["cnn-gap"]
    x = _x(shape, 6)
    # The free memory moves with the machine's load between two reads: keep the ones auto_tile made.
    read, free_memory = [], tiled.free_memory

    def recorded(device):
        read.append(free_memory(device))
        return read[-1]

    monkeypatch.setattr(tiled, "free_memory", recorded)
    side = tiled.auto_tile(arch, shape, torch.float32, torch.device("cpu"), False, 1e-4)
    pair, row = 8 * 36**2 * 4, (8 * 36**2 + 72) * 4  # 8 live pair tensors of (6·6)² float32, and the pixels
    budget = 1e-4 * read[0]
    # The largest side that fits: b² pair + 2 b row <= budget < (b + 1)² pair + 2 (b + 1) row.
    assert side * side * pair + 2 * side * row <= budget < (side + 1) ** 2 * pair + 2 * (side + 1) * row
    run = tiled_kernel(arch, x, dtype=torch.float64)
    assert run.tile == min(6, tiled.auto_tile(arch, shape, torch.float64, torch.device("cpu"), False, 0.5))
    assert torch.equal(run.kernel.ntk, arch.kernel(x).ntk)
    with pytest.raises(ValueError, match=r"one pair of inputs needs 124992 bytes, but 1e-15 of the free memory on cpu is"):
        tiled_kernel(arch, x, memory_fraction=1e-15)


def test_memmap_output_and_a_finished_run_recomputes_nothing(tmp_path):
    arch, shape = ARCHS["cnn-gap"]
    x = _x(shape, 9)
    first = tiled_kernel(arch, x, out=tmp_path, tile=4)
    assert (first.tiles, first.computed) == (6, 6)
    on_disk = np.load(tmp_path / "ntk.npy", mmap_mode="r")
    assert on_disk.dtype == np.float32 and on_disk.shape == (9, 9)
    assert np.array_equal(on_disk, first.kernel.ntk.numpy())
    assert json.loads((tmp_path / "manifest.json").read_text())["done"] == list(range(6))
    again = tiled_kernel(arch, x, out=tmp_path)  # the tile comes from the manifest
    assert (again.tile, again.computed) == (4, 0)
    assert torch.equal(again.kernel.nngp, first.kernel.nngp)
    whole = tiled_kernel(arch, x, out=tmp_path / "whole", tile=100)  # one tile, 9 rows, however asked
    assert tiled_kernel(arch, x, out=tmp_path / "whole", tile=100).computed == 0 and whole.tile == 9


def test_another_fingerprint_is_an_error_unless_restart(tmp_path):
    arch, shape = ARCHS["fc"]
    x = _x(shape, 6)
    tiled_kernel(arch, x, out=tmp_path, tile=4)
    with pytest.raises(ValueError, match=r"manifest.json checkpoints another computation \(x1: '[0-9a-f]+\.\.\. there, .* now\); "
                                         r"use another directory or restart=True"):
        tiled_kernel(arch, x + 1, out=tmp_path)
    with pytest.raises(ValueError, match=r"another computation \(tile: 4 there, 3 now\)"):
        tiled_kernel(arch, x, out=tmp_path, tile=3)
    fresh = tiled_kernel(arch, x + 1, out=tmp_path, restart=True, tile=3)
    assert fresh.computed == fresh.tiles == 3
    assert torch.equal(fresh.kernel.ntk, tiled_kernel(arch, x + 1, tile=3).kernel.ntk)


def test_out_of_memory_halves_the_batch_and_keeps_the_result(monkeypatch):
    arch, shape = ARCHS["cnn-gap"]
    x = _x(shape, 12)
    compute, batches = tiled._compute_tile, []

    def fits_two(arch, xa, xb, dtype, batch, fused):
        batches.append(batch)
        if batch > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected above batches of 2)")
        return compute(arch, xa, xb, dtype, batch, fused)

    monkeypatch.setattr(tiled, "_compute_tile", fits_two)
    with pytest.warns(RuntimeWarning) as warned:
        run = tiled_kernel(arch, x, dtype=torch.float64, tile=8)
    assert [str(w.message) for w in warned] == [
        "out of memory in tile (0, 0) with batches of 8 rows; retrying with 4",
        "out of memory in tile (0, 0) with batches of 4 rows; retrying with 2"]
    assert batches == [8, 4, 2, 2, 2] and run.batch == 2
    # Tiles of 8 in batches of 2 are the blocks of Serial.kernel(block_size=2): the same kernel bit for bit.
    reference = arch.kernel(x, block_size=2)
    assert torch.equal(run.kernel.nngp, reference.nngp) and torch.equal(run.kernel.ntk, reference.ntk)

    def never_fits(arch, xa, xb, dtype, batch, fused):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(tiled, "_compute_tile", never_fits)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.OutOfMemoryError, match=r"tile \(0, 0\): one pair of inputs does not fit"):
        tiled_kernel(arch, x, tile=4)


CHILD = textwrap.dedent("""
    import json, sys, torch
    from ntkbench.arch import get
    from ntkbench.arch.tiled import tiled_kernel
    torch.set_num_threads(1)
    x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    run = tiled_kernel(get("cnn", depth=4, channels=4), x, out=sys.argv[1], tile=4)
    print(json.dumps({"tiles": run.tiles, "computed": run.computed}), flush=True)
""")


def _child(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _done(out: Path) -> list[int]:
    try:
        return json.loads((out / "manifest.json").read_text())["done"]
    except (FileNotFoundError, ValueError):
        return []


def test_sigkill_and_resume_give_the_same_kernel_bit_for_bit(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    child = _child(killed)
    deadline = time.monotonic() + 60
    while len(_done(killed)) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    finished = len(_done(killed))
    assert 3 <= finished < 21
    resumed, uninterrupted = _child(killed), _child(whole)
    stats = json.loads(resumed.communicate(timeout=120)[0])
    assert stats == {"tiles": 21, "computed": 21 - finished}
    assert json.loads(uninterrupted.communicate(timeout=120)[0]) == {"tiles": 21, "computed": 21}
    for name in ("nngp", "ntk", "cov1"):
        assert np.array_equal(np.load(killed / f"{name}.npy"), np.load(whole / f"{name}.npy")), name
