"""The architecture language: one description gives the finite network and its exact
infinite-width NNGP and NTK kernels.

>>> from ntkbench.arch import serial, Dense, ReLU
>>> arch = serial(Dense(512, w_std=1.4, b_std=0.1), ReLU(), Dense(1, w_std=1.4, b_std=0.1))
>>> net = arch.module((20,), num_outputs=10)       # torch.nn.Module, NTK parameterization
>>> k = arch.kernel(x_train)                        # k.nngp, k.ntk: (n, n) float64
>>> run = tiled_kernel(arch, x_train, out="ckpt/")  # float32 tiles into .npy files, resumable
"""

from ntkbench.arch.kernel import Kernel
from ntkbench.arch.layers import AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, Layer, ReLU
from ntkbench.arch.named import ARCHS, get, list_archs, register_arch, resolve
from ntkbench.arch.serial import Network, Serial, serial
from ntkbench.arch.tiled import TiledKernel, tiled_kernel

__all__ = [
    "ARCHS", "AvgPool", "Conv", "Dense", "Erf", "Flatten", "GlobalAvgPool", "Kernel", "Layer", "Network",
    "ReLU", "Serial", "TiledKernel", "get", "list_archs", "register_arch", "resolve", "serial", "tiled_kernel",
]
