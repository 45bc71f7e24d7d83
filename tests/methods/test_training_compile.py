"""``compile=True`` (torch.compile of the training forward, inductor on the CPU) gives the eager
loss trajectory for ``nn`` and ``taylor`` (whose forward is a ``torch.func.jvp``).

Kept apart from test_training_options.py because inductor compiles C++ kernels: with a cold
cache (~/tmp/torchinductor_$USER) this file takes about 60 s on 2 busy cores, warm about 15 s.
"""

import warnings

import pytest
import torch

from test_training_options import losses


@pytest.mark.parametrize("name", ["nn", "taylor"])
def test_compiled_forward_gives_the_eager_loss_trajectory(name):
    # Inductor fuses and reorders float32 arithmetic (~1e-7 per op); we allow 1e-4 relative.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inductor's own notices on CPU
        compiled = losses(name, compile=True)
    torch.testing.assert_close(compiled, losses(name), rtol=1e-4, atol=0)
