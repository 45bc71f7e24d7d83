"""``ntkbench plan``: the entry count is the formula's, sizes of the ImageNet tasks need no files,
a network without a closed form says so, and bad settings are one line with exit 2."""

import pytest
import torch

from ntkbench.cli import main
from ntkbench.plan import plan, task_sizes

CPU = torch.device("cpu")


def test_digits_plan_counts_the_upper_triangle_and_the_test_rows():
    lines = plan("digits", "mlp", {"task.n_train": 100, "task.n_test": 40, "arch.depth": 1}, torch.float64, CPU, 0.01)
    text = "\n".join(lines)
    assert "n_train 100, n_test 40" in text
    assert f"= {100 * 101 / 2 + 40 * 100:.3g}" in text  # 5050 + 4000
    assert "kernel: exact" in text and "device-hours" in text and "GPU-hours" in text
    assert "solver: eigh" in text


def test_imagenet_sizes_are_known_without_files():
    full = task_sizes("imagenet64", {})
    assert (full.n_train, full.n_test, full.input_shape, full.num_classes) == (1_281_167, 50_000, (3, 64, 64), 1000)
    ten = task_sizes("imagenet64-10", {"n_per_class": 100})
    assert (ten.n_train, ten.n_test) == (1000, 500)


def test_a_network_without_a_closed_form_is_not_timed(capsys):
    assert main(["plan", "--task", "imagenet64-10", "--arch", "wrn", "--set", "arch.depth=10", "--set",
                 "arch.widen=1", "--set", "arch.norm=batchnorm"]) == 0
    out = capsys.readouterr().out
    assert "kernel: monte_carlo" in out and "not estimated here" in out and "solver:" in out


@pytest.mark.parametrize("setting, message", [("nn.lr=0.1", "plan takes task.* and arch.* settings"),
                                              ("arch.depth=0", "arch.depth")])
def test_bad_settings_are_one_line(capsys, setting, message):
    assert main(["plan", "--task", "digits", "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
