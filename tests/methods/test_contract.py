"""The contract every registered method keeps, built-in or plugin: parametrized over
``METHODS.list()``, so a new method is tested without writing a test."""

import dataclasses

import pytest
import torch

from ntkbench import arch, methods, tasks
from ntkbench.methods import METHODS

TASK = tasks.get("iris", n_train=30, n_test=15)  # 3 classes, inputs (4,)
ARCH = arch.get("mlp", depth=1, width=16)
# No time limit here: a wall-clock bound depends on the machine and its load. Speed is
# benchmarked by `make perf`; a hang is caught by the time limit .ci/run puts on `make test`,
# and pytest's --durations (in `make test`) shows a method that became slow.


def build(name: str, seed: int = 0):
    """The method with its defaults, but 2 epochs where it trains."""
    fields = {f.name for f in dataclasses.fields(METHODS.get(name))}
    return methods.get(name, ARCH, seed=seed, **({"epochs": 2} if "epochs" in fields else {}))


@pytest.fixture(params=METHODS.list())
def name(request) -> str:
    return request.param


def test_predict_gives_finite_float_scores_per_class(name):
    x, labels = TASK.train
    x_test, _ = TASK.test
    scores = build(name).fit(x, labels, TASK.num_classes).predict(x_test)
    assert isinstance(scores, torch.Tensor) and scores.is_floating_point()
    assert scores.shape == (len(x_test), TASK.num_classes)
    assert torch.isfinite(scores).all()


def test_same_seed_gives_identical_predictions(name):
    x, labels = TASK.train
    x_test, _ = TASK.test
    first, second = (build(name, seed=3).fit(x, labels, TASK.num_classes).predict(x_test) for _ in range(2))
    assert torch.equal(first, second)


def _with_nan(x):
    x = x.clone()
    x[2, 1] = float("nan")
    return x


@pytest.mark.parametrize("case, match", [
    (lambda x, y: (_with_nan(x), y, 3), "NaN"),
    (lambda x, y: (x, y[:-1], 3), r"labels.*\(29,\)"),  # labels shape does not match x
    (lambda x, y: (x, y, 2), r"labels.*\[0, 2\)"),  # labels 0..2 do not fit 2 classes
    (lambda x, y: (x, torch.zeros_like(y), 1), "num_classes"),
], ids=["nan-input", "labels-shape", "labels-out-of-range", "one-class"])
def test_fit_rejects_bad_input(name, case, match):
    x, labels = TASK.train
    with pytest.raises(ValueError, match=match):
        build(name).fit(*case(x, labels))


@pytest.mark.parametrize("reshape", [lambda x: x[:, :3], lambda x: x.reshape(len(x), 1, 2, 2)],
                         ids=["fewer-features", "image-shaped"])
def test_predict_rejects_wrong_per_sample_shape(name, reshape):
    x, labels = TASK.train
    x_test, _ = TASK.test
    predictor = build(name).fit(x, labels, TASK.num_classes)
    with pytest.raises(ValueError, match="per-sample shape"):
        predictor.predict(reshape(x_test))
