"""One table of ntkbench's performance figures on this device, each against the ceiling that
bounds it (issue 6).

    python benchmarks/gpu_report.py [--full] [--out DIR] [--arora PATH/TO/CNTK.py]

1. Ceilings, measured in this run: copy bandwidth, fp32 matmul without TF32, TF32 (CUDA only),
   fp64 matmul, and the ReLU arc-cosine map (``arch.kernel.relu_map``, pure torch). The H200
   figures the issue measured are printed beside them.
2. The pytest-benchmark suite (``test_kernel_throughput``, ``test_entk``, ``test_solvers``,
   ``test_training``) runs in subprocesses, with small sizes by default and the issue's target
   sizes with ``--full`` (for one large GPU), each writing ``DIR/<name>.json``.
3. One row per figure: its value, the ceiling it is bounded by under the work counted per unit
   (FLOPs, bytes and map evaluations per kernel entry from ``test_kernel_throughput.cost_per_entry``,
   the cost model's FLOPs for the eNTK, n³/3 for a Cholesky), the fraction achieved, and the issue's target where there is one.
4. With ``--arora``, the reference CNTK of Arora et al. 2019 ("On exact computation with an
   infinitely wide neural net"; their ``CNTK.py``, CuPy, one launch sequence per pair) is timed
   on the same 32×32 inputs as ours, at depth 21 and 6 with global average pooling, in the same
   run. Its code is read from the given path and never stored in this repository.

The table is printed as Markdown and written with every raw figure to ``DIR/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

from ntkbench.arch import get  # noqa: E402
from ntkbench.arch.kernel import relu_map  # noqa: E402

H200 = {"copy_bytes_per_s": 4.2e12, "fp32_flops": 50.6e12, "tf32_flops": 408e12, "fp64_flops": 54.7e12,
        "relu_map_per_s": 76e9}
"""The issue's measurements on one NVIDIA H200, shown beside this run's."""


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    ceiling: float | None = None
    bound: str = ""
    target: str = ""

    @property
    def fraction(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn: Callable[[], object], device: torch.device, rounds: int = 5) -> float:
    """Fastest of ``rounds`` timed calls after one warm-up, synchronized on CUDA."""
    fn()
    _sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def ceilings(device: torch.device, full: bool) -> dict[str, float]:
    """Copy bandwidth (bytes read + written per second), matmul FLOP/s and arc-cosine maps per
    second on ``device``, each the best of 5 rounds."""
    n_copy = (1 << 28) if full else (1 << 24)
    a, b = torch.empty(n_copy, device=device), torch.empty(n_copy, device=device)
    out = {"copy_bytes_per_s": 2 * 4 * n_copy / _best(lambda: b.copy_(a), device)}
    n = 8192 if full else 1024
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, allow in [("fp32_flops", torch.float32, False), ("fp64_flops", torch.float64, False),
                                   *([("tf32_flops", torch.float32, True)] if device.type == "cuda" else [])]:
            torch.backends.cuda.matmul.allow_tf32 = allow
            x = torch.randn(n, n, device=device, dtype=dtype)
            out[name] = 2 * n**3 / _best(lambda: x @ x, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    m = (1 << 26) if full else (1 << 20)
    g = torch.Generator(device=device).manual_seed(0)
    var = torch.rand(m, device=device, generator=g) + 0.5
    cov = (torch.rand(m, device=device, generator=g) - 0.5) * var
    out["relu_map_per_s"] = m / _best(lambda: relu_map(cov, var, var), device)
    return out


def run_suite(out: Path, full: bool, gpu: bool) -> dict[str, list[dict]]:
    """Each benchmark file in its own pytest subprocess, with this device's sizes; returns
    {file: benchmarks of its JSON}. A failing file is reported and skipped."""
    big = full and gpu
    jobs = {  # name: (file, -k expression or None, environment)
        "kernels": ("test_kernel_throughput.py", None, {"NTKBENCH_TP_N": "1024"} if big else {}),
        "kernel_fc_100k": ("test_kernel_throughput.py", "fc-64", {"NTKBENCH_TP_N": "100000" if big else "2048"}),
        "kernel_cnn_gap_d21": ("test_kernel_throughput.py", "cnn-gap-32",
                               {"NTKBENCH_TP_N": "64" if big else "2", "NTKBENCH_TP_DEPTH": "21"}),
        "kernel_cnn_gap_d6": ("test_kernel_throughput.py", "cnn-gap-32",
                              {"NTKBENCH_TP_N": "64" if big else "2", "NTKBENCH_TP_DEPTH": "6"}),
        "entk": ("test_entk.py", None, {"NTKBENCH_BENCH_ENTK_N": "1024"} if big else {}),
        "solvers": ("test_solvers.py", None,
                    {"NTKBENCH_SOLVER_SIZES": "16384,32768,65536", "NTKBENCH_EIGH_MAX_N": "16384",
                     "NTKBENCH_MATRIX_FREE_MAX_N": "16384", "NTKBENCH_E2E_N": "100000"} if big else {}),
        "training": ("test_training.py", None,
                     {"NTKBENCH_BENCH_TRAIN_N": "16384", "NTKBENCH_BENCH_TRAIN_SHAPE": "3x32x32"} if big else {}),
    }
    results: dict[str, list[dict]] = {}
    for name, (file, select, env) in jobs.items():
        path = out / f"{name}.json"
        command = [sys.executable, "-m", "pytest", str(HERE / file), "-q", "-p", "no:cacheprovider",
                   f"--benchmark-json={path}", *(["-k", select] if select else [])]
        print(f"gpu_report: {name}: {' '.join(f'{k}={v}' for k, v in env.items())} pytest {file}"
              + (f" -k {select}" if select else ""), flush=True)
        done = subprocess.run(command, env={**os.environ, **env}, cwd=HERE.parent, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            print(f"gpu_report: {name} failed (exit {done.returncode}): {tail[0]}", file=sys.stderr)
            continue
        results[name] = json.loads(path.read_text())["benchmarks"]
    return results


def rows_from_suite(suite: dict[str, list[dict]], ceil: dict[str, float]) -> list[Row]:
    """Rows for every benchmark of the suite, with ceilings from this run's measurements."""
    rows: list[Row] = []
    for job, benchmarks in suite.items():
        for b in benchmarks:
            info, name = b.get("extra_info", {}), b["name"]
            if job.startswith("kernel") and "pairs_per_s" in info:
                flops = ceil["fp64_flops"] if "float64" in info["dtype"] else ceil["fp32_flops"]
                # The measured map rate is the pure-torch relu_map's: it bounds the torch path (the
                # CPU) only; the fused Triton pass on CUDA computes its maps inside the same kernel.
                bounds = [info["flops_per_entry"] / flops, info["bytes_per_entry"] / ceil["copy_bytes_per_s"]]
                if info.get("device") != "cuda":
                    bounds.append(info["maps_per_entry"] / ceil["relu_map_per_s"])
                per_pair = max(bounds)
                target = ""
                if job == "kernel_cnn_gap_d21":
                    target = "≥ 10,000 entries/s (H200)"
                elif job == "kernel_fc_100k":
                    target = f"N=100,000 in < 10 s (here N={info['n']}: {b['stats']['min']:.3g} s)"
                rows.append(Row(f"kernel {name.split('[')[-1].rstrip(']')} N={info['n']} depth={info['depth']} "
                                f"{info['dtype'].replace('torch.', '')}", info["pairs_per_s"], "pairs/s",
                                1 / per_pair, "max(flop/F, bytes/B" + (")" if info.get("device") == "cuda" else ", maps/M)"),
                                target))
            elif job == "entk" and "entries_per_s" in info:
                case = name.split("[")[-1].rstrip("]")
                peak = ceil["fp64_flops"] if "float64" in info["dtype"] else ceil["fp32_flops"]
                rows.append(Row(f"eNTK {case} N={info['n']} ({info['entries_per_s']:.4g} entries/s)",
                                info["achieved_gflop_per_s"] * 1e9, "flop/s (cost model)", peak, "matmul peak"))
            elif job == "solvers":
                n, dtype = info.get("n"), info.get("dtype", "")
                if "ratio_rate_vs_bare" in info:
                    rows.append(Row(f"Cholesky ridge solve n={n} {dtype} vs torch.linalg.cholesky",
                                    info["ratio_rate_vs_bare"], "× its rate", 1.0, "torch.linalg.cholesky", "≥ 0.8"))
                if "flops_per_s" in info:
                    peak = ceil["fp64_flops"] if dtype == "float64" else ceil["fp32_flops"]
                    rows.append(Row(f"solver {info.get('solver')} n={n} {dtype} ({b['stats']['min']:.3g} s)",
                                    info["flops_per_s"], "flop/s", peak, "matmul peak"))
                elif "classes" in info and info.get("classes") == 1000:
                    rows.append(Row(f"FC-NTK regression n={n}, 1000 classes", b["stats"]["min"], "s",
                                    target="< 30 s at N=100,000 (H200)"))
            elif job == "training" and "images_per_s" in info:
                rows.append(Row(f"training {name.split('[')[-1].rstrip(']')} images/s", info["images_per_s"], "images/s"))
                for key, target in (("ratio_nn_over_handwritten", "≥ 0.9"), ("ratio_taylor_epoch_over_nn_epoch", "≤ 3")):
                    if key in info:
                        rows.append(Row(key.replace("_", " "), info[key], "×", target=target))
    return rows


