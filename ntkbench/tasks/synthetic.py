"""Synthetic tasks whose labels a registered architecture can realize exactly."""

from __future__ import annotations

import inspect

import torch

from ntkbench import arch as archs
from ntkbench.tasks.base import Common, Task, check_int, finish, preprocess, register_task

DEFAULT_SIZE = 1000


TEACHER_SEED_OFFSET = 1_000_003


@register_task("teacher")
def teacher(common: Common, arch: str = "mlp", width: int = 512, num_classes: int = 10,
            input_shape: tuple[int, ...] = (1, 8, 8)) -> Task:
    """Labels from a random teacher network of the registered architecture ``arch``.

    The recipe, all from one ``torch.Generator().manual_seed(TEACHER_SEED_OFFSET + seed)`` (the
    offset keeps a student of the same architecture, initialized with the run's seed, from
    starting at the teacher's weights): first the teacher's
    weights (``archs.get(arch, width=width).module(input_shape, num_classes, "ntk", generator)``;
    ``width`` is passed as ``channels`` to architectures that take channels instead), then the
    training and the test inputs, standard normal of per-sample shape ``input_shape`` ((d,) for
    vectors, (C, H, W) for images). The inputs are standardized like every task's (per channel
    or feature, training statistics), and the label of x is
    ``argmax(f(x) - mean of f over the training inputs)``: centering the outputs balances the
    classes, and it is the same as shifting the readout bias, so the labels stay realizable.
    ``n_train`` and ``n_test`` default to 1,000 each.
    """
    width = check_int("width", width, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise ValueError(f"input_shape must be a tuple such as (d,) or (C, H, W), got {input_shape!r}")
    input_shape = tuple(check_int("input_shape", s, minimum=1) for s in input_shape)
    n_train = DEFAULT_SIZE if common.n_train is None else common.n_train
    n_test = DEFAULT_SIZE if common.n_test is None else common.n_test

    generator = torch.Generator().manual_seed(TEACHER_SEED_OFFSET + common.seed)
    network = _teacher_architecture(arch, width).module(input_shape, num_classes, "ntk", generator)
    x_train = torch.randn(n_train, *input_shape, generator=generator)
    x_test = torch.randn(n_test, *input_shape, generator=generator)
    x_train, x_test, how = preprocess(x_train, x_test, common)
    with torch.no_grad():
        f_train, f_test = network(x_train), network(x_test)
    center = f_train.mean(0)
    y_train, y_test = (f_train - center).argmax(1), (f_test - center).argmax(1)
    facts = {"standardize": how, "arch": arch, "width": width, "input_shape": input_shape,
             "source": "random teacher network (NTK parameterization), N(0, 1) inputs"}
    return finish("teacher", (x_train, y_train), (x_test, y_test), num_classes, common, facts)


def _teacher_architecture(name: str, width: int) -> archs.Serial:
    """The architecture ``name`` with ``width`` as its ``width`` or ``channels`` option."""
    options = inspect.signature(archs.ARCHS.get(name)).parameters
    key = next((k for k in ("width", "channels") if k in options), None)
    if key is None:
        raise ValueError(f"architecture {name!r} has neither a width nor a channels option for the teacher's width")
    return archs.get(name, **{key: width})
