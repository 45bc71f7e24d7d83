"""Where a run runs: the :class:`~ntkbench.record.Environment` of the device, and the user and
source tags MLflow's own ``start_run`` would add. No MLflow import."""

from __future__ import annotations

import getpass
import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path

import torch

import ntkbench
from ntkbench.record import Environment

HOST_TAG, PID_TAG, PID_START_TAG = "ntkbench_host", "ntkbench_pid", "ntkbench_pid_start"


def environment(device: torch.device) -> Environment:
    """ntkbench version, git commit, device type and name (the CPU or GPU model), torch version
    and hostname."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return Environment(device=device.type, device_name=name, torch_version=torch.__version__,
                       ntkbench_version=ntkbench.__version__, hostname=platform.node(), git_commit=git_commit())


def environment_tags(device: torch.device) -> dict[str, str]:
    """:func:`environment` as MLflow run tags, one per field."""
    return environment(device).to_json()


def process_tags() -> dict[str, str]:
    """Who writes a run: host, pid and the process's start time (a reused pid has another), so
    that ``ntkbench sync`` can tell whether the process of a RUNNING run is still alive."""
    import psutil

    return {HOST_TAG: platform.node(), PID_TAG: str(os.getpid()),
            PID_START_TAG: repr(psutil.Process().create_time())}


def process_alive(host: str, pid: str, started: str) -> bool | None:
    """Whether the process (``host``, ``pid``, start time) of :func:`process_tags` lives (a
    zombie, killed but not yet reaped by its parent, does not): None when it ran on another
    host, which this machine cannot tell."""
    import psutil

    if host != platform.node():
        return None
    try:
        process = psutil.Process(int(pid))
        return repr(process.create_time()) == started and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo on Linux, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else (platform.processor() or platform.machine())


@cache
def git_commit() -> str:
    """The commit of the ntkbench checkout (read once per process), or ``unknown``."""
    root = Path(ntkbench.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def source_tags() -> dict[str, str]:
    """The user and source tags MLflow's own ``start_run`` adds, computed without MLflow."""
    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):  # no login name, e.g. a container's numeric uid
        user = "unknown"
    source = sys.argv[0] if sys.argv and sys.argv[0] else "<console>"
    return {"mlflow.user": user, "mlflow.source.name": source, "mlflow.source.type": "LOCAL"}