def arora_rows(path: Path, device: torch.device, n: int) -> list[Row]:
    """Arora et al.'s CNTK.py against ours on the same n 32×32 images, GAP, depths 21 and 6.

    Their script parses its arguments and loads CIFAR-10 at import, so only the part before its
    "#Load CIFAR-10." line is executed, with their own argument parser fed --depth/--gap/--fix.
    It computes one pair per launch sequence in float32 (``xz``), after ``xx`` per image."""
    import cupy as cp  # their code needs CuPy; an ImportError here is reported by the caller

    source = path.read_text()
    head = source.split("#Load CIFAR-10.")[0]
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    for depth in (21, 6):
        saved_argv, saved_path = sys.argv, list(sys.path)
        sys.argv = [str(path), "--depth", str(depth), "--gap", "yes", "--fix", "yes"]
        sys.path.insert(0, str(path.parent))
        try:
            ns: dict[str, object] = {"__name__": "arora_cntk"}
            exec(compile(head, str(path), "exec"), ns)
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
        xx, xz = ns["xx"], ns["xz"]
        images = cp.asarray(x.numpy()).reshape(n, 3, 1024)

        def theirs() -> None:
            diag = [xx(images[i]) for i in range(n)]
            for i in range(n):
                for j in range(n):
                    xz(images[i], images[j], diag[i][0], diag[j][0], diag[i][1], diag[j][1])
            cp.cuda.Device().synchronize()

        arch = get("cnn", depth=depth - 1, readout="gap", b_std=None)
        xd = x.to(device)
        their_s = _best(theirs, device, rounds=1)
        our_s = _best(lambda: arch.kernel(xd, dtype=torch.float32), device, rounds=3)
        rows.append(Row(f"Arora et al. CNTK, GAP depth {depth}, N={n}", n * n / their_s, "entries/s",
                        target="reference: 520 (d21), 2,150 (d6) on the H200"))
        rows.append(Row(f"ntkbench CNN-GAP depth {depth}, same inputs", n * n / our_s, "entries/s",
                        target=f"{their_s / our_s:.1f}× the reference (target ≥ 20× at d21)"))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| figure | value | ceiling (bound) | fraction | target |", "|---|---|---|---|---|"]
    for r in rows:
        ceiling = f"{r.ceiling:.4g} ({r.bound})" if r.ceiling else "–"
        fraction = f"{r.fraction:.1%}" if r.fraction is not None else "–"
        lines.append(f"| {r.figure} | {r.value:.4g} {r.unit} | {ceiling} | {fraction} | {r.target or '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the issue's target sizes (one large GPU)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_report")
    p.add_argument("--arora", type=Path, default=None, help="path to Arora et al.'s CNTK.py (needs CuPy)")
    p.add_argument("--arora-n", type=int, default=16, help="images for the Arora comparison (N² pairs)")
    a = p.parse_args(argv)
    if a.arora is not None and not a.arora.is_file():
        print(f"gpu_report: --arora {a.arora} is not a file; expected the path to Arora et al.'s CNTK.py", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    a.out.mkdir(parents=True, exist_ok=True)
    ceil = ceilings(device, a.full)
    rows = [Row(f"ceiling: {key.replace('_', ' ')}", value, "", H200[key], "the issue's H200 figure")
            for key, value in ceil.items()]
    rows += rows_from_suite(run_suite(a.out, a.full, device.type == "cuda"), ceil)
    if a.arora is not None:
        try:
            rows += arora_rows(a.arora, device, a.arora_n)
        except ImportError as e:
            print(f"gpu_report: the Arora et al. comparison needs CuPy: {e}", file=sys.stderr)
    report = table(rows)
    print(f"\n## ntkbench on {name} ({'full' if a.full else 'small'} sizes, torch {torch.__version__})\n")
    print(report)
    (a.out / "report.json").write_text(json.dumps({"device": name, "full": a.full, "ceilings": ceil,
                                                   "rows": [r.__dict__ | {"fraction": r.fraction} for r in rows]},
                                                  indent=1, default=str))
    (a.out / "report.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
