"""Drive neural-tangents (in `.venv-nt`) from ntkbench's environment, through files."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".venv-nt" / "bin" / "python"


class NTError(RuntimeError):
    """neural-tangents refused the layer list or failed; the message is its last stderr line."""


def nt_available() -> bool:
    return NT_PYTHON.exists()


def nt_kernel(spec: list, x1: np.ndarray, x2: np.ndarray | None = None, rounds: int = 1,
              batch_size: int = 0) -> dict[str, np.ndarray]:
    """neural-tangents' float64 stax NNGP and NTK for a layer list, with per-round timings.

    The layer list means what benchmarks/nt_bridge.py's docstring says."""
    with tempfile.TemporaryDirectory() as tmp:
        request, out = Path(tmp) / "request.npz", Path(tmp) / "out.npz"
        arrays = {"x2": x2} if x2 is not None else {}
        np.savez(request, spec=np.frombuffer(json.dumps(spec).encode(), np.uint8), x1=x1,
                 rounds=rounds, batch_size=batch_size, **arrays)
        done = subprocess.run([str(NT_PYTHON), str(ROOT / "benchmarks" / "nt_bridge.py"), str(request), str(out)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no message"]
            raise NTError(lines[-1])
        with np.load(out) as result:
            return {key: result[key] for key in result.files}
