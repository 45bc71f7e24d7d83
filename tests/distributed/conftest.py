"""One real local Ray cluster for the session's distributed tests: ``ray.init(num_cpus=2,
num_gpus=2)``, always a new one (``address="local"``: not a cluster that ``ray start`` left
running on the machine). Its GPUs are logical: Ray schedules by the count (and sets each task's
``CUDA_VISIBLE_DEVICES``) without hardware.

The workers import this checkout's ntkbench, whatever the venv has installed, and the method
plugins of ``plugins/`` (entry points, as a ``pip install`` would leave them): ``PYTHONPATH``
in the job's ``runtime_env``. A test that runs a plugin's method registers it in this process
too (:func:`plugin_method`)."""

import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
"""The checkout whose ntkbench the workers import."""
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the distributed tests need Ray: pip install 'ntkbench[ray]'")
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(PLUGINS)])}})
    # Both workers import torch, ntkbench and MLflow (seconds each) while the first test's driver
    # side works; a lambda, as conftest is no module the workers can import by name.
    warm = ray.remote(num_cpus=1)(lambda: [importlib.import_module(m) for m in ("ntkbench.runner", "mlflow")] and None)
    warming = [warm.remote() for _ in range(2)]  # noqa: F841  (not awaited)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def plugin_method(monkeypatch):
    """``register(name, module, cls)``: the plugin method of ``plugins/`` registered in this
    process for the test (the workers load it through its entry point)."""
    from ntkbench.methods import METHODS

    def register(name: str, module: str, cls: str) -> None:
        monkeypatch.syspath_prepend(str(PLUGINS))
        __import__(module)
        monkeypatch.setitem(METHODS._items, name, getattr(sys.modules[module], cls))

    return register
