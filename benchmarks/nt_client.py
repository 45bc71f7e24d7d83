"""Drive neural-tangents (in `.venv-nt`) from ntkbench's environment, through files."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".venv-nt" / "bin" / "python"


def nt_available() -> bool:
    return NT_PYTHON.exists()


def nt_kernel(spec: list, x1: np.ndarray, x2: np.ndarray | None = None, rounds: int = 1,
              batch_size: int = 0) -> dict[str, np.ndarray]:
    """neural-tangents' float64 stax NNGP and NTK for a layer list, with per-round timings."""
    with tempfile.TemporaryDirectory() as tmp:
        request, out = Path(tmp) / "request.npz", Path(tmp) / "out.npz"
        arrays = {"x2": x2} if x2 is not None else {}
        np.savez(request, spec=np.frombuffer(json.dumps(spec).encode(), np.uint8), x1=x1,
                 rounds=rounds, batch_size=batch_size, **arrays)
        subprocess.run([str(NT_PYTHON), str(ROOT / "benchmarks" / "nt_bridge.py"), str(request), str(out)],
                       check=True, capture_output=True)
        with np.load(out) as result:
            return {key: result[key] for key in result.files}
