"""Contract tests run on every registered task, plus checks of stratification, label noise,
the teacher's labels and the error messages."""

from __future__ import annotations

import inspect
from functools import lru_cache

import pytest
import torch

from ntkbench import arch as archs
from ntkbench import tasks
from ntkbench.registry import UnknownNameError
from ntkbench.tasks.base import standardize
from ntkbench.tasks.synthetic import TEACHER_SEED_OFFSET

# Tasks that need no files; those reading a data root are tested on fixtures in their own files.
ALL = [n for n in tasks.list_tasks() if "data_root" not in inspect.signature(tasks.TASKS.get(n)).parameters]


@lru_cache(maxsize=None)
def default_task(name: str) -> tasks.Task:
    return tasks.get(name)


def test_known_tasks_are_registered() -> None:
    assert {"digits", "mnist5k", "breast-cancer", "wine", "iris", "teacher"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_shapes_dtypes_and_params(name: str) -> None:
    task = default_task(name)
    assert task.name == name and task.num_classes >= 2
    assert len(task.input_shape) in (1, 3)
    for split, (x, y) in (("train", task.train), ("test", task.test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), *task.input_shape)
        assert torch.isfinite(x).all()
        assert 0 <= int(y.min()) and int(y.max()) < task.num_classes
        assert task.params[f"n_{split}"] == len(y)
    assert {"seed", "label_noise", "n_noisy", "standardize"} <= set(task.params)


@pytest.mark.parametrize("name", ALL)
def test_train_split_is_standardized(name: str) -> None:
    x = default_task(name).train[0].double()
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    mean, std = x.mean(dims), x.std(dims, correction=0)
    constant = x.abs().amax(dims) == 0  # a constant feature becomes 0 (its std counts as 1)
    assert (mean.abs() < 1e-4).all()
    assert (((std - 1).abs() < 1e-4) | constant).all()


@pytest.mark.parametrize("name", ALL)
def test_subsets_are_sized_and_deterministic(name: str) -> None:
    a = tasks.get(name, n_train=40, n_test=20, seed=0)
    b = tasks.get(name, n_train=40, n_test=20, seed=0)
    c = tasks.get(name, n_train=40, n_test=20, seed=1)
    assert len(a.train[1]) == 40 and len(a.test[1]) == 20
    assert all(torch.equal(s, t) for s, t in zip((*a.train, *a.test), (*b.train, *b.test)))
    assert not torch.equal(a.train[0], c.train[0])
    assert not torch.equal(a.test[0], c.test[0])


def test_subset_is_stratified() -> None:
    task = tasks.get("digits", n_train=50, n_test=20, seed=3)
    assert torch.bincount(task.train[1], minlength=10).tolist() == [5] * 10
    assert torch.bincount(task.test[1], minlength=10).tolist() == [2] * 10
    iris = tasks.get("iris", n_train=31)  # 40 per class: 10, 10, 10 and one by the largest remainder
    assert sorted(torch.bincount(iris.train[1]).tolist()) == [10, 10, 11]


@pytest.mark.parametrize("name", ALL)
def test_label_noise_resamples_exactly_round_p_n_training_labels(name: str) -> None:
    p, n = 0.45, 100
    clean = tasks.get(name, n_train=n, n_test=20, seed=3)
    noisy = tasks.get(name, n_train=n, n_test=20, seed=3, label_noise=p)
    k = round(p * n)
    assert noisy.params["n_noisy"] == k and noisy.params["label_noise"] == p
    assert torch.equal(clean.train[0], noisy.train[0])
    assert all(torch.equal(s, t) for s, t in zip(clean.test, noisy.test))
    changed = int((clean.train[1] != noisy.train[1]).sum())
    assert 0.6 * k * (1 - 1 / noisy.num_classes) <= changed <= k


def test_label_noise_extremes() -> None:
    clean = tasks.get("digits", n_train=100)
    assert torch.equal(tasks.get("digits", n_train=100, label_noise=0).train[1], clean.train[1])
    assert tasks.get("digits", n_train=100, label_noise=1).params["n_noisy"] == 100


@pytest.mark.parametrize("arch, arch_options", [("mlp", {"width": 64}), ("cnn", {"channels": 8})])
def test_teacher_labels_are_the_rebuilt_teachers_argmax(arch: str, arch_options: dict) -> None:
    width = next(iter(arch_options.values()))
    task = tasks.get("teacher", arch=arch, width=width, num_classes=4, n_train=200, n_test=100, seed=5)
    generator = torch.Generator().manual_seed(TEACHER_SEED_OFFSET + 5)
    net = archs.get(arch, **arch_options).module((1, 8, 8), 4, "ntk", generator)
    x_train, x_test, _ = standardize(torch.randn(200, 1, 8, 8, generator=generator),
                                     torch.randn(100, 1, 8, 8, generator=generator))
    assert torch.equal(x_train, task.train[0]) and torch.equal(x_test, task.test[0])
    with torch.no_grad():
        f_train, f_test = net(x_train), net(x_test)
    center = f_train.mean(0)
    assert torch.equal((f_train - center).argmax(1), task.train[1])
    assert torch.equal((f_test - center).argmax(1), task.test[1])
    assert torch.bincount(task.train[1], minlength=4).min() > 0


def test_teacher_vector_inputs_and_defaults() -> None:
    task = tasks.get("teacher", input_shape=[20], num_classes=3, n_train=30, n_test=10)
    assert task.input_shape == (20,) and task.train[0].shape == (30, 20)
    assert task.params["input_shape"] == (20,) and task.params["arch"] == "mlp"
    assert default_task("teacher").params["n_train"] == 1000


@pytest.mark.parametrize("call, error, match", [
    (lambda: tasks.get("cifar"), UnknownNameError, r"unknown task 'cifar'.*Known tasks: .*digits.*teacher"),
    (lambda: tasks.get("digit"), UnknownNameError, r"did you mean 'digits'"),
    (lambda: tasks.get("digits", width=3), ValueError,
     r"unknown option\(s\) 'width' for task 'digits'\. Valid options: n_train, n_test, seed, label_noise, zca$"),
    (lambda: tasks.get("teacher", depth=3), ValueError, r"Valid options: .*label_noise, zca, arch, width"),
    (lambda: tasks.get("digits", n_train=5000), ValueError, r"n_train=5000 is more than task 'digits' has: 1437 train"),
    (lambda: tasks.get("iris", n_test=31), ValueError, r"n_test=31 is more than task 'iris' has: 30 test"),
    (lambda: tasks.get("digits", label_noise=1.5), ValueError, r"label_noise must be a number in \[0, 1\], got 1.5"),
    (lambda: tasks.get("digits", label_noise="0.1"), ValueError, r"label_noise must be a number"),
    (lambda: tasks.get("digits", n_train=0), ValueError, r"n_train must be a positive int, got 0"),
    (lambda: tasks.get("digits", n_train=2.5), ValueError, r"n_train must be a positive int, got 2.5"),
    (lambda: tasks.get("digits", n_test=True), ValueError, r"n_test must be a positive int, got True"),
    (lambda: tasks.get("digits", seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
    (lambda: tasks.get("teacher", width=0), ValueError, r"width must be a positive int"),
    (lambda: tasks.get("teacher", num_classes=1), ValueError, r"num_classes must be an int >= 2"),
    (lambda: tasks.get("teacher", input_shape=5), ValueError, r"input_shape must be a tuple"),
    (lambda: tasks.get("teacher", arch="vit"), UnknownNameError, r"unknown architecture 'vit'"),
])
def test_bad_input_raises_a_clear_error(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_zca_whitening_decorrelates_the_training_inputs():
    task = tasks.get("digits", n_train=400, zca=1e-6)
    x = task.train[0].double().flatten(1)
    cov = (x - x.mean(0)).T @ (x - x.mean(0)) / len(x)
    # Pixels that never vary stay 0; every other direction is whitened to unit variance up to the
    # regularization (1e-6 of the mean eigenvalue) and float32 rounding.
    nonzero = torch.linalg.eigvalsh(cov)
    nonzero = nonzero[nonzero > 1e-3]
    assert torch.allclose(nonzero, torch.ones_like(nonzero), atol=1e-2)
    assert "ZCA whitening with strength 1e-06" in task.params["standardize"]
    with pytest.raises(ValueError, match="zca must be a regularization strength > 0"):
        tasks.get("digits", zca=-1)


def test_teacher_applies_zca_too():
    task = tasks.get("teacher", n_train=300, n_test=10, input_shape=[8], zca=1e-6)
    assert "ZCA whitening" in task.params["standardize"]


def test_a_student_with_the_runs_seed_does_not_start_at_the_teacher() -> None:
    # The teacher and a student of the same architecture and seed must have different weights,
    # or every linearization would start at the target. At init the student agrees with the
    # teacher at about chance (1/10; measured 0.06-0.11 over seeds 0-2); with shared weights it
    # agreed 0.36 of the time.
    from ntkbench import methods
    from ntkbench.methods.training import init_network, network_forward

    task = tasks.get("teacher", width=64, n_train=200, n_test=500, seed=0)
    net, params = init_network(methods.get("nn", archs.get("mlp", width=64), seed=0), task.train[0], 10)
    agreement = (network_forward(net)(params, task.test[0]).argmax(1) == task.test[1]).float().mean()
    assert agreement < 0.2
