"""Bad input raises one ValueError that names the layer position, what came and what was expected."""

import pytest
import torch

from ntkbench.arch import Conv, Dense, Flatten, ReLU, get, serial
from ntkbench.registry import UnknownNameError


def test_dense_after_conv_without_flatten():
    arch = serial(Conv(4, 3), ReLU(), Dense(1))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense.*expects a vector input.*got shape \(4, 6, 6\).*Flatten"):
        arch.kernel(torch.randn(2, 1, 6, 6))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense"):
        arch.module((1, 6, 6), 3)


def test_bad_conv_sizes():
    with pytest.raises(ValueError, match=r"layer 1 \(Conv.*kernel_size must be a positive int, got 0"):
        serial(ReLU(), Conv(4, 0))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv.*stride must be a positive int, got 0"):
        serial(Conv(4, 3, stride=0))
    with pytest.raises(ValueError, match=r"layer 1 \(Conv.*expects an image input"):
        serial(Flatten(), Conv(4, 3)).shapes((1, 4, 4))


@pytest.mark.parametrize("layer, field", [(Dense(3, w_std=-1.0), "w_std"), (Conv(3, 3, b_std=-0.1), "b_std"),
                                          (Dense(3, w_std=float("nan")), "w_std")])
def test_negative_or_nan_std(layer, field):
    with pytest.raises(ValueError, match=rf"layer 1 .*{field} must be a finite number >= 0"):
        serial(ReLU(), layer)


def test_input_rank_mismatch():
    arch = serial(Conv(4, 3), ReLU(), Flatten(), Dense(1))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv.*expects an image input \(C, H, W\), got shape \(5,\)"):
        arch.kernel(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x1 must be a non-empty batch"):
        arch.kernel(torch.randn(2, 1, 5))


def test_input_size_mismatch():
    arch = serial(Dense(4), ReLU(), Dense(1))
    with pytest.raises(ValueError, match=r"same per-sample shape, got \(5,\) and \(6,\)"):
        arch.kernel(torch.randn(2, 5), torch.randn(3, 6))
    net = arch.module((5,), 2)
    with pytest.raises(ValueError, match=r"per-sample shape \(6,\), but the network was built for \(5,\)"):
        net(torch.randn(3, 6))


def test_nan_input():
    x = torch.randn(4, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x1 has NaN or inf in sample 2"):
        serial(Dense(4), ReLU(), Dense(1)).kernel(x)


def test_image_output_needs_readout():
    with pytest.raises(ValueError, match=r"output has shape \(4, 5, 5\)"):
        serial(Conv(4, 3), ReLU()).kernel(torch.randn(2, 1, 5, 5))


def test_unknown_architecture_lists_known_names():
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'mlpp'; did you mean 'mlp'\?.*cnn.*myrtle10"):
        get("mlpp")
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'widht' for architecture 'mlp'; did you mean 'width'\? Valid options: depth, width"):
        get("mlp", widht=3)
