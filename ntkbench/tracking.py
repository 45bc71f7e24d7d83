"""MLflow tracking, the only module that imports MLflow (lazily, so methods never need it).

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
the working directory (MLflow 3's own default). One experiment per task; one run per
(method, arch, seed, n_train).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import ntkbench

if TYPE_CHECKING:
    import pandas

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def environment_tags(device: torch.device) -> dict[str, str]:
    """ntkbench version, git commit, device name, torch version and hostname."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "ntkbench_version": ntkbench.__version__,
        "git_commit": git_commit(),
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "hostname": platform.node(),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo on Linux, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else (platform.processor() or platform.machine())


def git_commit() -> str:
    root = Path(ntkbench.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class Tracker:
    """Opens MLflow runs; each run ends FINISHED, FAILED (error in a tag) or KILLED (Ctrl-C)."""

    def __init__(self, uri: str | None = None) -> None:
        import mlflow

        self.mlflow = mlflow
        self.uri = resolve_uri(uri)
        mlflow.set_tracking_uri(self.uri)

    @contextmanager
    def run(self, experiment: str, run_name: str, params: dict[str, object], tags: dict[str, str],
            config: dict[str, object]) -> Iterator[Run]:
        self.mlflow.set_experiment(experiment)
        active = self.mlflow.start_run(run_name=run_name, tags=tags)
        run = Run(self.mlflow, active.info.run_id)
        try:
            self.mlflow.log_params({k: _param(v) for k, v in params.items()})
            self.mlflow.log_dict(config, "config.json")
            yield run
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM through the CLI
            self.mlflow.set_tag("error", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            self.mlflow.end_run(status="KILLED")
            raise
        except Exception as e:
            self.mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:5000])
            self.mlflow.end_run(status="FAILED")
            raise
        self.mlflow.end_run(status="FINISHED")


class Run:
    """Logging into one open MLflow run."""

    def __init__(self, mlflow, run_id: str) -> None:
        self.mlflow, self.run_id = mlflow, run_id

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.mlflow.log_metric(key, value, step=step)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics(metrics)

    def log_param(self, key: str, value: object) -> None:
        self.mlflow.log_param(key, _param(value))

    def log_dict(self, data: object, file_name: str) -> None:
        self.mlflow.log_dict(data, file_name)


def _param(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def runs_frame(uri: str | None, run_ids: list[str] | None = None) -> "pandas.DataFrame":
    """The runs of the store ``uri`` as MLflow's pandas frame (``run_id``, ``status``,
    ``end_time``, ``params.*``, ``metrics.*``, ``tags.*``), across all experiments.

    Without ``run_ids``: every FINISHED run. With ``run_ids``: exactly those runs, whatever their
    status, in no particular order; an id that names no run raises a ``ValueError`` naming it.
    A local store that does not exist yet (an SQLite file, a folder) is read as empty and is
    not created.
    """
    import pandas as pd

    resolved = resolve_uri(uri)
    missing = _missing_local_store(resolved)
    if missing and not run_ids:
        return pd.DataFrame()
    if missing:
        raise ValueError(f"no such run(s) {', '.join(run_ids)}: the store {resolved} does not exist")
    if run_ids is None:
        frame = _search(resolved, "attributes.status = 'FINISHED'")
    else:
        bad = [r for r in run_ids if not r or not all(c.isalnum() or c in "-_" for c in r)]
        wanted = [r for r in dict.fromkeys(run_ids) if r not in bad]
        chunks = [wanted[i:i + 100] for i in range(0, len(wanted), 100)]
        frames = [_search(resolved, "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in chunk) + ")")
                  for chunk in chunks]
        frames = [f for f in frames if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])
        unknown = bad + [r for r in wanted if r not in set(frame["run_id"])]
        if unknown:
            raise ValueError(f"no such run(s) in {resolved}: {', '.join(map(repr, unknown))}")
    return frame.reset_index(drop=True)


def _search(uri: str, filter_string: str):
    """``mlflow.search_runs`` on ``uri``; MLflow's global tracking URI and the
    ``MLFLOW_TRACKING_URI`` variable are left as they were."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    old_global, old_env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(search_all_experiments=True, output_format="pandas", filter_string=filter_string)
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _missing_local_store(uri: str) -> bool:
    """True for an SQLite file or a local folder store that does not exist."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        return path not in ("", ":memory:") and not Path(path).exists()
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return not Path(unquote(urlparse(uri).path)).exists()
    if "://" not in uri and uri not in ("databricks",):
        return not Path(uri).exists()
    return False
