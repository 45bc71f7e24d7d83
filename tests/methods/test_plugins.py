"""Methods from other packages, through the real ``ntkbench.methods`` entry-point group.

A throwaway distribution (a module plus its ``.dist-info`` with ``entry_points.txt``) is written
to a temporary folder; nothing is installed into the venv. The loader runs in subprocesses with
that folder on ``PYTHONPATH``, so this process's method registry stays as it was.
"""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
from dataclasses import dataclass

import torch

from ntkbench.methods.base import check_inputs


@dataclass
class PrototypePredictor:
    means: torch.Tensor

    def predict(self, x):
        if x.shape[1:] != self.means.shape[1:]:
            raise ValueError(f"x has per-sample shape {tuple(x.shape[1:])}, fitted on {tuple(self.means.shape[1:])}")
        return -torch.cdist(x.flatten(1), self.means.flatten(1)).square()


@dataclass
class Prototype:
    """Nearest class mean; ignores the architecture."""

    arch: object
    seed: int = 0

    def fit(self, x, labels, num_classes, ctx=None):
        check_inputs(x, labels, num_classes)
        return PrototypePredictor(torch.stack([x[labels == c].mean(0) for c in range(num_classes)]))
'''


def write_distribution(root: Path, name: str, entry_points: dict[str, str], module: str | None = None) -> None:
    """A minimal installed distribution ``name`` 0.1 on ``root``, as pip would leave it."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ntkbench.methods]\n{lines}")
    if module is not None:
        (root / f"{name}.py").write_text(module)


def python(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def plugin_root(tmp_path, monkeypatch) -> Path:
    write_distribution(tmp_path, "ntkbench_plugin_demo", {"demo-prototype": "ntkbench_plugin_demo:Prototype"}, PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_fake_distribution_is_visible_to_importlib_metadata(plugin_root):
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="ntkbench.methods")}
    assert found.get("demo-prototype") == "ntkbench_plugin_demo:Prototype"


def test_list_methods_shows_plugins_with_their_origin(plugin_root):
    result = python(plugin_root, "-m", "ntkbench.cli", "list", "methods")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "demo-prototype  (plugin: ntkbench_plugin_demo:Prototype)" in lines
    assert "nn" in lines  # built-ins are listed bare


def test_plugin_method_fits_and_predicts(plugin_root):
    code = textwrap.dedent('''
        import torch
        from ntkbench import arch, methods, tasks
        task = tasks.get("iris", n_train=30, n_test=15)
        predictor = methods.get("demo-prototype", arch.get("mlp"), seed=0).fit(*task.train, task.num_classes)
        scores = predictor.predict(task.test[0])
        assert scores.shape == (15, 3), scores.shape
        print("accuracy", float((scores.argmax(1) == task.test[1]).float().mean()))
    ''')
    result = python(plugin_root, "-c", code)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) > 0.5  # nearest class mean on iris: well above chance (1/3)


def test_plugin_passes_the_contract_tests_for_free(plugin_root):
    contract = Path(__file__).with_name("test_contract.py")
    result = python(plugin_root, "-m", "pytest", str(contract), "-q", "-p", "no:cacheprovider", "-k", "demo-prototype")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "deselected" in result.stdout


def test_broken_plugin_warns_once_and_listing_still_works(plugin_root):
    write_distribution(plugin_root, "ntkbench_plugin_broken", {"demo-broken": "ntkbench_plugin_missing:Nope"})
    result = python(plugin_root, "-m", "ntkbench.cli", "list", "methods")
    assert result.returncode == 0, result.stderr
    assert "demo-prototype  (plugin: ntkbench_plugin_demo:Prototype)" in result.stdout.splitlines()
    assert "demo-broken" not in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "demo-broken" in line]
    assert len(warnings) == 1, result.stderr
    assert "ntkbench_plugin_missing:Nope" in warnings[0] and "ModuleNotFoundError" in warnings[0]


def test_plugin_named_like_a_builtin_is_a_duplicate_error(tmp_path):
    write_distribution(tmp_path, "ntkbench_plugin_clash", {"nn": "ntkbench_plugin_clash:Prototype"}, PLUGIN)
    result = python(tmp_path, "-c", "import ntkbench.methods")
    assert result.returncode != 0
    assert "method 'nn' is already registered" in result.stderr
