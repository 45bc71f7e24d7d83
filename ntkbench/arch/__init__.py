"""The architecture language: one description gives the finite network and its infinite-width
NNGP and NTK kernels (exact, by quadrature, or by Monte Carlo for any network).

>>> from ntkbench.arch import serial, residual, Conv, Dense, ReLU, GlobalAvgPool
>>> block = residual(serial(ReLU(), Conv(64, 3), ReLU(), Conv(64, 3)))
>>> arch = serial(Conv(64, 3), block, GlobalAvgPool(), Dense(1))
>>> net = arch.module((3, 32, 32), num_outputs=10)    # torch.nn.Module, NTK parameterization
>>> k = arch.kernel(x_train)                          # k.nngp, k.ntk: (n, n) float64
>>> run = tiled_kernel(arch, x_train, out="ckpt/")    # float32 tiles into .npy files, resumable
"""

from ntkbench.arch.activations import ABReLU, Abs, Activation, Elementwise, Erf, Gelu, LeakyReLU, ReLU, Sin, Tanh
from ntkbench.arch.combinators import FanInConcat, FanInSum, FanOut, Identity, Parallel, Residual, parallel, residual
from ntkbench.arch.kernel import Kernel
from ntkbench.arch.layers import Conv, Cost, Dense, Dropout, Layer
from ntkbench.arch.named import ARCHS, get, list_archs, register_arch, resolve
from ntkbench.arch.normalization import BatchNorm, LayerNorm
from ntkbench.arch.pooling import AvgPool, Flatten, GlobalAvgPool, MaxPool
from ntkbench.arch.serial import Network, Serial, serial
from ntkbench.arch.tiled import TiledKernel, tiled_kernel

__all__ = [
    "ABReLU", "ARCHS", "Abs", "Activation", "AvgPool", "BatchNorm", "Conv", "Cost", "Dense", "Dropout", "Elementwise", "Erf",
    "FanInConcat", "FanInSum", "FanOut", "Flatten", "Gelu", "GlobalAvgPool", "Identity", "Kernel", "Layer",
    "LayerNorm", "LeakyReLU", "MaxPool", "Network", "Parallel", "ReLU", "Residual", "Serial", "Sin", "Tanh",
    "TiledKernel", "get", "list_archs", "parallel", "register_arch", "residual", "resolve", "serial", "tiled_kernel",
]
